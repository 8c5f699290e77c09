"""Test setup: 8 fake CPU devices for the sharded == single-device checks (must precede jax)."""

import os
import shutil
import tempfile

# LLVM at optimization level 1: the suite's programs are tiny, and compiling them is most of its time
# (a small CNN's init: 11.3 s at the default level 2, 1.9 s at 1). Level 0 compiles faster still, but
# 7 tests got other values under it (BatchNorm gradients of the small CNN), so not 0. Runs in
# subprocesses (the CLI and multi-process tests) take the same level, without the 8 fake devices.
SUBPROCESS_XLA_FLAGS = "--xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), SUBPROCESS_XLA_FLAGS,
                                    "--xla_force_host_platform_device_count=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# One persistent compilation cache per test session, shared by the xdist workers and the CLI runs they
# start: the kill-and-resume tests compile the same programs in three processes (the reference, the
# killed run and the resumed one). Cached executables are the same programs, so values do not change.
_CACHE = os.path.join(tempfile.gettempdir(), "jaxclust-jit-cache-" +
                      os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
# Every program, however quick to compile: with the 0.5 s threshold of before, the kill-and-resume tests of IDEC
# and VaDE took 55 s, with none 43 s (fresh caches, one after the other, 2026-12-05).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


# The longest tests (41-84 s each under `-n 2` on a clean clone, 2026-12-02) run first: started last, one of
# them would leave a worker running it alone at the end.
_LONG = ("test_killed", "test_cli_run_logs", "test_stages_run_in_order", "test_two_processes", "test_streamed_swav",
         "test_scan_with_host_views", "test_scan_on_frozen_features", "test_imagenet_recipe_streams",
         "test_scan_and_selflabel_steps_sharded", "test_device_and_tfdata_views_agree",
         "test_train_step_freezes_prototypes", "test_streamed_deepcluster", "test_8_devices_equal_1_device",
         "test_a_url_workdir")


def pytest_collection_modifyitems(items):
  # stable: the rest keep their order
  items.sort(key=lambda item: not any(name in item.name for name in _LONG))


def pytest_sessionfinish(session):
  if not hasattr(session.config, "workerinput"):  # the controller, after every worker has stopped
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Every compiled program holds memory maps until JAX's caches drop it: a worker running a few hundred tests of
  distinct settings reached 42,584 maps (CI clone of 2026-12-05; the limit, vm.max_map_count, is 65,530; past
  it XLA's compiler crashes). The programs of one test module are released when it ends."""
  yield
  jax.clear_caches()


@pytest.fixture(scope="session")
def digits():
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  return x.astype(np.float32), y


@pytest.fixture(scope="session")
def blobs():
  from sklearn.datasets import make_blobs
  x, y = make_blobs(n_samples=3000, centers=8, n_features=12, cluster_std=2.0, random_state=0)
  return x.astype(np.float32), y


@pytest.fixture(scope="session")
def mesh():
  from jaxclust import parallel
  assert jax.device_count() == 8, "conftest must set XLA_FLAGS before jax initializes"
  return parallel.make_mesh(8)


def _cli(method: str, workdir, settings, dataset="digits", data_dir=None):
  import sys
  cmd = [sys.executable, "-m", "jaxclust.cli", "fit", method, "--dataset", dataset, "--workdir", str(workdir)]
  cmd += [] if data_dir is None else ["--data-dir", str(data_dir)]
  # One device: the process compiles for one device, the fastest; tests compare on ONE_DEVICE.
  env = {**os.environ, "XLA_FLAGS": SUBPROCESS_XLA_FLAGS}
  return cmd + [arg for setting in settings for arg in ("--set", setting)], env


def run_cli(method: str, workdir, settings, timeout: float = 600, **data):
  """Runs ``jaxclust fit METHOD --dataset digits`` (or ``data``'s ``dataset`` and ``data_dir``) on one device
  to the end, as :func:`kill_cli_run` does: runs compared bit for bit must run in the same kind of process
  (XLA's CPU client with 8 fake devices splits work between threads differently, which moves the last
  float bits)."""
  import subprocess
  cmd, env = _cli(method, workdir, settings, **data)
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]


def kill_cli_run(method: str, workdir, settings, checkpoint: int, timeout: float = 300, **data):
  """Runs ``jaxclust fit METHOD --dataset digits`` (or as :func:`run_cli`) on one device and SIGKILLs it once
  checkpoint ``checkpoint`` exists (the kill-and-resume tests). Fails if the run ends or stalls first."""
  import signal
  import subprocess
  import time
  cmd, env = _cli(method, workdir, settings, **data)
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
  deadline = time.time() + timeout
  while not (workdir / "checkpoints" / str(checkpoint)).is_dir():
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline, f"no checkpoint {checkpoint} within {timeout} s"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (workdir / "summary.json").exists()
