"""The run directory: paths and URLs, whole-file writes, the configuration check, the lock."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from fake_gcs import use_fake_gcs
from jaxclust import configs
from jaxclust import workdir as workdirs

HOST = socket.gethostname()


def test_local_paths_become_absolute_and_urls_stay_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdirs.path("run") == epath.Path(tmp_path / "run")
  assert str(workdirs.path("~/run")) == os.path.expanduser("~/run")
  for url in ("gs://bucket/run", "s3://bucket/run"):
    assert str(workdirs.path(url)) == url and str(workdirs.path(workdirs.path(url)) / "x") == url + "/x"
  # etils.epath (1.15) has no class for these: a clear refusal, not a KeyError or a local folder "memory:"
  for url in ("memory://run", "ram://run"):
    with pytest.raises(ValueError, match=r"etils.epath opens local paths and gs://"):
      workdirs.path(url)
  with pytest.raises(ValueError, match=r"looks like a URL that lost a '/'"):
    workdirs.path(pathlib.Path("gs://bucket/run"))  # "gs:/bucket/run"
  assert not os.listdir(tmp_path)


def test_files_are_written_whole_and_read_back(tmp_path):
  workdirs.write_json(tmp_path / "summary.json", {"acc": 0.5, "k": 10})
  assert workdirs.read_json(tmp_path / "summary.json") == {"acc": 0.5, "k": 10}
  workdirs.write_text(tmp_path / "summary.json", "{}")  # replaces
  assert workdirs.read_json(tmp_path / "summary.json") == {}
  labels = np.arange(7, dtype=np.int32)
  workdirs.save_npy(tmp_path / "labels.npy", labels)
  np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), labels)  # a plain .npy file
  assert workdirs.load_npy(tmp_path / "labels.npy").dtype == np.int32
  workdirs.save_npz(tmp_path / "stats.npz", mean=np.ones(3), std=np.zeros(3))
  assert {k: v.tolist() for k, v in workdirs.load_npz(tmp_path / "stats.npz").items()} == {
      "mean": [1.0] * 3, "std": [0.0] * 3}
  workdirs.append_line(tmp_path / "metrics.jsonl", '{"a": 1}')
  workdirs.append_line(tmp_path / "metrics.jsonl", '{"a": 2}\n')
  assert (tmp_path / "metrics.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'
  assert sorted(os.listdir(tmp_path)) == ["labels.npy", "metrics.jsonl", "stats.npz", "summary.json"]  # no temp files
  (tmp_path / "bad.json").write_text('{"acc": ')
  with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
    workdirs.read_json(tmp_path / "bad.json")


def test_open_returns_the_finished_run_and_refuses_what_cannot_be_a_workdir(tmp_path):
  assert workdirs.open(tmp_path / "new" / "run") is None
  assert not (tmp_path / "new").exists(), "open created the workdir"
  workdirs.write_json(tmp_path / "summary.json", {"acc": 0.9})
  assert workdirs.open(str(tmp_path)) == {"acc": 0.9}
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"workdir .*/file is not a directory: .*/file is a file"):
    workdirs.open(tmp_path / "file")
  with pytest.raises(ValueError, match=r"workdir .*/file/run is not a directory: .*/file is a file"):
    workdirs.open(tmp_path / "file" / "run")
  with pytest.raises(ValueError, match=r"workdir /proc/jaxclust/run cannot be written \(/proc: "):
    workdirs.open("/proc/jaxclust/run")  # not writable even by root


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_open_refuses_a_read_only_directory(tmp_path):
  (tmp_path / "ro").mkdir(mode=0o500)
  with pytest.raises(ValueError, match=r"ro/run cannot be written \(.*ro: Permission denied\)"):
    workdirs.open(tmp_path / "ro" / "run")


def test_claim_creates_the_workdir_on_the_lead_process_only(tmp_path):
  config = configs.get_config("dec", "digits")
  workdirs.claim(tmp_path / "run", config, lead=False)
  assert not (tmp_path / "run").exists()
  assert workdirs.claim(tmp_path / "run", config, lead=True) == epath.Path(tmp_path / "run")
  assert workdirs.read_json(tmp_path / "run" / "config.json") == json.loads(config.to_json())
  config.pretrain.epochs += 1
  with pytest.raises(ValueError, match=r"run holds a run with another configuration \(differs in pretrain.epochs"):
    workdirs.claim(tmp_path / "run", config, lead=False)  # every process checks


def test_resume_may_change_only_what_changes_neither_training_nor_result(tmp_path):
  c = configs.get_config("deepcluster", "mnist")
  workdirs.check_same_config(tmp_path, c)
  c.eval_every, c.data_dir = 1, "/elsewhere"
  workdirs.check_same_config(tmp_path, c)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert (saved["eval_every"], saved["data_dir"]) == (1, "/elsewhere"), "the resumed settings are not recorded"
  c.readout = "kmeans"  # changes the reported clusters
  with pytest.raises(ValueError, match=r"differs in readout: 'knn' -> 'kmeans'\); resume it with the same "
                                       r"settings or choose another --workdir$"):
    workdirs.check_same_config(tmp_path, c)
  # A run saved while DeepCluster-v2's configs still carried SwAV's unused queue and freeze settings resumes.
  old = tmp_path / "old"
  old.mkdir()
  d = configs.get_config("deepcluster", "mnist")
  (old / "config.json").write_text(json.dumps({**json.loads(d.to_json()), "freeze_prototypes_steps": 100,
                                                "queue_length": 0, "queue_start_epoch": 0}))
  workdirs.check_same_config(old, d)
  s = configs.get_config("swav", "mnist")  # SwAV reads them: a run without them is another run
  (old / "config.json").write_text(json.dumps({**json.loads(s.to_json()), "queue_length": 256}))
  with pytest.raises(ValueError, match=r"differs in queue_length: 256 -> 0\)"):
    workdirs.check_same_config(old, s)


def test_setting_added_since_the_run_started_resumes_at_its_default(tmp_path):
  """A config.json written before jaxclust had a setting lacks it: the run resumes while the setting
  keeps its default (the old behaviour), and is refused when the setting is changed."""
  config = configs.get_config("dec", "digits")
  config.pretrain.epochs = 1
  file = tmp_path / "config.json"

  def as_an_older_version_wrote_it(**extra):
    saved = json.loads(config.to_json())
    saved.pop("latent"), saved["pretrain"].pop("init_from")
    file.write_text(json.dumps({**saved, **extra}))

  as_an_older_version_wrote_it()
  workdirs.check_same_config(tmp_path, config)
  saved = json.loads(file.read_text())
  assert (saved["latent"], saved["pretrain"]["init_from"]) == (10, ""), "the resumed settings are not recorded"
  as_an_older_version_wrote_it()
  changed = configs.get_config("dec", "digits")
  changed.pretrain.epochs, changed.latent = 1, 5
  with pytest.raises(ValueError, match=r"differs in latent: '\(absent\)' -> 5\)"):
    workdirs.check_same_config(tmp_path, changed)
  as_an_older_version_wrote_it(retired=1)  # a setting this version no longer has is not guessed at
  with pytest.raises(ValueError, match=r"differs in retired: 1 -> '\(absent\)'\)"):
    workdirs.check_same_config(tmp_path, config)


def test_train_seconds_counts_an_epoch_redone_after_a_kill_once(tmp_path):
  records = [{"stage": "pretrain", "epoch": 1, "seconds": 1.0}, {"stage": "pretrain", "epoch": 2, "seconds": 2.0},
             {"stage": "pretrain", "epoch": 2, "seconds": 3.0},  # killed before its save: redone
             {"stage": "cluster", "step": 0, "changed": 1.0}, {"stage": "cluster", "step": 0, "seconds": 0.5},
             {"stage": "cluster", "epoch": 1, "seconds": 0.25}, {"stage": "mine", "neighbors": 5}]
  for r in records:
    workdirs.append_line(tmp_path / "metrics.jsonl", json.dumps(r))
  assert workdirs.train_seconds(tmp_path) == 1.0 + 3.0 + 0.5 + 0.25
  assert workdirs.train_seconds(tmp_path / "elsewhere") == 0.0


# --- the lock -------------------------------------------------------------------------------------------

_HOLD = """
import sys, time
from jaxclust import workdir
lock = workdir.Lock(sys.argv[1], heartbeat_s=0.2, log=print)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
try:
  with lock:
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
except ValueError as e:
  print("refused:", e, flush=True)
