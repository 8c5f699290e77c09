"""One process of 2-process ``jaxclust fit dec`` runs on loopback (run by tests/test_multihost.py), through
the command line's ``--coordinator`` flags. Arguments: PORT PROCESS_ID, then runs, each METHOD and WORKDIR
followed by its ``--set`` values and ``--``. The first run joins the job; the later ones run in the same job."""

import json
import sys
from pathlib import Path

import jax

port, process_id, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
jax.config.update("jax_num_cpu_devices", 2)

from jaxclust import cli  # noqa: E402  (imports no backend: the command line initializes the job first)

address = f"127.0.0.1:{port}"
join = ["--coordinator", address, "--num-processes", "2", "--process-id", str(process_id), "--coordinator-bind",
        address]
while rest:
  end = rest.index("--")
  method, workdir, settings, rest = rest[0], rest[1], rest[2:end], rest[end + 1:]
  assert cli.main(["fit", method, "--workdir", workdir, *[f"--set={s}" for s in settings], *join]) == 0
  join = []  # the job is up: later runs use it
  if process_id == 0:  # process 0 writes the results; the other may return before they are on disk
    summary = json.loads((Path(workdir) / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 4, summary
