"""One process of a 2-process ``jaxclust fit dec`` on loopback (run by tests/test_multihost.py), through the
command line's ``--coordinator`` flags; the remaining arguments are its ``--set`` values."""

import json
import sys
from pathlib import Path

import jax

port, process_id, workdir, settings = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
jax.config.update("jax_num_cpu_devices", 2)

from jaxclust import cli  # noqa: E402  (imports no backend: the command line initializes the job first)

address = f"127.0.0.1:{port}"
assert cli.main(["fit", "dec", "--workdir", workdir, *[f"--set={s}" for s in settings], "--coordinator", address,
                 "--num-processes", "2", "--process-id", str(process_id), "--coordinator-bind", address]) == 0
if process_id == 0:  # process 0 writes the results; the other may return before they are on disk
  summary = json.loads((Path(workdir) / "summary.json").read_text())
  assert summary["processes"] == 2 and summary["devices"] == 4, summary
