"""Where data comes from: the bundled digits, local files in their original formats, tfds by name.

Every source returns a :class:`Dataset` of host numpy arrays; the tf.data pipelines and the
per-process sharding sit downstream. Nothing here downloads: clustering papers evaluate on the full
dataset (train + test, e.g. MNIST's 70,000 images), and users point ``data_dir`` at the files.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Dataset name -> (sub-folder candidates, loader); the files are those distributed by the authors.
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_FOLDERS = {"mnist": ("mnist",), "fashion_mnist": ("fashion-mnist", "fashion_mnist", "fashion")}
NAMES = ("digits", "mnist", "fashion_mnist", "usps")


class Dataset(NamedTuple):
  x: np.ndarray  # [n, ...] float32; images scaled to [0, 1] with a trailing channel axis
  y: np.ndarray | None  # [n] int64 class labels, when known (for evaluation only)
  name: str


def load(name: str, *, data_dir: str | os.PathLike | None = None, labels: str | None = None) -> Dataset:
  """Loads a dataset by name or path.

  Args:
    name: ``"digits"`` (bundled with scikit-learn, no download); ``"mnist"``, ``"fashion_mnist"``
      (the four IDX ``.gz`` files, train and test concatenated: 70,000 images) or ``"usps"``
      (``usps.h5``, train and test: 9,298 images) read from ``data_dir``; a path to a ``.npy``,
      ``.npz`` or ``.csv`` file of features (tabular data, time series, precomputed embeddings);
      or ``"tfds:NAME"`` / ``"tfds:NAME:SPLIT"`` for a tensorflow-datasets dataset already
      prepared under ``data_dir`` (it is never downloaded).
    data_dir: folder holding the files (for the named datasets, the folder itself or its parent).
    labels: for array files, where the labels are: an ``.npz`` key, a ``.csv`` column name, or a
      ``.npy`` file path. By default an ``.npz`` key ``y``/``labels`` or a ``.csv`` column
      ``label``/``y``/``class`` is used when present.

  Raises:
    ValueError: unknown name, missing or corrupt file, non-numeric CSV value, non-finite rows,
      labels whose length does not match the data.
  """
  if name == "digits":
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return _checked(Dataset((x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), y.astype(np.int64), name))
  if name in _FOLDERS:
    return _checked(_load_idx_pair(name, data_dir))
  if name == "usps":
    return _checked(_load_usps(data_dir))
  if name.startswith("tfds:"):
    return _checked(_load_tfds(name, data_dir))
  path = Path(name)
  if path.suffix in (".npy", ".npz", ".csv"):
    return _checked(load_array_file(path, labels=labels))
  raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(NAMES)}, 'tfds:NAME', or a path to a "
                   ".npy/.npz/.csv file")


_SIZES = {"digits": (1797, (8, 8, 1)), "mnist": (70_000, (28, 28, 1)), "fashion_mnist": (70_000, (28, 28, 1)),
          "usps": (9298, (16, 16, 1))}


def describe(name: str, *, data_dir=None) -> tuple[int | None, tuple | None]:
  """``(rows, row shape)`` of a dataset, read as cheaply as its format allows (what the recipes are chosen
  by); None where unknown without reading every record (a tfds dataset of images of many sizes)."""
  if name in _SIZES:
    return _SIZES[name]
  if name.startswith("tfds:"):
    from jaxclust.data import stream
    source = stream.open_source(name, data_dir=data_dir)
    return source.n, source.shape
  data = load(name, data_dir=data_dir)
  return data.x.shape[0], tuple(data.x.shape[1:])


def from_arrays(x, y=None, *, name: str = "array") -> Dataset:
  """A :class:`Dataset` of in-memory rows ``x`` (``[n, d]`` features or ``[n, H, W(, C)]`` images; numpy or
  JAX) and optional labels ``y`` (for evaluation only), checked as every loaded dataset is."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
    raise ValueError(f"{name}: expected real numbers, got an array of dtype {x.dtype}")
  if x.ndim < 2:
    raise ValueError(f"{name}: expected rows [n, d] or images [n, H, W(, C)], got an array of shape {x.shape}")
  if x.ndim == 3:  # [n, H, W]: grayscale images get their channel axis
    x = x[..., None]
  return _checked(Dataset(x.astype(np.float32), None if y is None else np.asarray(y), name))


