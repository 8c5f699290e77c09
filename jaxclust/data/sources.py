"""Where data comes from: the bundled digits, local files in their original formats, image folders, tfds by name.

Every source returns a :class:`Dataset` of host numpy arrays; the tf.data pipelines and the
per-process sharding sit downstream. Nothing here downloads: clustering papers evaluate on the full
dataset (train + test, e.g. MNIST's 70,000 images), and users point ``data_dir`` at the files.

Arrays become rows in one place, :func:`as_rows`, for files and in-memory arrays alike: integer images
are scaled to [0, 1] by their dtype (uint8 / 255, uint16 / 65535), floats are kept as they are, and the
scaling is recorded (``Dataset.info["scaling"]``, which fit writes to summary.json). By rank: ``[n, d]``
rows of features; ``[n, H, W]`` integers are grayscale images (a channel axis is added); ``[n, T, C]``
floats are time series (rows of rank 2: vectors), since float images carry their channel axis
(``[n, H, W, 1]``) where time series have none to drop; ``[n, H, W, C]`` images.
"""

from __future__ import annotations

import csv
import dataclasses
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
_ARRAY_FILES = (".npy", ".npz", ".csv")


class Dataset(NamedTuple):
  x: np.ndarray  # [n, ...] float32; images scaled to [0, 1] with a trailing channel axis
  y: np.ndarray | None  # [n] int64 class labels, when known (for evaluation only)
  name: str
  # What fit records about where the rows came from (summary.json): "scaling", and for image folders
  # "classes" (the label of each class folder) and "skipped_files".
  info: dict = {}


def load(name: str, *, data_dir: str | os.PathLike | None = None, labels: str | None = None, image_size: int = 0,
         skip_bad_files: bool = False) -> Dataset:
  """Loads a dataset by name or path.

  Args:
    name: ``"digits"`` (bundled with scikit-learn, no download); ``"mnist"``, ``"fashion_mnist"``
      (the four IDX ``.gz`` files, train and test concatenated: 70,000 images) or ``"usps"``
      (``usps.h5``, train and test: 9,298 images) read from ``data_dir``; a path to a ``.npy``,
      ``.npz`` or ``.csv`` file of features (tabular data, time series, precomputed embeddings);
      a folder of PNG/JPEG images (:mod:`jaxclust.data.folders`: class subfolders are labels);
      or ``"tfds:NAME"`` / ``"tfds:NAME:SPLIT"`` for a tensorflow-datasets dataset already
      prepared under ``data_dir`` (it is never downloaded).
    data_dir: folder holding the files (for the named datasets, the folder itself or its parent).
    labels: for array files, where the labels are: an ``.npz`` key, a ``.csv`` column name, or a
      ``.npy`` file path. By default an ``.npz`` key ``y``/``labels`` or a ``.csv`` column
      ``label``/``y``/``class`` is used when present.
    image_size: image folders: 0 reads them at the size most of their images have, ``S`` at ``S x S``.
    skip_bad_files: image folders: skip (and count) the files that cannot be decoded instead of refusing.

  Raises:
    ValueError: unknown name, missing or corrupt file, non-numeric CSV value, non-finite rows,
      labels whose length does not match the data, an image folder without images or with a bad file.
  """
  if name == "digits":
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return _checked(Dataset((x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), y.astype(np.int64), name,
                            {"scaling": "pixel values 0..16 / 16"}))
  if name in _FOLDERS:
    return _checked(_load_idx_pair(name, data_dir))
  if name == "usps":
    return _checked(_load_usps(data_dir))
  if name.startswith("tfds:"):
    return _checked(_load_tfds(name, data_dir))
  if is_folder(name):
    from jaxclust.data import folders
    return _checked(folders.load(name, image_size=image_size, skip_bad_files=skip_bad_files))
  path = Path(name)
  if path.suffix in _ARRAY_FILES:
    return _checked(load_array_file(path, labels=labels))
  raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(NAMES)}, 'tfds:NAME', a path to a "
                   ".npy/.npz/.csv file, or a folder of images")


def is_folder(name) -> bool:
  """Whether ``name`` is an image folder: a folder that is neither a named dataset nor named as a data file."""
  name = os.fspath(name)
  return (name not in NAMES and not name.startswith("tfds:") and Path(name).suffix not in _ARRAY_FILES
          and os.path.isdir(name))


_SIZES = {"digits": (1797, (8, 8, 1)), "mnist": (70_000, (28, 28, 1)), "fashion_mnist": (70_000, (28, 28, 1)),
          "usps": (9298, (16, 16, 1))}


def load_like(name: str, shape, *, data_dir=None, what: str = "the input") -> Dataset:
  """``name`` read for a run trained on rows of ``shape``: an image folder at that size (its images may be of
  any size), anything else as :func:`load` reads it.

  Raises:
    ValueError: an image folder for a run trained on rows that are not images; what :func:`load` raises.
  """
  size = 0
  if is_folder(name):
    if len(shape) != 3:
      raise ValueError(f"{what} {name} is an image folder, but the run was trained on rows of shape {tuple(shape)}, "
                       "not images")
    size = tuple(shape[:2])
  return load(name, data_dir=data_dir, image_size=size)


