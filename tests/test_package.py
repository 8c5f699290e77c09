"""The package as users meet it: the CLI, and the core running without TensorFlow."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxclust import cli


def test_cli_kmeans_on_bundled_digits(capsys):
  assert cli.main(["kmeans", "--dataset", "digits", "--n-init", "3"]) == 0
  out = capsys.readouterr().out
  acc = float(out.split("ACC=")[1].split()[0])
  assert 0.6 < acc <= 1.0, out


def test_cli_rejects_bad_k(capsys):
  assert cli.main(["kmeans", "--k", "0"]) == 2
  assert "k=0 must be >= 1" in capsys.readouterr().err


def test_core_imports_and_runs_without_tensorflow():
  """Accelerator images may lack TensorFlow: block it and run a kernel in a fresh interpreter."""
  code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
          "import jax, numpy as np, jaxclust\n"
          "x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)\n"
          "print(int(jaxclust.kmeans(x, 2, rng=jax.random.key(0)).labels.shape[0]))\n"
          "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "100"


def test_cli_fit_rejects_unknown_settings(capsys):
  assert cli.main(["fit", "dec", "--set", "pretrain.epoch=3"]) == 2
  assert "unknown setting 'epoch'" in capsys.readouterr().err
  assert cli.main(["fit", "dec", "--set", "nonsense"]) == 2
  assert "must look like key=value" in capsys.readouterr().err
  assert cli.main(["fit", "scan", "--set", "scan.update_backbone=no"]) == 2
  assert "scan.update_backbone='no': expected true or false" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "10.0.0.1:1234"], "--coordinator also need --num-processes, --process-id"),
    (["--num-processes", "2", "--process-id", "0"], "--num-processes, --process-id also need --coordinator"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], r"--process-id=2 must be in \[0, 2\)"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes=0 must be at least 1"),
    (["--coordinator", "host", "--num-processes", "2", "--process-id", "1"], "--coordinator='host' must be HOST:PORT"),
    (["--distributed", "--coordinator-bind", "h:1"], "--coordinator-bind='h:1' needs --coordinator"),
])
def test_cli_refuses_an_incomplete_multi_process_job(capsys, monkeypatch, flags, message):
  import jax
  monkeypatch.setattr(jax.distributed, "initialize", lambda **_: pytest.fail("initialized a bad job"))
  assert cli.main(["fit", "dec", *flags]) == 2
  assert re.search(message, capsys.readouterr().err)


def test_tpu_setup_refuses_an_unknown_jax_extra():
  script = Path(__file__).parents[1] / "tpu_setup.sh"
  out = subprocess.run(["bash", str(script)], env={**os.environ, "JAX_EXTRA": "rocm", "VENV": "/nonexistent"},
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 2 and "JAX_EXTRA=rocm is not one of tpu, cuda12, cuda13, cpu" in out.stderr


def test_cli_settings_keep_their_types():
  config = cli.make_config("scan", "mnist", settings=["scan.update_backbone=true", "scan.epochs=3",
                                                      "scan.learning_rate=1e-3", "cnn_channels=8,16"])
  assert config.scan.update_backbone is True and config.scan.epochs == 3 and config.scan.learning_rate == 1e-3
  assert tuple(config.cnn_channels) == (8, 16)
  assert cli.make_config("scan", "mnist", settings=["scan.update_backbone=False"]).scan.update_backbone is False
  recipe = cli.make_config("scan", "mnist")  # the digit recipe (RESULTS.md): heads on frozen features
  assert recipe.scan.update_backbone is False and recipe.scan.augment is False and recipe.mine.neighbors == 10
  assert recipe.pretext.warmup_epochs == 5 and cli.make_config("scan", "digits").pretext.warmup_epochs == 0
  assert cli.make_config("scan", "mnist", settings=["scan.augment=true"]).scan.augment is True


def test_training_path_never_imports_tensorflow(tmp_path):
  """TensorFlow is installed here, but fit's logging must not pull it in (7 s, absent on GPUs)."""
  code = ("import sys\n"
          "import jaxclust.engine, jaxclust.methods.dec\n"
          "from jaxclust.metric_writer import ScalarWriter\n"
          f"ScalarWriter({str(tmp_path)!r}).write(1, {{'loss': 1.0}})\n"
          "print('tensorflow' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "False"
