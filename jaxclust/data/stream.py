"""Streaming tf.data input: images read, augmented on the host and batched, never held in memory whole.

For datasets that do not fit in host or device memory (ImageNet: 1.28M JPEGs of varying sizes),
and for accelerators whose training step should not share the chip with augmentation. A source is
either a prepared tensorflow-datasets name, ``"tfds:NAME[:SPLIT]"`` (read per process with
``tfds.split_for_jax_process``, files and records shuffled per epoch), an image folder (its files read,
decoded and resized by :mod:`jaxclust.data.folders`, as an array's rows are read), or an in-memory array
``[n, H, W, C]`` (a process reads its own ``1 / process_count`` of the shuffled rows).

Each process augments its share of a global batch (``batch_size // process_count`` images) and the
shares become one global ``jax.Array`` per crop size with ``jax.make_array_from_process_local_data``,
as in :mod:`jaxclust.data.pipeline`. An epoch is ``n // batch_size`` full batches (the remainder is
dropped, as the reference SwAV loader does). Views are a function of (seed, epoch, position in the
process's stream), so a resumed epoch sees the same views as the original one.

TensorFlow is imported here only, on first use, with its GPUs hidden.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxclust.data import augment_tf
from jaxclust.data.pipeline import tensorflow


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the rows come from: ``array`` (``[n, ...]``: images ``[n, H, W, C]`` in [0, 1], or feature rows),
  the image ``files`` of a folder (read at ``shape``), or a tfds ``name`` and ``split`` of images.
  ``channels`` is 0 for rows that are not images. ``labels``: the rows' labels in dataset order, where known
  without reading the rows (arrays, folders, a ``--labels`` file); a tfds dataset's come with its records."""
  n: int
  channels: int
  array: np.ndarray | None = None
  labels: np.ndarray | None = None
  name: str = ""
  split: str = "train"
  data_dir: str | None = None
  label_key: str = "label"
  shape: tuple | None = None  # a tfds dataset's image shape, None when its images differ in size
  files: np.ndarray | None = None  # [n] paths of an image folder's images
  info: dict = dataclasses.field(default_factory=dict)  # as sources.Dataset.info

  @property
  def y(self) -> np.ndarray | None:
    """The labels, as :attr:`jaxclust.data.sources.Dataset.y`."""
    return self.labels


def open_source(dataset, *, data_dir=None, image_size: int = 0, skip_bad_files: bool = False) -> Source:
  """A :class:`Source` for ``"tfds:NAME[:SPLIT]"``, an image folder (``image_size`` and ``skip_bad_files`` as
  in :func:`jaxclust.data.folders.source`), or an already loaded ``jaxclust.data.sources.Dataset``."""
  if not isinstance(dataset, str):
    x = np.asarray(dataset.x)
    if x.ndim < 2:
      raise ValueError(f"streaming needs rows [n, ...]; got an array of shape {x.shape}")
    return Source(n=x.shape[0], channels=x.shape[-1] if x.ndim == 4 else 0, array=x, labels=dataset.y,
                  name=dataset.name, info=dict(dataset.info))
  from jaxclust.data import sources
  if sources.is_folder(dataset):
    from jaxclust.data import folders
    return folders.source(dataset, image_size=image_size, skip_bad_files=skip_bad_files)
  if not dataset.startswith("tfds:"):
    raise ValueError(f"dataset={dataset!r}: streaming reads 'tfds:NAME[:SPLIT]' datasets, image folders or "
                     "loaded arrays")
  import tensorflow_datasets as tfds
  tensorflow()
  from jaxclust.data.sources import tfds_name
  name, split, label_key = tfds_name(dataset)
  try:
    data, info = tfds.load(name, split=split, data_dir=data_dir, download=False, with_info=True)
  except Exception as e:  # tfds raises several types (DatasetNotFoundError, AssertionError, ...)
    raise ValueError(f"tensorflow-datasets {name!r} (split {split!r}) is not prepared under "
                     f"{data_dir or '~/tensorflow_datasets'} and jaxclust never downloads: prepare it with "
                     f"`tfds build {name}` ({type(e).__name__})") from e
  try:
    n = info.splits[split].num_examples
  except KeyError:  # no split metadata (tfds.testing.mock_data): count the records once
    n = int(data.reduce(0, lambda count, _: count + 1))
  if n == 0:
    raise ValueError(f"tensorflow-datasets {name!r} split {split!r} is empty")
  shape = tuple(info.features["image"].shape)
  return Source(n=n, channels=shape[-1], name=name, split=split, data_dir=data_dir,
                label_key=label_key if label_key in info.features else "",
                shape=None if None in shape else shape, info={"scaling": "uint8 images / 255"})


