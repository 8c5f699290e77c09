"""Image folders: PNG/JPEG files of any size, read and resized through tf.data, loaded whole or streamed.

A folder holds its images at the top (no labels) or in class subfolders, ``root/CLASS/**/IMAGE``, whose
sorted names are the labels 0..C-1 (for evaluation only; the mapping is in ``info["classes"]``, which fit
logs and writes to summary.json). Hidden files and folders (``.name``) and files that are not images (by
extension: :data:`EXTENSIONS`) are ignored; subfolders without images are not classes. The rows are the
images in sorted path order.

Every image is read as RGB, as torchvision's ``ImageFolder`` and Keras' ``image_dataset_from_directory``
read them: a grayscale image's channel is repeated three times, an alpha channel dropped, so a folder
mixing grayscale and colour images has one channel count, 3. Pixels are scaled to [0, 1] (8-bit / 255,
16-bit / 65535). Images are resized (bilinear, antialiased; the aspect ratio is not kept) to one size:
``image_size`` x ``image_size``, or with ``image_size=0`` the height and width most of :data:`SAMPLE`
images spread over the folder have (read from their headers, so :func:`describe` stays cheap: a listing
and 64 headers, what the recipe is chosen by).

Every file is decoded once when the folder is opened, in parallel and keeping nothing when streamed: a
file that cannot be read or decoded is an error naming it, or with ``skip_bad_files`` left out and
counted (``info["skipped_files"]``), so the rows never change while a run trains on them.

TensorFlow is imported on first use (:func:`jaxclust.data.pipeline.tensorflow`); :func:`listing` and
:func:`describe` need only Pillow.
"""

from __future__ import annotations

import collections
import os
from typing import NamedTuple

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # what tf.io.decode_image reads
CHANNELS = 3
SAMPLE = 64  # images whose headers set the size (image_size=0)
SCALING = "image files decoded to [0, 1] (8-bit / 255, 16-bit / 65535)"


class Listing(NamedTuple):
  """The images of a folder: ``files`` in sorted path order, their ``labels`` (None without class
  subfolders), the ``classes`` (label ``i`` is ``classes[i]``) and how many other files were ignored."""
  files: tuple[str, ...]
  labels: np.ndarray | None
  classes: tuple[str, ...]
  ignored: int


def _is_image(name: str) -> bool:
  return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def _walk(folder: str) -> tuple[list[str], int]:
  """The images under ``folder`` at any depth, sorted by path, and the count of other files."""
  images, other = [], 0
  for parent, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
      if _is_image(name):
        images.append(os.path.join(parent, name))
      elif not name.startswith("."):
        other += 1
  return images, other


def listing(root) -> Listing:
  """The images of the folder ``root`` (see the module's docstring for the layout).

  Raises:
    ValueError: an empty folder, a folder without images, or one with images both at its top and in
      subfolders (is the top level a class?).
  """
  root = os.fspath(root)
  try:
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
  except OSError as e:
    raise ValueError(f"cannot read folder {root}: {e.strerror}") from e
  if not entries:
    raise ValueError(f"image folder {root} is empty")
  top = [os.path.join(root, e) for e in entries if os.path.isfile(os.path.join(root, e)) and _is_image(e)]
  ignored = sum(os.path.isfile(os.path.join(root, e)) and not _is_image(e) for e in entries)
  classes, files, labels = [], [], []
  for entry in entries:
    if os.path.isdir(os.path.join(root, entry)):
      images, other = _walk(os.path.join(root, entry))
      ignored += other
      if images:
        labels += [len(classes)] * len(images)
        classes.append(entry)
        files += images
  if top and classes:
    raise ValueError(f"image folder {root} has images both at its top level (e.g. {os.path.basename(top[0])}) "
                     f"and in subfolders ({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}): put "
                     "every image in a class subfolder, or none")
  if not top and not classes:
    raise ValueError(f"image folder {root} holds no images ({', '.join(EXTENSIONS)}), only "
                     f"{_count(ignored, 'other file')}")
  if top:
    return Listing(tuple(top), None, (), ignored)
  return Listing(tuple(files), np.asarray(labels, np.int64), tuple(classes), ignored)


def read_size(files, image_size=0) -> tuple[int, int]:
  """``(height, width)`` the images are read at: ``(image_size, image_size)`` (or ``image_size`` itself, a
  ``(height, width)`` pair: predict reads a folder at a run's size), or with ``image_size=0`` the size most
  of :data:`SAMPLE` images spread over ``files`` have (ties: the first met), read from their headers with
  Pillow. A sampled file that cannot be opened is passed over (the decoding names it)."""
  if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(int(s) >= 1 for s in image_size):
    return int(image_size[0]), int(image_size[1])
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 0:
    raise ValueError(f"image_size={image_size!r} must be an integer >= 0 (0: the size most images have)")
  if image_size:
    return int(image_size), int(image_size)
  from PIL import Image
  picks = sorted(set(np.linspace(0, len(files) - 1, min(len(files), SAMPLE)).round().astype(int).tolist()))
  sizes = collections.Counter()
  for i in picks:
    try:
      with Image.open(files[i]) as image:
        sizes[(image.height, image.width)] += 1
    except Exception:  # pylint: disable=broad-except  # Pillow raises many types; decoding names the file
      continue
  if not sizes:
    raise ValueError(f"none of the {len(picks)} images sampled for the size could be read, e.g. {files[picks[0]]}; "
                     "set image_size")
  return sizes.most_common(1)[0][0]


def describe(root, *, image_size: int = 0) -> tuple[int, tuple[int, int, int]]:
  """``(images, (height, width, 3))`` of the folder ``root``, from its listing and a few headers."""
  found = listing(root)
  return len(found.files), (*read_size(found.files, image_size), CHANNELS)


