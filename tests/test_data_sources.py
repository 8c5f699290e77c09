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


# Arrays become rows in one place (sources.as_rows), for files and memory alike.

@pytest.mark.parametrize("x, shape, scaling, expected", [
    (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), (2, 3, 4, 1), "uint8 images / 255",
     np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1) / 255),  # grayscale: a channel axis added
    (np.full((2, 2, 2, 3), 65535, np.uint16), (2, 2, 2, 3), "uint16 images / 65535", np.ones((2, 2, 2, 3))),
    (np.full((2, 2, 2), 300, np.int64), (2, 2, 2, 1), "int64 images / 65535", np.full((2, 2, 2, 1), 300 / 65535)),
    (np.full((2, 2, 2), 200, np.int64), (2, 2, 2, 1), "int64 images / 255", np.full((2, 2, 2, 1), 200 / 255)),
    (np.full((2, 5, 3), 7.0), (2, 5, 3), "float64 time series [n, T, C], as they are", np.full((2, 5, 3), 7.0)),
    (np.full((2, 4, 4, 1), 0.5, np.float32), (2, 4, 4, 1), "float32 images, as they are", np.full((2, 4, 4, 1), 0.5)),
    (np.full((2, 4, 4, 1), 200.0), (2, 4, 4, 1), "float64 images, as they are (values up to 200: divide by 255",
     np.full((2, 4, 4, 1), 200.0)),  # floats are never scaled; the log says what they look like
    (np.array([[3, 4]], np.int32), (1, 2), "int32 features, as they are", np.array([[3.0, 4.0]])),
    (np.array([True, False]), (2, 1), "bool features, as they are", np.array([[1.0], [0.0]])),
])
def test_arrays_are_scaled_by_their_dtype_and_read_by_their_rank(x, shape, scaling, expected):
  rows, how = sources.as_rows(x, "x")
  assert rows.shape == shape and rows.dtype == np.float32 and how.startswith(scaling), how
  np.testing.assert_allclose(rows, expected, rtol=1e-6)


def test_files_and_memory_read_an_array_alike(tmp_path):
  rng = np.random.default_rng(0)
  for x in (rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), rng.random((6, 5, 4)), rng.random((6, 5, 4, 2))):
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    memory = sources.from_arrays(x)
    for file in ("x.npy", "x.npz"):
      loaded = sources.load(str(tmp_path / file))
      np.testing.assert_array_equal(loaded.x, memory.x)
      assert loaded.info == memory.info
  assert memory.info == {"scaling": "float64 images, as they are"}
  assert sources.load("digits").info["scaling"] == "pixel values 0..16 / 16"


@pytest.mark.parametrize("x, message", [
    (np.array(["a", "b"]), r"holds <U1 values, not real numbers"),
    (np.ones((3, 2), complex), r"holds complex values, not real numbers"),
    (np.array([{"a": 1}, None], object), r"holds object values, not real numbers"),
    (np.zeros((2, 2, 2, 2, 2)), r"has shape \(2, 2, 2, 2, 2\): expected rows \[n, d\], time series"),
    (np.full((2, 3, 3), -1, np.int64), r"int64 images with values in \[-1, -1\]: integer images must be 8-bit"),
])
def test_arrays_that_are_not_rows_of_real_numbers_are_refused_from_memory_and_files(tmp_path, x, message):
  with pytest.raises(ValueError, match=message):
    sources.from_arrays(x)
  np.save(tmp_path / "x.npy", x, allow_pickle=True)
  with pytest.raises(ValueError, match=message):
    sources.load(str(tmp_path / "x.npy"))


# --labels files.

@pytest.mark.parametrize("name, text", [("y.csv", "label\n2\n0\n1\n"), ("plain.csv", "2\n0\n\n1\n"),
                                        ("y.npy", np.array([2, 0, 1])), ("column.npy", np.array([[2.0], [0.0], [1.0]]))])
def test_labels_files(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text) if isinstance(text, str) else np.save(path, text)
  y = sources.read_labels(path, 3)
  assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]


@pytest.mark.parametrize("name, text, message", [
    ("short.csv", "1\n2\n", r"labels file \S*short.csv has 2 labels but the dataset has 3 rows"),
    ("names.csv", "cat\ndog\ncat\n", r"labels file \S*names.csv holds non-integer labels, e.g. 'cat' on row 1"),
    ("half.npy", np.array([1.0, 0.5, 2.0]), r"labels file \S*half.npy holds non-integer labels, e.g. 0.5 on row 2"),
    ("wide.csv", "a,b\n1,2\n", r"labels file \S*wide.csv: expected one label a line, line 1 has 2 values"),
    ("matrix.npy", np.zeros((3, 2)), r"labels file \S*matrix.npy: expected one label per row, got .* shape \(3, 2\)"),
    ("y.txt", "1\n2\n3\n", r"labels file \S*y.txt: expected a .npy or .csv file, got .txt"),
    ("missing.npy", None, r"labels file \S*missing.npy does not exist"),
])
def test_bad_labels_files_are_named(tmp_path, name, text, message):
  path = tmp_path / name
  if isinstance(text, str):
    path.write_text(text)
  elif text is not None:
    np.save(path, text)
  with pytest.raises(ValueError, match=message):
    sources.read_labels(path, 3)