"""


def _hold(workdir, start=0.0, seconds=60.0):
  return subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir), str(start), str(seconds)],
                          stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parent.parent)


def _write_lock(workdir, **record):
  os.makedirs(workdir, exist_ok=True)
  record = {"pid": 1, "host": "elsewhere", "start": "2026-12-01T10:00:00+00:00", "heartbeat": time.time(),
            "token": "theirs", **record}
  (workdir / "lock.json").write_text(json.dumps(record))


def test_a_live_holder_refuses_others_and_a_killed_one_is_taken_over(tmp_path):
  holder = _hold(tmp_path)
  try:
    assert holder.stdout.readline() == "locked\n"
    record = json.loads((tmp_path / "lock.json").read_text())
    assert (record["pid"], record["host"]) == (holder.pid, HOST)
    since = record["start"]
    with pytest.raises(ValueError, match=rf"^{tmp_path} is in use by pid {holder.pid} on host {HOST} "
                                         rf"since {re.escape(since)}; "):
      workdirs.Lock(tmp_path).acquire()
    time.sleep(0.5)
    assert json.loads((tmp_path / "lock.json").read_text())["heartbeat"] > record["heartbeat"], "no heartbeat"
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  messages = []
  with workdirs.Lock(tmp_path, log=messages.append):
    assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
  assert messages == [f"{tmp_path} was locked by pid {holder.pid} on host {HOST} since {since}, and that "
                      "process is no longer running: taking the lock over"]
  assert not (tmp_path / "lock.json").exists()
  assert sorted(os.listdir(tmp_path)) == [".lock.mutex"]  # no temporary files left; the flock's file stays


def test_a_reused_pid_and_a_stale_heartbeat_are_taken_over(tmp_path):
  ours = json.loads(json.dumps(workdirs.Lock(tmp_path)._record(time.time())))  # pylint: disable=protected-access
  _write_lock(tmp_path, pid=os.getpid(), host=HOST, pid_started=ours["pid_started"])
  with pytest.raises(ValueError, match=rf"in use by pid {os.getpid()} on host {HOST} since 2026-12-01T10:00:00"):
    workdirs.Lock(tmp_path).acquire()  # this very process: alive
  _write_lock(tmp_path, pid=os.getpid(), host=HOST, pid_started="1")  # the pid now names another process
  messages = []
  workdirs.Lock(tmp_path, log=messages.append).acquire().release()
  assert "that process is no longer running" in messages[0]
  _write_lock(tmp_path, heartbeat=time.time() - 5)  # another host, recently alive
  with pytest.raises(ValueError, match=r"in use by pid 1 on host elsewhere since 2026-12-01T10:00:00\+00:00; "):
    workdirs.Lock(tmp_path, stale_s=60).acquire()
  _write_lock(tmp_path, heartbeat=time.time() - 120)
  messages = []
  workdirs.Lock(tmp_path, log=messages.append).acquire().release()
  assert messages == [f"{tmp_path} was locked by pid 1 on host elsewhere since 2026-12-01T10:00:00+00:00, and "
                      "its heartbeat is 120 s old (limit 60 s): taking the lock over"]
  (tmp_path / "lock.json").write_text("")  # unreadable: judged by its age
  os.utime(tmp_path / "lock.json", (time.time() - 120,) * 2)
  workdirs.Lock(tmp_path, log=messages.append).acquire().release()


def test_release_removes_only_our_own_lock(tmp_path):
  messages = []
  lock = workdirs.Lock(tmp_path, heartbeat_s=0.05, log=messages.append).acquire()
  _write_lock(tmp_path)  # taken over while this process was stalled
  time.sleep(0.3)
  assert messages == [f"{tmp_path / 'lock.json'} is no longer this process's: another process took the workdir over"]
  lock.release()
  assert json.loads((tmp_path / "lock.json").read_text())["token"] == "theirs"
  workdirs.Lock(tmp_path / "other", lead=False).acquire().release()  # off process 0: nothing
  assert not (tmp_path / "other").exists()


def test_lock_without_hard_links(tmp_path, monkeypatch):
  def no_links(*_):
    raise PermissionError(1, "Operation not permitted")  # as on FUSE mounts such as gcsfuse

  monkeypatch.setattr(os, "link", no_links)
  with workdirs.Lock(tmp_path):
    with pytest.raises(ValueError, match=rf"in use by pid {os.getpid()}"):
      workdirs.Lock(tmp_path).acquire()
  assert os.listdir(tmp_path) == [".lock.mutex"]


def test_of_processes_taking_over_a_dead_lock_together_one_wins(tmp_path):
  _write_lock(tmp_path, heartbeat=time.time() - 120)
  start = time.time() + 2.0  # after the interpreters have started
  runs = [_hold(tmp_path, start) for _ in range(4)]
  try:  # the losers exit at once; the winner holds the lock until killed
    deadline = time.time() + 60
    while sum(r.poll() is not None for r in runs) < 3 and time.time() < deadline:
      time.sleep(0.1)
  finally:
    for r in runs:
      if r.poll() is None:
        r.kill()
  lines = [r.communicate()[0] for r in runs]
  won = [r.pid for r, out in zip(runs, lines) if "locked" in out]
  assert len(won) == 1, lines
  assert all(f"in use by pid {won[0]} on host {HOST}" in out for out in lines if "locked" not in out), lines


# --- URL workdirs (an offline stand-in for a gs:// bucket) -----------------------------------------------

@pytest.fixture
def bucket(tmp_path, monkeypatch):
  use_fake_gcs(tmp_path, monkeypatch)
  return tmp_path / "bucket"


def test_gs_workdir_files_config_and_lock(bucket, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  url = "gs://bucket/runs/dec"
  assert workdirs.open(url) is None
  config = configs.get_config("dec", "digits")
  run = workdirs.claim(url, config, lead=True)
  assert str(run) == url and (bucket / "runs" / "dec" / "config.json").exists()
  workdirs.check_same_config(url, config)
  config.pretrain.epochs += 1
  with pytest.raises(ValueError, match=rf"^{url} holds a run with another configuration"):
    workdirs.check_same_config(url, config)
  workdirs.append_line(run / "metrics.jsonl", json.dumps({"stage": "s", "epoch": 1, "seconds": 1.5}))
  workdirs.append_line(run / "metrics.jsonl", json.dumps({"stage": "s", "epoch": 2, "seconds": 2.5}))
  assert workdirs.train_seconds(url) == 4.0
  workdirs.save_npy(run / "labels.npy", np.arange(5))
  np.testing.assert_array_equal(workdirs.load_npy(run / "labels.npy"), np.arange(5))
  np.testing.assert_array_equal(np.load(bucket / "runs" / "dec" / "labels.npy"), np.arange(5))
  workdirs.write_json(run / "summary.json", {"acc": 1.0})
  assert workdirs.open(url) == {"acc": 1.0}
  with workdirs.Lock(url, heartbeat_s=0.05):
    assert json.loads((bucket / "runs" / "dec" / "lock.json").read_text())["pid"] == os.getpid()
    with pytest.raises(ValueError, match=rf"^{url} is in use by pid {os.getpid()} on host {HOST} since "):
      workdirs.Lock(url).acquire()
  assert not (bucket / "runs" / "dec" / "lock.json").exists()
  _write_lock(bucket / "runs" / "dec", heartbeat=time.time() - 120)
  messages = []
  workdirs.Lock(url, heartbeat_s=0.05, log=messages.append).acquire().release()
  assert "its heartbeat is 120 s old" in messages[0]
  assert sorted(os.listdir(tmp_path)) == ["bucket"], "a URL became a local path"
  (bucket / "file").write_text("")
  with pytest.raises(ValueError, match=r"workdir gs://bucket/file is a file, not a directory"):
    workdirs.open("gs://bucket/file")


def test_orbax_saves_and_restores_in_a_gs_workdir(bucket):
  import orbax.checkpoint as ocp
  state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.int32(0)}
  directory = workdirs.path("gs://bucket/run") / "checkpoints"
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=1)) as manager:
    for step in (1, 2):
      manager.save(step, args=ocp.args.StandardSave(jax.tree.map(lambda a: a + step, state)))
  assert sorted(os.listdir(bucket / "run" / "checkpoints")) == ["2"]  # step 1 deleted through the URL
  with ocp.CheckpointManager(directory) as manager:
    assert manager.latest_step() == 2
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = manager.restore(2, args=ocp.args.StandardRestore(abstract))
  np.testing.assert_array_equal(restored["params"]["w"], np.arange(6.0).reshape(2, 3) + 2)
  assert int(restored["step"]) == 2


def test_an_unreachable_url_workdir_is_one_line(monkeypatch):
  def unreachable(self):
    raise RuntimeError("Could not resolve host: www.googleapis.com\n  details the user does not need")

  monkeypatch.setattr(type(workdirs.path("gs://b/run")), "exists", unreachable)
  with pytest.raises(ValueError, match=r"^workdir gs://b/run cannot be reached \(RuntimeError: Could not resolve host: "
                                       r"www.googleapis.com\); URL workdirs need network access"):
    workdirs.open("gs://b/run")


def test_a_run_from_before_a_setting_with_a_data_dependent_default_resumes_as_it_trained(tmp_path):
  """VaDE's likelihood (its LEGACY): runs made before the setting were Bernoulli; one resumes so, never as Gaussian."""
  config = configs.get_config("vade", "digits")
  config.vade.likelihood, config.pretrain.loss = "bernoulli", "bce"  # as prepare resolves digits
  old = json.loads(config.to_json())
  del old["vade"]["likelihood"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdirs.check_same_config(tmp_path, config, write=False)
  config.vade.likelihood = "gaussian"
  with pytest.raises(ValueError, match=r"vade.likelihood: '\(absent\)' -> 'gaussian'"):
    workdirs.check_same_config(tmp_path, config, write=False)