def _find(data_dir, folders, filename) -> Path:
  if data_dir is None:
    raise ValueError(f"{filename} is read from local files: pass data_dir (e.g. --data-dir /path/to/data)")
  root = Path(data_dir)
  for folder in ("",) + tuple(folders):
    for candidate in (root / folder / filename, root / folder / (filename + ".gz")):
      if candidate.is_file():
        return candidate
  raise ValueError(f"{filename}[.gz] not found in {root} or its sub-folders {list(folders)}")


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (LeCun's MNIST format), gzip-compressed or not, checking its header."""
  path = Path(path)
  try:
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path}: {e}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex() or 'empty'})")
  ndim = data[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise ValueError(f"{path} is truncated or corrupt: header says shape {shape} "
                     f"({header + int(np.prod(shape))} bytes), file has {len(data)} bytes")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _load_idx_pair(name, data_dir) -> Dataset:
  images, labels = [], []
  for image_file, label_file in ((_IDX_FILES[0], _IDX_FILES[1]), (_IDX_FILES[2], _IDX_FILES[3])):
    x = read_idx(_find(data_dir, _FOLDERS[name], image_file))
    y = read_idx(_find(data_dir, _FOLDERS[name], label_file))
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"{name} {image_file} has {x.shape[0]} images but {label_file} has {y.shape[0]} labels")
    images.append(x)
    labels.append(y)
  x = np.concatenate(images).astype(np.float32)[..., None] / 255.0
  return Dataset(x, np.concatenate(labels).astype(np.int64), name)


def _load_usps(data_dir) -> Dataset:
  import h5py

  path = _find(data_dir, ("usps",), "usps.h5")
  try:
    with h5py.File(path, "r") as f:
      parts = [(f[split]["data"][:], f[split]["target"][:]) for split in ("train", "test")]
  except (OSError, KeyError) as e:
    raise ValueError(f"{path} is not a USPS HDF5 file with train/test groups of data and target: {e}") from e
  x = np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, 16, 16, 1)
  return Dataset(x, np.concatenate([p[1] for p in parts]).astype(np.int64), "usps")


def load_array_file(path, *, labels: str | None = None) -> Dataset:
  """Features from ``.npy``, ``.npz`` or ``.csv`` (header optional), with optional labels."""
  path = Path(path)
  if not path.exists():
    raise ValueError(f"data file {path} does not exist")
  if not path.is_file():
    raise ValueError(f"data file {path} is not a file")
  _check_magic(path)
  y = None
  try:
    if path.suffix == ".npy":
      x = np.load(path, allow_pickle=False)
      if labels is not None:
        y = np.load(labels, allow_pickle=False)
    elif path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        label_key = labels or next((k for k in ("y", "labels", "label") if k in keys), None)
        if label_key is not None and label_key not in keys:
          raise ValueError(f"{path} has no array {label_key!r}; it holds {keys}")
        data_keys = [k for k in keys if k != label_key]
        data_key = "x" if "x" in data_keys else (data_keys[0] if len(data_keys) == 1 else None)
        if data_key is None:
          raise ValueError(f"{path} holds {keys}: name the features 'x' (and the labels 'y')")
        x = archive[data_key]
        y = archive[label_key] if label_key else None
    else:
      x, y = _read_csv(path, labels)
  except ValueError as e:
    if str(path) in str(e):
      raise
    raise ValueError(f"cannot read {path}: {e}") from e
  except Exception as e:
    # A damaged file surfaces as whatever numpy, zipfile or zlib trips over first (BadZipFile,
    # zlib.error, EOFError, tokenize.TokenError, ...): all of them are the file's fault, not a bug.
    raise ValueError(f"cannot read {path}, is it truncated or corrupt? ({type(e).__name__}: {e})") from e
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{path} holds {x.dtype} values, not numbers")
  if x.ndim == 0:
    raise ValueError(f"{path} holds a single number, not rows of features")
  if x.ndim == 1:
    x = x[:, None]
  return Dataset(x.astype(np.float32), None if y is None else np.asarray(y), path.stem)


_MAGIC = {".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04", b"PK\x05\x06")}  # a NumPy header; a zip archive


def _check_magic(path: Path) -> None:
  """Refuses a .npy/.npz file that does not start as one: numpy would call any other bytes "pickled
  (object) data", which misleads about what is wrong."""
  if path.suffix not in _MAGIC:
    return
  try:
    with open(path, "rb") as f:
      head = f.read(6)
  except OSError as e:
    raise ValueError(f"cannot read {path}: {e}") from e
  if not head:
    raise ValueError(f"data file {path} is empty")
  if not any(head.startswith(m) for m in _MAGIC[path.suffix]):
    kind = "a NumPy .npy file" if path.suffix == ".npy" else "a NumPy .npz (zip) archive"
    raise ValueError(f"data file {path} is not {kind}: it starts with bytes {head!r}")


