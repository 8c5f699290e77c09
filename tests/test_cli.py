"""The command line as users meet it: every mistake is one line ``jaxclust: error: ...`` and exit code 2.

``cli.main`` runs in-process; a mistake the CLI must catch before any work has ``sources.load``
replaced by a failure, so a refusal that came too late (or never) fails the test instead of training.
"""

import os
import re

import numpy as np
import pytest

from jaxclust import cli, configs
from jaxclust.data import sources


def error_line(capsys) -> str:
  """The one line a refused command printed on stderr (and nothing else)."""
  err = capsys.readouterr().err
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxclust: error: "), err
  assert "Traceback" not in err
  return lines[0]


@pytest.fixture
def no_data(monkeypatch):
  """Any data loading fails the test: the refusal must come before it."""
  monkeypatch.setattr(sources, "load", lambda *a, **k: pytest.fail("data loaded before the mistake was refused"))


@pytest.fixture
def digits_files(tmp_path):
  """Digits as an .npz with labels and an .npy without, and the first 100 bytes of each (a cut-off copy)."""
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  images = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)  # images: kmeans must flatten them
  np.savez(tmp_path / "digits.npz", x=images, y=y)
  np.save(tmp_path / "digits.npy", images)
  for name in ("digits.npz", "digits.npy"):
    (tmp_path / f"cut_{name}").write_bytes((tmp_path / name).read_bytes()[:100])
  (tmp_path / "words.csv").write_text("a,b\n1,2\n3,oops\n")
  return tmp_path


# --config files.

CONFIG_FILES = {
    "syntax.py": ("def get_config(:\n  pass\n", r"syntax.py: syntax error on line 1"),
    "empty.py": ("x = 1\n", r"empty.py defines no get_config\(\) function"),
    "imports.py": ("import jaxclust_no_such_module\n", r"imports.py failed while running: ModuleNotFoundError"),
    "raises.py": ("def get_config():\n  return 1 / 0\n", r"raises.py: get_config\(\) raised ZeroDivisionError"),
    "returns.py": ("def get_config():\n  return 3\n", r"returns.py: get_config\(\) returned int, expected"),
    "scan.py": ("from jaxclust import configs\n\n\ndef get_config():\n  return configs.get_config('scan')\n",
                r"scan.py is a 'scan' config, not 'dec'"),
}


@pytest.mark.parametrize("name", ["missing.py", *CONFIG_FILES])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, no_data, name):
  if name in CONFIG_FILES:
    (tmp_path / name).write_text(CONFIG_FILES[name][0])
  message = CONFIG_FILES[name][1] if name in CONFIG_FILES else r"missing.py: no such file"
  assert cli.main(["fit", "dec", "--config", str(tmp_path / name), "--workdir", str(tmp_path / "run")]) == 2
  line = error_line(capsys)
  assert f"--config {tmp_path / name}" in line
  assert re.search(message, line), line


# --set values: typed by the setting they change.

@pytest.mark.parametrize("setting, message", [
    ("hidden=abc", r"--set hidden='abc': expected a comma-separated tuple"),
    ("hidden=1.5,2", r"--set hidden='1.5,2': expected a tuple of integers"),
    ("pretrain.epochs=abc", r"--set pretrain.epochs='abc': expected an integer \(default 60\)"),
    ("n_clusters=2.7", r"--set n_clusters='2.7': expected an integer"),  # refused, never truncated to 2
    ("seed=1e400", r"--set seed='1e400': expected an integer"),
    ("pretrain.learning_rate=fast", r"--set pretrain.learning_rate='fast': expected a finite number"),
    ("pretrain.learning_rate=nan", r"--set pretrain.learning_rate='nan': expected a finite number"),
    ("standardize=1", r"--set standardize='1': expected true or false"),
    ("seed.x=1", r"--set seed.x: seed is a setting, not a group of settings"),
    ("pretrain.epoch=3", r"--set pretrain.epoch: unknown setting 'epoch'"),
    ("cluster.optimizer=rmsprop", r"cluster.optimizer='rmsprop' must be one of 'sgd', 'adam'"),
])
def test_a_bad_setting_is_one_line_naming_it(tmp_path, capsys, no_data, setting, message):
  assert cli.main(["fit", "dec", "--workdir", str(tmp_path / "run"), "--set", setting]) == 2
  line = error_line(capsys)
  assert re.search(message, line), line


