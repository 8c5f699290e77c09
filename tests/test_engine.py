"""What the engine guarantees every run, checked on DEC (the cheapest method): the NaN stop, the collapse
flag, the workdir lock, URL workdirs, a corrupt checkpoint named in one line, and the resume message."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxclust import cli, engine, parallel
from jaxclust import workdir as workdirs
from test_train import FAST, fast_config

ONE_DEVICE = parallel.make_mesh(1)


def test_a_diverging_run_stops_with_exit_code_3_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
  workdir = tmp_path / "run"
  rc = cli.main(["fit", "dec", "--dataset", "digits", "--workdir", str(workdir),
                 *[f"--set={s}" for s in FAST], "--set=cluster.learning_rate=1e30"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 3 and "Traceback" not in "\n".join(err)
  assert err[-1].startswith("jaxclust: error: stage cluster diverged at epoch 1: loss nan")
  # The cluster stage's first save (the k-means start) is the last good state; nothing was saved over it.
  last = workdir / "checkpoints" / "4"
  assert f"the last good checkpoint is {last} (kept)" in err[-1] and "learning rate" in err[-1]
  assert last.is_dir() and not (workdir / "checkpoints" / "5").exists()
  assert not (workdir / "summary.json").exists() and not (workdir / "lock.json").exists()


def test_a_collapsed_result_is_flagged(tmp_path):
  """The final check: cluster-size entropy below 0.1 or fewer than half of the clusters used."""

  class Collapsed:  # a method whose readout puts every row but one in cluster 0
    @staticmethod
    def readout(run, state):
      return engine.Readout(np.r_[np.zeros(99, np.int64), [1]])

  run = engine.Run(fast_config(), workdirs.path(tmp_path), ONE_DEVICE, k=10, n=100, shape=(4,), rows=100)
  summary = engine._finish(Collapsed, run, None, None, time.perf_counter())
  assert summary["collapsed"] and json.loads((tmp_path / "summary.json").read_text())["collapsed"]
  healthy = type("Healthy", (), {"readout": staticmethod(lambda run, state: engine.Readout(np.arange(100) % 10))})
  assert not engine._finish(healthy, run, None, None, time.perf_counter())["collapsed"]


def test_a_workdir_in_use_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
  workdir = tmp_path / "run"
  config = fast_config()
  config.pretrain.epochs, config.cluster.max_steps = 1, 10
  # Another process holds the workdir's lock, as a live `jaxclust fit` does.
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time\nfrom jaxclust import workdir\n"
      f"workdir.Lock(workdir.path({str(workdir)!r})).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=rf"{workdir} is in use by pid {holder.pid} on host"):
      engine.fit(config, workdir, log=lambda _: None, mesh=ONE_DEVICE)
    assert sorted(p.name for p in workdir.iterdir()) == [".lock.mutex", "lock.json"]  # nothing else was written
  finally:
    holder.kill()
    holder.wait()
  messages = []
  summary = engine.fit(config, workdir, log=messages.append, mesh=ONE_DEVICE)  # SIGKILL left the lock behind
  assert any(str(holder.pid) in m for m in messages) and 0 < summary["acc"] <= 1
  assert not (workdir / "lock.json").exists()


def test_a_url_workdir_stays_a_url(tmp_path, monkeypatch, capsys):
  """``gs://`` on a stand-in bucket (tests/fake_gcs.py): every file of the run, orbax's included, lands
  in the bucket; nothing local is named after the URL."""
  from fake_gcs import use_fake_gcs
  use_fake_gcs(tmp_path / "bucket", monkeypatch)
  monkeypatch.chdir(tmp_path)
  config = fast_config()
  config.pretrain.epochs, config.cluster.max_steps = 2, 20
  summary = engine.fit(config, "gs://b/run", log=lambda _: None, mesh=ONE_DEVICE)
  stored = tmp_path / "bucket" / "b" / "run"
  assert {"checkpoints", "pretrained_autoencoder", "summary.json", "labels.npy", "metrics.jsonl", "exemplars.png",
          "true_labels.npy", "config.json"} <= {p.name for p in stored.iterdir()}
  assert list((stored / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket"]
  from sklearn.datasets import load_digits
  x = (load_digits().data[:50] / 16.0).astype(np.float32)
  np.testing.assert_array_equal(engine.predict("gs://b/run", x).labels, np.load(stored / "labels.npy")[:50])
  assert cli.main(["eval", "--workdir", "gs://b/run"]) == 0
  assert f"ACC={summary['acc']:.4f}" in capsys.readouterr().out
  # A finished URL run is recognized as such: not trained again.
  assert engine.fit(config, "gs://b/run", log=lambda _: None, mesh=ONE_DEVICE) == summary


def test_a_corrupt_checkpoint_is_named_and_removing_it_resumes(tmp_path):
  config = fast_config()
  config.pretrain.epochs, config.cluster.max_steps = 2, 30
  reference = engine.fit(config, tmp_path / "reference", log=lambda _: None, mesh=ONE_DEVICE)
  workdir = tmp_path / "run"
  engine.fit(config, workdir, log=lambda _: None, mesh=ONE_DEVICE)
  (workdir / "summary.json").unlink()  # as if killed after its last save
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  latest = workdir / "checkpoints" / str(steps[-1])
  # A kill while orbax deleted an old checkpoint leaves it half deleted: that one is ignored.
  import shutil
  gone = min(set(range(1, steps[-1])) - set(steps))
  shutil.copytree(latest, workdir / "checkpoints" / str(gone))
  shutil.rmtree(workdir / "checkpoints" / str(gone) / "meta")
  (workdir / "checkpoints" / str(gone) / "_CHECKPOINT_METADATA").unlink()
  messages = []
  assert engine.fit(config, workdir, log=messages.append, mesh=ONE_DEVICE)["acc"] == reference["acc"]
  assert f"checkpoint {gone} is incomplete (a deletion cut short by the end of a run); ignored" in messages
  (workdir / "summary.json").unlink()
  for f in latest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "meta" not in str(f):
      f.write_bytes(b"corrupt")
  with pytest.raises(ValueError) as refused:
    engine.fit(config, workdir, log=lambda _: None, mesh=ONE_DEVICE)
  message = str(refused.value)
  assert "\n" not in message and message.startswith(f"checkpoint {latest} cannot be restored")
  assert f"remove that folder to resume from checkpoint {steps[-2]}" in message and "error.log" in message
  assert "Traceback" in (workdir / "error.log").read_text()
  shutil.rmtree(latest)
  messages = []
  resumed = engine.fit(config, workdir, log=messages.append, mesh=ONE_DEVICE)
  assert any(m.startswith(f"resuming from checkpoint {steps[-2]}: cluster,") for m in messages)
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), np.load(tmp_path / "reference" / "labels.npy"))
  assert resumed["acc"] == reference["acc"]


def test_a_second_fit_with_the_same_settings_compiles_nothing(tmp_path):
  # Optimizers are static arguments of the compiled steps: each fit used to make new ones, so every fit
  # compiled its programs again and kept them, and a process fitting many times ran out of memory maps
  # (~500 per DEC fit) until XLA's compiler crashed.
  compiles = []
  count = lambda event, secs, **_: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
  jax.monitoring.register_event_duration_secs_listener(count)
  config = fast_config()
  config.report, config.hidden = False, (48, 40)  # a network no other test trains: the first fit compiles
  try:
    engine.fit(config, tmp_path / "first", log=lambda _: None, mesh=ONE_DEVICE)
    first = len(compiles)
    config.seed = 1
    engine.fit(config, tmp_path / "second", log=lambda _: None, mesh=ONE_DEVICE)
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert first > 0 and len(compiles) == first, f"the second fit compiled {len(compiles) - first} programs"