def _read_csv(path, label_column):
  with open(path, newline="") as f:
    rows = [row for row in csv.reader(f) if row]
  if not rows:
    raise ValueError(f"{path} is empty")
  header = None
  if any(not _is_number(v) for v in rows[0]):
    header, rows = [h.strip() for h in rows[0]], rows[1:]
  if not rows:
    raise ValueError(f"{path} has a header but no rows")
  width = len(rows[0])
  label_index = None
  if header is not None:
    if label_column is not None and label_column not in header:
      raise ValueError(f"{path} has no column {label_column!r}; its columns are {header}")
    label_index = header.index(label_column) if label_column else next(
        (header.index(c) for c in ("label", "y", "class") if c in header), None)
  elif label_column is not None:
    raise ValueError(f"{path} has no header row, so it has no column {label_column!r}")
  values = np.empty((len(rows), width), np.float64)
  for r, row in enumerate(rows):
    if len(row) != width:
      raise ValueError(f"{path} line {r + 1 + (header is not None)} has {len(row)} values, expected {width}")
    for c, v in enumerate(row):
      try:
        values[r, c] = float(v)
      except ValueError:
        column = header[c] if header else c
        raise ValueError(f"{path}: column {column!r} holds a non-numeric value {v!r} on line "
                         f"{r + 1 + (header is not None)}") from None
  if label_index is None:
    return values, None
  return np.delete(values, label_index, axis=1), values[:, label_index]


def _is_number(v) -> bool:
  try:
    float(v)
    return True
  except ValueError:
    return False


def tfds_name(name: str) -> tuple[str, str, str]:
  """``"tfds:NAME[:SPLIT]"`` -> (tfds dataset, split, label feature); ``cifar100_20`` is CIFAR-100 with its
  20 superclasses as the labels (SCAN's CIFAR-100-20)."""
  parts = name.split(":")
  dataset, split = parts[1], parts[2] if len(parts) > 2 else "train"
  if dataset == "cifar100_20":
    return "cifar100", split, "coarse_label"
  return dataset, split, "label"


def _load_tfds(name, data_dir) -> Dataset:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  import tensorflow_datasets as tfds

  tf.config.set_visible_devices([], "GPU")  # TensorFlow must not take accelerator memory from JAX
  dataset, split, label_key = tfds_name(name)
  try:
    # download=False fails in under a second when the data is absent; with downloads on, tfds
    # retries the network for minutes before failing on an offline machine.
    data = tfds.load(dataset, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types (DatasetNotFoundError, AssertionError, ...)
    raise ValueError(f"tensorflow-datasets {dataset!r} (split {split!r}) is not prepared under "
                     f"{data_dir or '~/tensorflow_datasets'} and jaxclust never downloads. Prepare it with "
                     f"`tfds build {dataset}` on a machine with network access, or point at local files: "
                     f"--dataset mnist|fashion_mnist|usps --data-dir DIR, or --dataset FILE.npy/.npz/.csv "
                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
  # Batches of 8192, concatenated (tfds' batch_size=-1 aborts TensorFlow under tfds.testing.mock_data).
  batches = list(tfds.as_numpy(data.batch(8192)))
  if not batches:
    raise ValueError(f"tensorflow-datasets {dataset!r} split {split!r} is empty")
  x = np.concatenate([b["image"] for b in batches]).astype(np.float32) / 255.0
  y = np.concatenate([b[label_key] for b in batches]).astype(np.int64) if label_key in batches[0] else None
  return Dataset(x, y, dataset)


def _checked(ds: Dataset) -> Dataset:
  x, y = ds.x, ds.y
  if x.shape[0] == 0:
    raise ValueError(f"dataset {ds.name!r} has no rows")
  bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)
    raise ValueError(f"dataset {ds.name!r} has {rows.size} rows with NaN or Inf values, e.g. rows "
                     f"{rows[:5].tolist()}; drop or impute them first")
  flat = x.reshape(x.shape[0], -1)
  if x.shape[0] > 1 and np.all(flat == flat[0]):
    raise ValueError(f"dataset {ds.name!r}: all {x.shape[0]} rows are identical (every feature is constant), "
                     "so there is nothing to cluster")
  if y is not None:
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
      raise ValueError(f"dataset {ds.name!r} has {x.shape[0]} rows but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
      if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise ValueError(f"dataset {ds.name!r} has non-integer labels, e.g. {y[np.flatnonzero(y != np.round(y))[:3]]}")
    y = y.astype(np.int64)
  return Dataset(x, y, ds.name)