@pytest.mark.parametrize("method, setting, message", [
    ("swav", "optimizer=sgd", r"optimizer='sgd' must be one of 'lars', 'adam'"),
    ("scan", "pretext.optimizer=adam", r"pretext.optimizer='adam' must be one of 'sgd', 'lars'"),
])
def test_a_setting_outside_its_choices_is_refused_before_loading(tmp_path, capsys, no_data, method, setting, message):
  assert cli.main(["fit", method, "--workdir", str(tmp_path / "run"), "--set", setting]) == 2
  assert re.search(message, error_line(capsys))


def test_settings_are_parsed_by_their_type():
  config = cli.make_config("dec", "digits", settings=[
      "seed=1e3",  # a whole number written as a float is accepted for an int setting
      "pretrain.learning_rate=1", "model=conv", "pretrain.init_from=some/run", "standardize=TRUE",
      "conv_channels=8,16", "hidden=500", "cluster.tol=0"])
  assert config.seed == 1000 and isinstance(config.seed, int)
  assert config.pretrain.learning_rate == 1.0 and isinstance(config.pretrain.learning_rate, float)
  assert config.model == "conv" and config.pretrain.init_from == "some/run" and config.standardize is True
  assert tuple(config.conv_channels) == (8, 16) and tuple(config.hidden) == (500,)
  assert config.cluster.tol == 0.0 and isinstance(config.cluster.tol, float)
  config = cli.make_config("scan", "digits", settings=["augment.crop_scale=0.3,1", "mine.features='backbone'"])
  assert tuple(config.augment.crop_scale) == (0.3, 1.0) and config.mine.features == "backbone"
  config = cli.make_config("swav", "digits", settings=["crops=((2, 8, (0.5, 1.0)),)"])
  assert tuple(config.crops) == ((2, 8, (0.5, 1.0)),)


# Data files.

@pytest.mark.parametrize("name, message", [
    ("cut_digits.npz", r"cannot read \S*cut_digits.npz, is it truncated or corrupt\? \(BadZipFile"),
    ("cut_digits.npy", r"cannot read \S*cut_digits.npy: EOF"),
    ("words.csv", r"\S*words.csv: column 'b' holds a non-numeric value 'oops' on line 3"),
    ("nowhere.npy", r"data file \S*nowhere.npy does not exist"),
])
@pytest.mark.parametrize("command", ["fit", "kmeans"])
def test_a_bad_data_file_is_one_line_naming_it(digits_files, capsys, command, name, message):
  path = str(digits_files / name)
  argv = (["fit", "dec", "--workdir", str(digits_files / "run")] if command == "fit" else ["kmeans", "--k", "3"])
  assert cli.main([*argv, "--dataset", path]) == 2
  line = error_line(capsys)
  assert re.search(message, line) and path in line, line
  assert not (digits_files / "run").exists()


# --workdir.

