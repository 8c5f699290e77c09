"""Dataset sources: original file formats written here, tfds on mock data, every bad input."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from jaxclust.data import sources

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "mnist"
  folder.mkdir()
  parts = {"train": 12, "t10k": 5}
  for split, n in parts.items():
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
  return tmp_path


def test_digits_is_bundled():
  ds = sources.load("digits")
  assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.y.shape == (1797,)


def test_mnist_idx_train_and_test_concatenated(fake_mnist):
  ds = sources.load("mnist", data_dir=fake_mnist)
  assert ds.x.shape == (17, 28, 28, 1) and ds.y.shape == (17,)
  raw = sources.read_idx(fake_mnist / "mnist" / "train-images-idx3-ubyte.gz")
  np.testing.assert_allclose(ds.x[:12, ..., 0], raw / 255.0)


def test_real_mnist_and_usps_when_present():
  if not SHARED.is_dir():
    pytest.skip(f"no shared data folder at {SHARED}")
  mnist = sources.load("mnist", data_dir=SHARED)
  assert mnist.x.shape == (70000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(mnist.y[:60000]), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  usps = sources.load("usps", data_dir=SHARED)
  assert usps.x.shape == (9298, 16, 16, 1) and usps.y[:3].tolist() == [6, 5, 4]


def test_usps_h5(tmp_path):
  h5py = pytest.importorskip("h5py")
  with h5py.File(tmp_path / "usps.h5", "w") as f:
    for split, n in (("train", 6), ("test", 3)):
      f.create_group(split).create_dataset("data", data=np.random.default_rng(0).random((n, 256), np.float32))
      f[split].create_dataset("target", data=np.arange(n, dtype=np.int32))
  ds = sources.load("usps", data_dir=tmp_path)
  assert ds.x.shape == (9, 16, 16, 1) and ds.y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2]


def test_npy_npz_csv(tmp_path):
  x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
  y = np.arange(10) % 3
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "y.npy", y)
  np.savez(tmp_path / "d.npz", x=x, y=y)
  with open(tmp_path / "d.csv", "w") as f:
    f.write("a,label,b,c\n" + "".join(f"{r[0]},{l},{r[1]},{r[2]}\n" for r, l in zip(x, y)))
  np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
  for ds in (sources.load(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy")),
             sources.load(str(tmp_path / "d.npz")), sources.load(str(tmp_path / "d.csv"))):
    np.testing.assert_allclose(ds.x, x, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, y)
  plain = sources.load(str(tmp_path / "plain.csv"))
  assert plain.y is None and plain.x.shape == (10, 3)


def test_tfds_by_name_on_mock_data():
  import tensorflow_datasets as tfds  # a declared dependency: never skipped
  with tfds.testing.mock_data(num_examples=24):
    ds = sources.load("tfds:mnist")
  assert ds.x.shape == (24, 28, 28, 1) and ds.y.shape == (24,)
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0


def test_tfds_offline_fails_fast_with_a_way_out(tmp_path):
  import time
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"never downloads.*--data-dir"):
    sources.load("tfds:mnist", data_dir=tmp_path)
  assert time.perf_counter() - start < 30  # not tfds' minutes-long retry loop


def bad_csv(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_text("a,b\n1,2\n3,oops\n")
  return str(path)


def corrupt_idx(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
    f.write(bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 50)
  return tmp_path


def nan_rows(tmp_path):
  x = np.ones((5, 2))
  x[1, 0] = x[3, 1] = np.nan
  np.save(tmp_path / "nan.npy", x)
  return str(tmp_path / "nan.npy")


def constant(tmp_path):
  np.save(tmp_path / "c.npy", np.full((5, 3), 2.0))
  return str(tmp_path / "c.npy")


def short_labels(tmp_path):
  np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).random((5, 2)), y=np.arange(4))
  return str(tmp_path / "s.npz")


def truncated(suffix):
  def make(tmp_path):
    whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
    x = np.random.default_rng(0).random((50, 4))
    np.save(whole, x) if suffix == ".npy" else np.savez(whole, x=x)
    cut.write_bytes(whole.read_bytes()[:100])  # a download or copy that stopped early
    return str(cut)
  return make


def not_numpy(tmp_path):
  path = tmp_path / "text.npy"
  path.write_text("1,2\n3,4\n")
  return str(path)


def a_folder(tmp_path):
  (tmp_path / "folder.npz").mkdir()
  return str(tmp_path / "folder.npz")


def one_number(tmp_path):
  np.save(tmp_path / "one.npy", np.float32(3.0))
  return str(tmp_path / "one.npy")


def not_utf8_csv(tmp_path):
  (tmp_path / "binary.csv").write_bytes(bytes(range(256)))
  return str(tmp_path / "binary.csv")


@pytest.mark.parametrize("make,kwargs,message", [
    (truncated(".npz"), {}, r"cannot read .*cut.npz, is it truncated or corrupt\? \(BadZipFile"),
    (truncated(".npy"), {}, r"cannot read .*cut.npy: EOF"),
    (not_numpy, {}, r"text.npy is not a NumPy .npy file: it starts with bytes b'1,2\\n3,'"),
    (a_folder, {}, r"folder.npz is not a file"),
    (one_number, {}, r"one.npy holds a single number, not rows of features"),
    (not_utf8_csv, {}, r"cannot read .*binary.csv: 'utf-8' codec can't decode"),
    (lambda p: "imagenet42", {}, r"unknown dataset 'imagenet42'"),
    (lambda p: str(p / "missing.npy"), {}, r"missing.npy does not exist"),
    (lambda p: "mnist", {"data_dir_is_tmp": True}, r"train-images-idx3-ubyte\[.gz\] not found"),
    (lambda p: "mnist", {}, r"pass data_dir"),
    (bad_csv, {}, r"column 'b' holds a non-numeric value 'oops' on line 3"),
    (corrupt_idx, {"data_dir_from_make": True}, r"truncated or corrupt: header says shape \(100, 28, 28\)"),
    (nan_rows, {}, r"2 rows with NaN or Inf values, e.g. rows \[1, 3\]"),
    (constant, {}, r"all 5 rows are identical"),
    (short_labels, {}, r"has 5 rows but labels of shape \(4,\)"),
])
def test_bad_input(tmp_path, make, kwargs, message):
  made = make(tmp_path)
  if kwargs.get("data_dir_from_make"):
    call = lambda: sources.load("mnist", data_dir=made)
  elif kwargs.get("data_dir_is_tmp"):
    call = lambda: sources.load(made, data_dir=tmp_path)
  else:
    call = lambda: sources.load(made)
  with pytest.raises(ValueError, match=message):
    call()