def describe(name: str, *, data_dir=None, image_size: int = 0) -> tuple[int | None, tuple | None]:
  """``(rows, row shape)`` of a dataset, read as cheaply as its format allows (what the recipes are chosen
  by); None where unknown without reading every record (a tfds dataset of images of many sizes). An image
  folder is listed and a sample of its images' headers read (:func:`jaxclust.data.folders.describe`)."""
  if name in _SIZES:
    return _SIZES[name]
  if is_folder(name):
    from jaxclust.data import folders
    return folders.describe(name, image_size=image_size)
  if name.startswith("tfds:"):
    from jaxclust.data import stream
    source = stream.open_source(name, data_dir=data_dir)
    return source.n, source.shape
  data = load(name, data_dir=data_dir)
  return data.x.shape[0], tuple(data.x.shape[1:])


def reading_line(info: dict) -> str:
  """What a run's log says about how its rows were read (:attr:`Dataset.info`): their scaling, and an image
  folder's size, classes and skipped files."""
  from jaxclust.data import folders  # no TensorFlow: only Pillow, and only for reading
  return info.get("scaling", "as given") + ("; " + folders.summary_line(info) if "image_size" in info else "")


def from_arrays(x, y=None, *, name: str = "array") -> Dataset:
  """A :class:`Dataset` of in-memory rows ``x`` (numpy or JAX; read by :func:`as_rows` as files are) and
  optional labels ``y`` (for evaluation only), checked as every loaded dataset is. A 1-D ``x`` is refused
  (as scikit-learn refuses it: one feature or one row is ambiguous); in a file it is one feature."""
  x = np.asarray(x)
  if x.ndim < 2 and _real(x.dtype):
    raise ValueError(f"{name}: expected rows [n, d] or images [n, H, W(, C)], got an array of shape {x.shape}")
  x, scaling = as_rows(x, name)
  return _checked(Dataset(x, None if y is None else np.asarray(y), name, {"scaling": scaling}))


_IMAGE_DTYPES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def _real(dtype) -> bool:
  return dtype == np.bool_ or (np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating))


def as_rows(x: np.ndarray, name) -> tuple[np.ndarray, str]:
  """``(rows float32, how they were scaled)`` of the array ``x`` of a file or of memory: the one place
  that reads arrays, so that both read alike.

  ``[n]``: one feature; ``[n, d]``: features, as they are; ``[n, T, C]`` floats: time series, as they are;
  ``[n, H, W]`` integers: grayscale images ``[n, H, W, 1]``; ``[n, H, W, C]``: images. Integer images
  are scaled to [0, 1] by their dtype: uint8 / 255, uint16 / 65535, other integer types by the range of
  their values (within [0, 255]: / 255, within [0, 65535]: / 65535). Floats are never scaled.

  Raises:
    ValueError: a dtype that is not real numbers (strings, objects, complex), a single number, more than
      4 dimensions, integer images outside [0, 65535]; each naming ``name``.
  """
  if not _real(x.dtype):
    kind = "complex" if np.issubdtype(x.dtype, np.complexfloating) else str(x.dtype)
    raise ValueError(f"{name} holds {kind} values, not real numbers")
  if x.ndim == 0:
    raise ValueError(f"{name} holds a single number, not rows of features")
  if x.ndim > 4:
    raise ValueError(f"{name} has shape {x.shape}: expected rows [n, d], time series [n, T, C] or images "
                     "[n, H, W(, C)]")
  if x.ndim == 1:
    x = x[:, None]
  integer = np.issubdtype(x.dtype, np.integer)
  if x.ndim == 3 and integer:  # grayscale images; [n, T, C] floats are time series
    x = x[..., None]
  if x.ndim < 4 or not integer:
    kind = {2: "features", 3: "time series [n, T, C]", 4: "images"}[x.ndim]
    peak = float(np.max(x)) if x.ndim == 4 and x.size else 0.0
    hint = {3: " (float images need their channel axis, [n, H, W, 1])",
            4: f" (values up to {peak:g}: divide by 255 if they are 8-bit pixels)" if peak > 1.5 else ""}.get(x.ndim, "")
    return x.astype(np.float32), f"{x.dtype} {kind}, as they are{hint}"
  top = _IMAGE_DTYPES.get(x.dtype)
  if top is None:  # int64 images, e.g. from np.array of Python ints: by the range of their values
    low, high = (int(np.min(x)), int(np.max(x))) if x.size else (0, 0)
    if low < 0 or high > 65535:
      raise ValueError(f"{name} holds {x.dtype} images with values in [{low}, {high}]: integer images must be "
                       "8-bit (0..255) or 16-bit (0..65535); scale them to [0, 1] floats first")
    top = 255 if high <= 255 else 65535
  # Divided, not multiplied by 1 / top: the pixel values the named datasets were measured with.
  return x.astype(np.float32) / np.float32(top), f"{x.dtype} images / {top}"


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
  x, scaling = as_rows(np.concatenate(images), name)
  return Dataset(x, np.concatenate(labels).astype(np.int64), name, {"scaling": scaling})