def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys, no_data):
  (tmp_path / "notes.txt").write_text("not a folder")
  assert cli.main(["fit", "dec", "--workdir", str(tmp_path / "notes.txt")]) == 2
  assert f"--workdir {tmp_path / 'notes.txt'} is a file; expected a folder" in error_line(capsys)
  # A path under a file can never become a folder: the unwritable case root can test.
  assert cli.main(["fit", "dec", "--workdir", str(tmp_path / "notes.txt" / "run")]) == 2
  assert f"{tmp_path / 'notes.txt'} is a file, so no folder can be made under it" in error_line(capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into any folder whatever its mode; the path-under-a-file case covers it")
def test_an_unwritable_workdir_is_refused(tmp_path, capsys, no_data):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    assert cli.main(["fit", "dec", "--workdir", str(locked / "run")]) == 2
    assert f"folder {locked} is not writable" in error_line(capsys)
  finally:
    locked.chmod(0o700)


# predict --output.

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A tiny DEC run on digits through the CLI (a few seconds)."""
  workdir = tmp_path_factory.mktemp("run")
  settings = ["pretrain.epochs=1", "hidden=32", "cluster.max_steps=20", "cluster.update_interval=10",
              "cluster.kmeans_n_init=1"]
  assert cli.main(["fit", "dec", "--workdir", str(workdir), *[f"--set={s}" for s in settings]]) == 0
  return workdir


def test_predict_writes_exactly_the_named_npy_and_csv(finished_run, tmp_path, capsys):
  """Labels, confidence (DEC: the largest soft assignment) and the outlier score, in both formats."""
  labels = np.load(finished_run / "labels.npy")
  assert cli.main(["predict", "--workdir", str(finished_run), "--input", "digits",
                   "--output", str(tmp_path / "labels.npy")]) == 0
  table = np.load(tmp_path / "labels.npy")
  np.testing.assert_array_equal(table["label"], labels)
  assert np.all((table["confidence"] > 1 / 10) & (table["confidence"] <= 1))
  assert np.all((table["outlier"] >= 0) & (table["outlier"] <= 1)) and 0.4 < np.median(table["outlier"]) < 0.6
  assert cli.main(["predict", "--workdir", str(finished_run), "--input", "digits",
                   "--output", str(tmp_path / "labels.csv")]) == 0
  lines = (tmp_path / "labels.csv").read_text().splitlines()
  assert lines[0] == "label,confidence,outlier" and [int(v.split(",")[0]) for v in lines[1:]] == labels.tolist()
  np.testing.assert_allclose([[float(f) for f in v.split(",")[1:]] for v in lines[1:]],
                             np.stack([table["confidence"], table["outlier"]], 1), atol=1e-6)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "labels.npy"]  # no labels.npy.npy
  assert "saved to" in capsys.readouterr().out


@pytest.mark.parametrize("output, message", [
    ("labels.txt", r"--output \S*labels.txt: expected a file name ending in .npy or .csv, got .txt"),
    ("labels", r"--output \S*labels: expected a file name ending in .npy or .csv, got no extension"),
    ("nowhere/labels.npy", r"--output \S*nowhere/labels.npy: folder \S*nowhere does not exist"),
    ("a_file/labels.npy", r"--output \S*a_file/labels.npy: \S*a_file is a file, not a folder"),
    ("a_folder.npy", r"--output \S*a_folder.npy is a folder"),
])
def test_a_bad_predict_output_is_refused_before_predicting(tmp_path, capsys, no_data, output, message):
  (tmp_path / "a_file").write_text("")
  (tmp_path / "a_folder.npy").mkdir()
  # The workdir holds no run: only a refusal before any work answers with the output's fault.
  assert cli.main(["predict", "--workdir", str(tmp_path), "--input", "digits",
                   "--output", str(tmp_path / output)]) == 2
  line = error_line(capsys)
  assert re.search(message, line), line


# fit METHOD --help.

def test_every_setting_of_every_method_has_a_meaning():
  names = set()
  for method in configs.METHODS:
    for recipe in configs.recipes(method):
      names |= {name for name, _ in configs.flatten(configs.get_config(method, "data.npy", recipe=recipe))}
  assert sorted(names - set(configs.HELP)) == [], "settings without a configs.HELP line"
  assert sorted(set(configs.HELP) - names) == [], "configs.HELP lines for settings that no longer exist"
  assert all(meaning and "\n" not in meaning for meaning in configs.HELP.values())


def test_fit_method_help_lists_its_settings_with_defaults(capsys):
  assert cli.main(["fit", "dec", "--help"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"^  pretrain\.epochs +60 +autoencoder pretraining epochs$", out, re.M), out
  for name, value in configs.flatten(configs.get_config("dec", "digits")):
    assert re.search(rf"^  {re.escape(name)} +{re.escape(repr(value))} ", out, re.M), name
  assert cli.main(["fit", "--stage", "scan", "swav", "--dataset=mnist", "-h"]) == 0  # --stage's value is no method
  out = capsys.readouterr().out
  assert "settings of swav and their defaults for --dataset mnist" in out
  assert re.search(r"^  prototypes +30 +prototypes", out, re.M), out
  assert cli.main(["fit", "--help"]) == 0
  out = capsys.readouterr().out
  assert "`jaxclust fit METHOD --help` lists" in out and "settings of" not in out


def test_a_command_line_argparse_refuses_is_one_line(capsys):
  assert cli.main(["kmeans", "--k", "abc"]) == 2
  assert "argument --k: invalid int value: 'abc'" in error_line(capsys)
  assert cli.main(["fit", "kmeans"]) == 2
  assert "argument method: invalid choice: 'kmeans'" in error_line(capsys)


# kmeans on any dataset fit takes.

def test_kmeans_on_a_file_with_and_without_labels(digits_files, capsys):
  assert cli.main(["kmeans", "--dataset", str(digits_files / "digits.npz"), "--n-init", "2"]) == 0
  out = capsys.readouterr().out
  assert "n=1797 d=64 k=10" in out and float(out.split("ACC=")[1].split()[0]) > 0.6, out
  assert cli.main(["kmeans", "--dataset", str(digits_files / "digits.npy")]) == 2
  assert f"--dataset {digits_files / 'digits.npy'} has no labels to count clusters from: give --k" in error_line(capsys)
  assert cli.main(["kmeans", "--dataset", str(digits_files / "digits.npy"), "--k", "10", "--n-init", "2"]) == 0
  out = capsys.readouterr().out
  assert "inertia=" in out and "size_entropy=" in out and "ACC=" not in out, out


def test_kmeans_on_idx_files_in_a_data_dir(tmp_path, capsys):
  import gzip
  rng = np.random.default_rng(0)
  (tmp_path / "mnist").mkdir()
  for split, n in {"train": 30, "t10k": 10}.items():
    for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", rng.integers(0, 3, n))):
      header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
      with gzip.open(tmp_path / "mnist" / f"{split}-{kind}-ubyte.gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
  assert cli.main(["kmeans", "--dataset", "mnist", "--data-dir", str(tmp_path), "--n-init", "1"]) == 0
  assert "n=40 d=784 k=3" in capsys.readouterr().out


# Bad input: one line naming it, exit 2, nothing written.

@pytest.fixture
def bad_arrays(tmp_path):
  rng = np.random.default_rng(0)
  np.save(tmp_path / "rows.npy", rng.normal(size=(40, 3)).astype(np.float32))
  np.save(tmp_path / "float_grid.npy", rng.random((40, 8, 8)).astype(np.float32))
  np.save(tmp_path / "complex.npy", np.ones((40, 3), complex))
  np.save(tmp_path / "words.npy", np.array(["a", "b"] * 20))
  np.save(tmp_path / "objects.npy", np.array([None, 1] * 20, object), allow_pickle=True)
  np.save(tmp_path / "y39.npy", np.arange(39) % 2)
  (tmp_path / "half.csv").write_text("label\n" + "0.5\n" * 40)
  return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{d}/rows.npy", "--labels", "{d}/y39.npy"],
     r"labels file \S*y39.npy has 39 labels but dataset \S*rows.npy has 40 rows"),
    (["--dataset", "{d}/rows.npy", "--labels", "{d}/half.csv", "--set", "n_clusters=2"],
     r"labels file \S*half.csv holds non-integer labels, e.g. 0.5 on row 1"),
    (["--dataset", "{d}/rows.npy", "--recipe", "small_images"],
     r"recipe 'small_images' is for images \[n, H, W, C\], but \S*rows.npy' has rows of shape \(3,\)"),
    (["--dataset", "{d}/float_grid.npy", "--recipe", "digits"],
     r"has rows of shape \(8, 8\); a float \[n, H, W\] array is read as time series"),
    (["--dataset", "{d}/complex.npy"], r"complex.npy holds complex values, not real numbers"),
    (["--dataset", "{d}/words.npy"], r"words.npy holds <U1 values, not real numbers"),
    (["--dataset", "{d}/objects.npy"], r"objects.npy holds object values, not real numbers"),
])
def test_bad_data_is_one_line_and_nothing_is_written(bad_arrays, capsys, args, message):
  workdir = bad_arrays / "run"
  assert cli.main(["fit", "dec", "--workdir", str(workdir), *[a.format(d=bad_arrays) for a in args]]) == 2
  line = error_line(capsys)
  assert re.search(message, line), line
  assert not workdir.exists()


def test_kmeans_takes_labels_from_a_file(bad_arrays, capsys):
  (bad_arrays / "y.csv").write_text("".join(f"{i % 4}\n" for i in range(40)))
  assert cli.main(["kmeans", "--dataset", str(bad_arrays / "rows.npy"), "--labels", str(bad_arrays / "y.csv"),
                   "--n-init", "1"]) == 0
  out = capsys.readouterr().out
  assert "n=40 d=3 k=4" in out and "data: float32 features, as they are" in out and "ACC=" in out, out
  assert cli.main(["kmeans", "--dataset", str(bad_arrays / "rows.npy"), "--labels", str(bad_arrays / "y39.npy")]) == 2
  assert re.search(r"labels file \S*y39.npy has 39 labels but --dataset \S*rows.npy has 40 rows", error_line(capsys))


def test_kmeans_on_an_image_folder(tmp_path, capsys):
  from PIL import Image
  rng = np.random.default_rng(0)
  for label, level in (("dark", 40), ("light", 210)):
    (tmp_path / label).mkdir()
    for i in range(6):
      Image.fromarray(np.clip(rng.normal(level, 20, (9, 7)), 0, 255).astype(np.uint8)).save(tmp_path / label / f"{i}.png")
  assert cli.main(["kmeans", "--dataset", str(tmp_path), "--image-size", "5", "--n-init", "1"]) == 0
  out = capsys.readouterr().out
  assert "n=12 d=75 k=2" in out and "0=dark, 1=light" in out and "ACC=1.0000" in out, out