def _decode_raw(path):
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  return tf.io.decode_image(tf.io.read_file(path), channels=CHANNELS, dtype=tf.float32, expand_animations=False)


def decode(path, size):
  """The image file ``path`` (a string tensor) as float32 ``[*size, 3]`` in [0, 1] (a TensorFlow function)."""
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  image = _decode_raw(path)
  same = tf.reduce_all(tf.shape(image)[:2] == tf.constant(size))
  image = tf.cond(same, lambda: image, lambda: tf.image.resize(image, size, method="bilinear", antialias=True))
  return tf.ensure_shape(image, (*size, CHANNELS))


def _decoded(files, size, keep: bool):
  """Every file decoded once in parallel: ``(indices of the good files, their images or None)``."""
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  records = tf.data.Dataset.from_tensor_slices(list(files)).enumerate()
  if keep:
    records = records.map(lambda i, path: (i, decode(path, size)), num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)
  else:  # the decoding runs (the decoded shape is known only then; the resized one statically), the pixels are dropped
    records = records.map(lambda i, path: (i, tf.shape(_decode_raw(path))), num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)
  index, images = [], []
  with _quiet_stderr():  # libjpeg prints its own line for a corrupt JPEG, besides the error we report
    for i, image in records.ignore_errors().batch(256).prefetch(2).as_numpy_iterator():
      index.append(i)
      if keep:
        images.append(image)
  index = np.concatenate(index) if index else np.zeros((0,), np.int64)
  return index, (np.concatenate(images) if images else np.zeros((0, *size, CHANNELS), np.float32)) if keep else None


class _quiet_stderr:
  """Silences file descriptor 2 (C libraries' messages) for the duration of a ``with``."""

  def __enter__(self):
    self.saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)

  def __exit__(self, *exc):
    os.dup2(self.saved, 2)
    os.close(self.saved)


def _why(path) -> str:
  """Why TensorFlow cannot decode ``path``: the first line of its error, without the op's prefix."""
  from jaxclust.data.pipeline import tensorflow
  tf = tensorflow()
  try:
    with _quiet_stderr():
      _decode_raw(path)
  except Exception as e:  # pylint: disable=broad-except  # TensorFlow's error types, reported as text
    text = (getattr(e, "message", None) or str(e)).split("\n")[0]
    return text.split("}} ")[-1].split(" [Op:")[0].strip().rstrip(".") or type(e).__name__
  return "decoded alone, but not in the pass over the folder"


def _read(root, found: Listing, size, skip_bad_files: bool, keep: bool):
  """The good files of ``found`` decoded: ``(files, labels, images or None, info)``; a bad file is an error
  naming it unless ``skip_bad_files``."""
  index, images = _decoded(found.files, size, keep)
  good = np.zeros(len(found.files), bool)
  good[index] = True
  bad = np.flatnonzero(~good)
  if bad.size and not skip_bad_files:
    more = f" (and {_count(bad.size - 1, 'more file')} of {len(found.files)})" if bad.size > 1 else ""
    raise ValueError(f"image file {found.files[bad[0]]} cannot be read: {_why(found.files[bad[0]])}{more}; "
                     "remove it, or skip unreadable files with --skip-bad-files (skip_bad_files=True)")
  if bad.size == len(found.files):
    raise ValueError(f"image folder {root}: none of its {len(found.files)} images can be read, e.g. "
                     f"{found.files[bad[0]]}: {_why(found.files[bad[0]])}")
  files = tuple(np.asarray(found.files, object)[good])
  labels = None if found.labels is None else found.labels[good]
  info = {"scaling": SCALING, "image_size": list(size), "skipped_files": int(bad.size)}
  if found.classes:
    info["classes"] = list(found.classes)
  if bad.size:
    info["skipped_examples"] = [found.files[i] for i in bad[:5]]
  if found.ignored:
    info["ignored_files"] = found.ignored
  return files, labels, images, info


def load(root, *, image_size: int = 0, skip_bad_files: bool = False):
  """The folder ``root`` read whole: a :class:`jaxclust.data.sources.Dataset` of ``[n, H, W, 3]`` images."""
  from jaxclust.data import sources
  found = listing(root)
  size = read_size(found.files, image_size)
  _, labels, images, info = _read(root, found, size, skip_bad_files, keep=True)
  return sources.Dataset(images, labels, os.fspath(root), info)


def source(root, *, image_size: int = 0, skip_bad_files: bool = False):
  """The folder ``root`` as a :class:`jaxclust.data.stream.Source` read file by file (never held whole)."""
  from jaxclust.data import stream
  found = listing(root)
  size = read_size(found.files, image_size)
  files, labels, _, info = _read(root, found, size, skip_bad_files, keep=False)
  return stream.Source(n=len(files), channels=CHANNELS, files=np.asarray(files, str), labels=labels,
                       name=os.fspath(root), shape=(*size, CHANNELS), info=info)


def summary_line(info: dict) -> str:
  """What a run says in its log about the images it read from a folder."""
  height, width = info["image_size"]
  line = f"read as RGB at {height}x{width}"
  if "classes" in info:
    shown = ", ".join(f"{i}={name}" for i, name in enumerate(info["classes"][:20]))
    line += f"; labels from {len(info['classes'])} class folders: {shown}" + (", ..." if len(info["classes"]) > 20 else "")
  if info.get("skipped_files"):
    line += f"; skipped {_count(info['skipped_files'], 'unreadable file')} (e.g. {info['skipped_examples'][0]})"
  if info.get("ignored_files"):
    line += f"; ignored {_count(info['ignored_files'], 'non-image file')}"
  return line


def _count(n: int, what: str) -> str:
  return f"{n} {what}{'' if n == 1 else 's'}"