def _load_usps(data_dir) -> Dataset:
  import h5py

  path = _find(data_dir, ("usps",), "usps.h5")
  try:
    with h5py.File(path, "r") as f:
      parts = [(f[split]["data"][:], f[split]["target"][:]) for split in ("train", "test")]
  except (OSError, KeyError) as e:
    raise ValueError(f"{path} is not a USPS HDF5 file with train/test groups of data and target: {e}") from e
  x = np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, 16, 16, 1)
  return Dataset(x, np.concatenate([p[1] for p in parts]).astype(np.int64), "usps",
                 {"scaling": "as stored (USPS' HDF5 holds floats in [0, 1])"})


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
    if "Object arrays cannot be loaded" in str(e):  # numpy would need pickle, which may run code: never
      raise ValueError(f"{path} holds object values, not real numbers (an array of Python objects)") from e
    raise ValueError(f"cannot read {path}: {e}") from e
  except Exception as e:
    # A damaged file surfaces as whatever numpy, zipfile or zlib trips over first (BadZipFile,
    # zlib.error, EOFError, tokenize.TokenError, ...): all of them are the file's fault, not a bug.
    raise ValueError(f"cannot read {path}, is it truncated or corrupt? ({type(e).__name__}: {e})") from e
  x, scaling = as_rows(x, path)
  return Dataset(x, None if y is None else np.asarray(y), path.stem, {"scaling": scaling})


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
  x, scaling = as_rows(np.concatenate([b["image"] for b in batches]), dataset)
  y = np.concatenate([b[label_key] for b in batches]).astype(np.int64) if label_key in batches[0] else None
  return Dataset(x, y, dataset, {"scaling": scaling})


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
  return Dataset(x, y, ds.name, ds.info)


def read_labels(path, n: int, *, what: str = "the dataset") -> np.ndarray:
  """``[n]`` int64 labels from ``path`` (the command line's ``--labels``), for evaluation only: a ``.npy``
  array, or a ``.csv`` with one label a line (a header line is allowed).

  Raises:
    ValueError: a missing or unreadable file, labels that are not integers, or not ``n`` of them (``what``
      names the data they were meant for); each naming the file.
  """
  path = Path(path)
  if path.suffix not in (".npy", ".csv"):
    raise ValueError(f"labels file {path}: expected a .npy or .csv file, got {path.suffix or 'no extension'}")
  if not path.is_file():
    raise ValueError(f"labels file {path} does not exist" if not path.exists() else f"labels file {path} is not a file")
  if path.suffix == ".npy":
    _check_magic(path)
    try:
      y = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy's many ways of failing on a damaged file, as in load_array_file
      raise ValueError(f"cannot read labels file {path} ({type(e).__name__}: {e})") from e
  else:
    try:
      with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError) as e:
      raise ValueError(f"cannot read labels file {path}: {e}") from e
    if rows and not _is_number(rows[0][0]) and (len(rows) == 1 or _is_number(rows[1][0])):
      rows = rows[1:]  # a header (not the first of labels that are all names)
    wide = next((r for r, row in enumerate(rows) if len(row) != 1), None)
    if wide is not None:
      raise ValueError(f"labels file {path}: expected one label a line, line {wide + 1} has {len(rows[wide])} values")
    y = np.asarray([row[0].strip() for row in rows])
    if all(_is_number(v) for v in y):
      y = y.astype(np.float64)
  y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
  if y.ndim != 1:
    raise ValueError(f"labels file {path}: expected one label per row, got an array of shape {y.shape}")
  if len(y) != n:
    raise ValueError(f"labels file {path} has {len(y)} labels but {what} has {n} rows")
  if not np.issubdtype(y.dtype, np.integer):
    numeric = _real(y.dtype) and y.dtype != np.bool_
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y))) if numeric else np.arange(len(y))
    if bad.size:
      raise ValueError(f"labels file {path} holds non-integer labels, e.g. {y[bad[0]].item()!r} on row {bad[0] + 1}: "
                       "labels must be integers (class names: number them 0, 1, ...)")
  return y.astype(np.int64)


def with_labels(data, path, *, what: str | None = None):
  """``data`` (a :class:`Dataset` or a :class:`jaxclust.data.stream.Source`) with its labels read from ``path``
  (:func:`read_labels`; ``what`` names the data in its errors), replacing any it had."""
  n = data.x.shape[0] if isinstance(data, Dataset) else data.n
  y = read_labels(path, n, what=what or f"dataset {os.fspath(data.name)!r}")
  if isinstance(data, Dataset):
    return data._replace(y=y)
  return dataclasses.replace(data, labels=y, label_key="")