def _records(source: Source, seed: int | None):
  """``{"image": float32 [H, W, C] in [0, 1], "label"?}`` of this process's share, shuffled when ``seed`` is set."""
  tf = tensorflow()
  processes, me = jax.process_count(), jax.process_index()
  if source.array is not None or source.files is not None:
    order = tf.data.Dataset.range(source.n)
    if seed is not None:
      order = order.shuffle(source.n, seed=seed, reshuffle_each_iteration=False)
    labels = None if source.labels is None else tf.constant(source.labels)
    if source.array is not None:
      rows = tf.constant(source.array)
      read = lambda i: tf.gather(rows, i)
    else:  # an image folder: its files, decoded and resized as when it is loaded whole
      from jaxclust.data import folders
      files, size = tf.constant(source.files), tuple(source.shape[:2])
      read = lambda i: folders.decode(tf.gather(files, i), size)
    return order.shard(processes, me).map(
        lambda i: {"image": read(i), **({} if labels is None else {"label": tf.gather(labels, i)}),
                   **({} if seed is not None else {"index": i})},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  import tensorflow_datasets as tfds
  split = tfds.split_for_jax_process(source.split) if processes > 1 else source.split
  read = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
  data = tfds.load(source.name, split=split, data_dir=source.data_dir, download=False,
                   shuffle_files=seed is not None, read_config=read)
  if seed is not None:
    data = data.shuffle(10_000, seed=seed, reshuffle_each_iteration=False)
  else:  # in order: the split's row of each record (this process reads one contiguous block of it)
    data = data.enumerate(start=_block_start(data))

  def convert(*record):
    i, example = record if seed is None else (None, record[0])
    out = {"image": tf.image.convert_image_dtype(example["image"], tf.float32)}
    if source.label_key:
      out["label"] = example[source.label_key]
    if i is not None:
      out["index"] = i
    return out

  return data.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _block_start(data) -> int:
  """Where this process's block of a split starts: ``tfds.split_for_jax_process`` gives the processes
  consecutive blocks in process order, so it is the number of records of the processes before it."""
  if jax.process_count() == 1:
    return 0
  from jax.experimental import multihost_utils
  count = int(data.cardinality())
  if count < 0:  # unknown: count the records once
    count = int(data.reduce(0, lambda c, _: c + 1))
  counts = np.asarray(multihost_utils.process_allgather(np.int64(count))).reshape(-1)
  return int(counts[:jax.process_index()].sum())


def _local(batch_size: int, mesh: Mesh) -> int:
  processes = jax.process_count()
  if batch_size % processes or batch_size % mesh.size:
    raise ValueError(f"batch_size={batch_size} must be divisible by the {processes} processes and the "
                     f"{mesh.size} devices")
  return batch_size // processes


def _row_shape(source: Source) -> tuple:
  """The shape of one row of a source whose rows all have one shape (arrays; tfds images of one size)."""
  if source.array is not None:
    return tuple(source.array.shape[1:])
  if source.files is not None:
    return tuple(source.shape)
  import tensorflow_datasets as tfds
  shape = tfds.builder(source.name, data_dir=source.data_dir).info.features["image"].shape
  if None in shape:
    raise ValueError(f"tensorflow-datasets {source.name!r} has images of varying sizes {shape}; this method needs "
                     "rows of one shape")
  return tuple(shape)


def row_batches(source: Source, *, batch_size: int, seed: int, epoch: int, mesh: Mesh, steps: int | None = None,
                prefetch: int = 2) -> Iterator[dict]:
  """Shuffled batches ``{"x": [B, ...], "index": [B] int32, "mask": [B] bool}`` of a source's rows as they are,
  as global arrays: one pass over every row (the last batch padded and masked), or ``steps`` batches
  (continuing into the next shuffled passes). Each process reads only its own share of the records
  (``tfds.split_for_jax_process`` for tfds, its slice of every global batch for arrays); ``index`` is a
  row's position in the dataset. The order depends only on (seed, epoch), as a resumed epoch needs.
  """
  from jaxclust.data import pipeline
  epoch_seed = seed * 1_000_003 + epoch
  if source.array is not None:  # every process builds the same global order and reads its slice
    yield from pipeline.batches(source.array, batch_size=batch_size, seed=epoch_seed, mesh=mesh, steps=steps,
                                prefetch=prefetch)
    return
  tf = tensorflow()
  local = _local(batch_size, mesh)
  blocks = -(-source.n // jax.process_count())  # the longest block a process reads (split_for_jax_process)
  per_pass = -(-blocks // local)
  steps = per_pass if steps is None else steps
  row = _row_shape(source)

  def one_pass(p):
    records = _records(source, None)  # in order, with each record's index
    records = records.shuffle(10_000, seed=epoch_seed + 7_919 * p, reshuffle_each_iteration=False)
    records = records.map(lambda e: {"x": tf.ensure_shape(e["image"], row), "index": tf.cast(e["index"], tf.int32),
                                     "mask": True})
    pad = tf.data.Dataset.from_tensors({"x": tf.zeros(row), "index": tf.constant(0, tf.int32),
                                        "mask": False}).repeat(per_pass * local)
    return records.concatenate(pad).take(per_pass * local)  # the same batch count on every process

  data = (tf.data.Dataset.range(-(-steps // per_pass)).flat_map(one_pass).batch(local).take(steps)
          .prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  for batch in data.as_numpy_iterator():
    yield {k: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:])) for k, v in batch.items()}


def multi_crop_batches(source: Source, *, crops, batch_size: int, seed: int, epoch: int, mesh: Mesh,
                       prefetch: int = 2, **view_options) -> Iterator[list]:
  """One epoch of SwAV multi-crop batches: lists of global ``[batch_size, size, size, C]`` arrays.

  ``crops`` and ``view_options`` (``flip_p``, ``blur_p``, ...) as in :func:`augment_tf.multi_crop`.
  Yields ``source.n // batch_size`` batches.
  """
  tf = tensorflow()
  local = _local(batch_size, mesh)
  steps = source.n // batch_size
  if steps == 0:
    raise ValueError(f"batch_size={batch_size} is larger than the dataset ({source.n} images)")
  epoch_seed = seed * 1_000_003 + epoch
  stream = _records(source, epoch_seed).enumerate()

  def views(i, example):
    return augment_tf.multi_crop(example["image"], tf.stack([tf.cast(epoch_seed, tf.int64), i]), crops=crops,
                                 **view_options)

  data = (stream.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(local, drop_remainder=True).take(steps).prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  for batch in data.as_numpy_iterator():
    yield [jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:])) for v in batch]


def indexed_multi_crop_batches(source: Source, *, crops, batch_size: int, seed: int, epoch: int, mesh: Mesh,
                               prefetch: int = 2, **view_options) -> Iterator[dict]:
  """One shuffled epoch of multi-crop batches that say which image each row is, for a method that keeps
  a row per image on the devices (DeepCluster-v2's memory bank): ``{"crops": (global [batch_size, size,
  size, C], ...), "index": [batch_size] int32, "mask": [batch_size] bool}``.

  Unlike :func:`multi_crop_batches` (SwAV, which drops the remainder) every image is seen once: the last
  batch is padded with zero crops (index 0, mask False), as the on-device epochs pad theirs, so no bank
  row goes stale. ``index`` is an image's row in the dataset. An in-memory array is shuffled whole and
  dealt to the processes; a tfds split is read in order, each process its own block, and shuffled in a
  10,000-record buffer (its records were shuffled when the dataset was prepared), as :func:`row_batches`
  reads it. An image's crops depend only on (seed, epoch, its index), not on its position or the number
  of processes, so a resumed epoch sees the same crops. ``crops`` and ``view_options`` as in
  :func:`augment_tf.multi_crop`.
  """
  tf = tensorflow()
  local = _local(batch_size, mesh)
  processes, me = jax.process_count(), jax.process_index()
  epoch_seed = seed * 1_000_003 + epoch
  if source.array is not None:
    rows = tf.constant(source.array)
    records = (tf.data.Dataset.range(source.n).shuffle(source.n, seed=epoch_seed, reshuffle_each_iteration=False)
               .shard(processes, me).map(lambda i: {"image": tf.gather(rows, i), "index": i}))
  else:
    records = _records(source, None).shuffle(10_000, seed=epoch_seed, reshuffle_each_iteration=False)
  # Every process must run as many steps: its share is padded to the longest one's batches.
  steps = -(-(-(-source.n // processes)) // local)

  def views(example):
    index = tf.cast(example["index"], tf.int64)
    return {"crops": augment_tf.multi_crop(example["image"], tf.stack([tf.cast(epoch_seed, tf.int64), index]),
                                           crops=crops, **view_options),
            "index": tf.cast(index, tf.int32), "mask": True}

  zeros = tuple(tf.zeros((int(size), int(size), source.channels)) for count, size, _ in crops
                for _ in range(int(count)))
  pad = tf.data.Dataset.from_tensors({"crops": zeros, "index": tf.constant(0, tf.int32), "mask": False})
  data = (records.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .concatenate(pad.repeat(steps * local)).take(steps * local).batch(local).prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  glob = lambda v: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:]))
  for batch in data.as_numpy_iterator():
    yield {"crops": tuple(glob(v) for v in batch["crops"]), "index": glob(batch["index"]), "mask": glob(batch["mask"])}


def eval_batches(source: Source, *, size: int | None, batch_size: int, mesh: Mesh,
                 prefetch: int = 2) -> Iterator[dict]:
  """The whole dataset once, for prediction: ``{"image", "mask", "index", "label"}`` global arrays
  (``index``: each row's position in the dataset; in order on one process, while on several each
  batch holds the processes' shares in turn, so :func:`predict_in_order` sorts by it; ``label``: 0
  without labels).

  Images whose shorter side is not ``size`` are resized so that it is ``size / 0.875`` and centre-cropped
  to ``size x size`` (the standard ImageNet evaluation transform); with ``size`` None the rows are read as
  they are (rows of one shape). The last batch is padded and masked.
  """
  tf = tensorflow()
  local = _local(batch_size, mesh)

  def transform(example):
    image = example["image"]
    shape = tf.shape(image)
    short = tf.minimum(shape[0], shape[1]) if size is not None else None

    def resize_and_crop():
      scale = tf.cast(tf.math.ceil(size / 0.875), tf.float32) / tf.cast(short, tf.float32)
      new = tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
      resized = tf.image.resize(image, new, method="bilinear", antialias=True)
      return tf.image.resize_with_crop_or_pad(resized, size, size)

    if size is not None:
      image = tf.ensure_shape(tf.cond(short == size, lambda: tf.image.resize_with_crop_or_pad(image, size, size),
                                      resize_and_crop), [size, size, source.channels])
    out = {"image": image, "mask": True}
    if "label" in example:
      out["label"] = tf.cast(example["label"], tf.int64)
    out["index"] = tf.cast(example["index"], tf.int64)
    return out

  data = _records(source, None).map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  data = data.batch(local).prefetch(prefetch)
  # Every process must build the same number of global batches: pad with masked-out ones.
  steps = -(-(-(-source.n // jax.process_count())) // local)
  sharding = NamedSharding(mesh, P("data"))
  row = (size, size, source.channels) if size is not None else _row_shape(source)
  shapes = {"image": (row, np.float32), "mask": ((), bool), "label": ((), np.int64), "index": ((), np.int64)}
  batches = data.as_numpy_iterator()
  for _ in range(steps):
    batch = next(batches, {"mask": np.zeros((0,), bool)})
    pad = local - batch["mask"].shape[0]
    batch = {k: np.concatenate([batch[k], np.zeros((pad, *shape), dtype)]) if k in batch else
             np.zeros((local, *shape), dtype) for k, (shape, dtype) in shapes.items()}
    yield {k: jax.make_array_from_process_local_data(sharding, batch[k], (batch_size, *batch[k].shape[1:]))
           for k in shapes}


def predict_in_order(fn, source: Source, *, size: int | None, batch_size: int, mesh: Mesh):
  """``fn(images)`` (a tuple of ``[B, ...]`` arrays) for every image of ``source`` under the evaluation
  transform of :func:`eval_batches`: the outputs as numpy in the dataset's row order on any number of
  processes, the true labels in that order (``None`` without), and the first batch's images."""
  from jaxclust.parallel import fetch
  outputs, index, truth, first = [], [], [], None
  for batch in eval_batches(source, size=size, batch_size=batch_size, mesh=mesh):
    keep = fetch(batch["mask"])
    outputs.append([fetch(a)[keep] for a in fn(batch["image"])])
    index.append(fetch(batch["index"])[keep])
    truth.append(fetch(batch["label"])[keep])
    if first is None:
      first = fetch(batch["image"])[keep]
  index = np.concatenate(index)
  order = np.argsort(index, kind="stable")
  if not np.array_equal(index[order], np.arange(source.n)):
    raise RuntimeError(f"evaluation read {index.size} rows, not each of the {source.n} rows once")
  outputs = tuple(np.concatenate(column)[order] for column in zip(*outputs))
  if source.labels is not None:  # known in dataset order (an array's, a folder's, a --labels file's)
    return outputs, np.asarray(source.labels), first
  return outputs, np.concatenate(truth)[order] if source.label_key and source.array is None else None, first


def view_batches(x: np.ndarray, *, views, batch_size: int, seed: int, epoch: int, mesh: Mesh, neighbors=None,
                 prefetch: int = 2) -> Iterator[dict]:
  """One shuffled epoch of host-made view pairs of the in-memory images ``x`` ``[n, H, W, C]``.

  Yields ``{"views": (first, second), "index": [B] int32, "mask": [B] bool}`` as global arrays; every
  image appears once, the last batch padded (row 0) and masked. ``views`` holds two functions
  ``(image, seed) -> view`` (:mod:`jaxclust.data.augment_tf`). With ``neighbors`` ``[n, k + 1]`` (column 0
  the image itself, as mined), the second view is of one of the image's k neighbours, drawn uniformly
  (SCAN). Every process builds the same order and makes the views of its own slice of each batch.
  """
  tf = tensorflow()
  n = x.shape[0]
  local, me = _local(batch_size, mesh), jax.process_index()
  epoch_seed = seed * 1_000_003 + epoch
  rows = tf.constant(np.asarray(x, np.float32))
  table = None if neighbors is None else tf.constant(np.asarray(neighbors, np.int64))
  first, second = views

  def pad_and_slice(b, index):
    valid = tf.shape(index)[0]
    index = tf.pad(index, [[0, batch_size - valid]])
    mask = tf.range(batch_size) < valid
    position = b * batch_size + tf.range(batch_size, dtype=tf.int64)
    part = slice(me * local, (me + 1) * local)
    return tf.data.Dataset.from_tensor_slices((index[part], mask[part], position[part]))

  def make(index, mask, position):
    s = tf.unstack(tf.random.experimental.stateless_split(tf.stack([tf.cast(epoch_seed, tf.int64), position]), 3))
    other = index
    if table is not None:
      column = tf.random.stateless_uniform([], s[2], 1, table.shape[1], dtype=tf.int64)
      other = table[index, column]
    return {"views": (first(tf.gather(rows, index), s[0]), second(tf.gather(rows, other), s[1])),
            "index": tf.cast(index, tf.int32), "mask": mask}

  order = tf.data.Dataset.range(n).shuffle(n, seed=epoch_seed, reshuffle_each_iteration=False).batch(batch_size)
  data = (order.enumerate().flat_map(pad_and_slice)
          .map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(local).prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  glob = lambda v: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:]))
  for batch in data.as_numpy_iterator():
    yield {"views": tuple(glob(v) for v in batch["views"]), "index": glob(batch["index"]), "mask": glob(batch["mask"])}


def source_view_batches(source: Source, *, views, batch_size: int, seed: int, epoch: int, mesh: Mesh,
                        neighbors=None, prefetch: int = 2) -> Iterator[dict]:
  """:func:`view_batches` of a :class:`Source`: one shuffled epoch of host-made view pairs, every image once
  (the last batch padded and masked), as ``{"views": (first, second), "index": [B] int32, "mask": [B] bool}``
  global arrays. ``views`` holds two functions ``(image, seed) -> view``, both applied to the same image.

  An in-memory array is read by :func:`view_batches` (the same batches and views), and only it takes
  ``neighbors``: a view of one of an image's neighbours needs that neighbour's row at random, which a
  stream does not give. A tfds split is read as :func:`row_batches` reads it: each process its own block
  in order, shuffled in a 10,000-record buffer, padded to as many batches as the longest block. The seeds
  of the views at global position ``p`` of an epoch come from (seed, epoch, p) as in :func:`view_batches`,
  so a resumed epoch sees the same views.
  """
  if source.array is not None:
    yield from view_batches(source.array, views=views, batch_size=batch_size, seed=seed, epoch=epoch, mesh=mesh,
                            neighbors=neighbors, prefetch=prefetch)
    return
  if neighbors is not None:
    raise ValueError(f"{source.name!r} is streamed: views of an image's neighbours need their rows at random, "
                     "which only an in-memory array gives")
  tf = tensorflow()
  local, me = _local(batch_size, mesh), jax.process_index()
  epoch_seed = seed * 1_000_003 + epoch
  steps = -(-(-(-source.n // jax.process_count())) // local)  # the longest block's batches, on every process
  row = _row_shape(source)
  first, second = views
  records = _records(source, None).shuffle(10_000, seed=epoch_seed, reshuffle_each_iteration=False).map(
      lambda e: {"image": tf.ensure_shape(e["image"], row), "index": tf.cast(e["index"], tf.int64), "mask": True})
  pad = tf.data.Dataset.from_tensors({"image": tf.zeros(row), "index": tf.constant(0, tf.int64), "mask": False})

  def make(at, example):  # ``at``: the record's place in this process's stream
    position = (at // local) * batch_size + me * local + at % local
    s = tf.unstack(tf.random.experimental.stateless_split(tf.stack([tf.cast(epoch_seed, tf.int64), position]), 3))
    return {"views": (first(example["image"], s[0]), second(example["image"], s[1])),
            "index": tf.cast(example["index"], tf.int32), "mask": example["mask"]}

  data = (records.concatenate(pad.repeat(steps * local)).take(steps * local).enumerate()
          .map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(local).prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  glob = lambda v: jax.make_array_from_process_local_data(sharding, v, (batch_size, *v.shape[1:]))
  for batch in data.as_numpy_iterator():
    yield {"views": tuple(glob(v) for v in batch["views"]), "index": glob(batch["index"]), "mask": glob(batch["mask"])}


def classes(source: Source) -> int | None:
  """How many classes a source's labels have (a tfds label feature's ``num_classes``, read from the dataset's
  metadata), or None without labels."""
  if source.labels is not None:
    return len(np.unique(source.labels))
  if source.array is not None or source.files is not None or not source.label_key:
    return None
  import tensorflow_datasets as tfds
  feature = tfds.builder(source.name, data_dir=source.data_dir).info.features[source.label_key]
  return getattr(feature, "num_classes", None)
