"""tf.data input: shuffled batches of a host dataset, assembled into global arrays on a mesh.

Every process builds the same shuffled order of row indices from the seed (tf.data's seeded
shuffle is deterministic), cuts it into global batches, and reads only its own slice of each
batch: ``global_batch // process_count`` rows. The slices become one global ``jax.Array`` per
batch with ``jax.make_array_from_process_local_data`` (big_vision's and flax's pattern), so the
same code runs on one host or many, and the batches do not depend on the number of processes.
The last batch of a pass is padded (row 0, mask False) instead of dropped, so every row is seen.

TensorFlow is imported here only, on first use, and never sees a GPU: the core of jaxclust runs
where TensorFlow is not installed.
"""

from __future__ import annotations

import functools
import os
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@functools.cache
def tensorflow():
  """TensorFlow, imported on first use with its GPUs hidden (JAX owns the accelerators)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    import tensorflow as tf
  except ImportError as e:
    raise ValueError("input='tf.data' needs TensorFlow (pip install tensorflow-cpu); "
                     "input='device' needs no TensorFlow") from e
  tf.config.set_visible_devices([], "GPU")
  return tf


def batches(x: np.ndarray, *, batch_size: int, seed: int, mesh: Mesh, steps: int | None = None,
            prefetch: int = 2) -> Iterator[dict]:
  """Shuffled batches ``{"x": [b, ...], "index": [b] int32, "mask": [b] bool}`` as global arrays.

  Args:
    x: the whole dataset ``[n, ...]`` on the host, the same on every process.
    batch_size: the global batch, divisible by the number of processes and of mesh devices.
    seed: the shuffle seed; passes after the first reshuffle with seeds derived from it.
    mesh: batches are split over its "data" axis.
    steps: how many batches to yield; None: one pass over the data (``ceil(n / batch_size)``).
      More than a pass continues into freshly shuffled passes.
    prefetch: batches prepared ahead by tf.data's background threads.
  """
  tf = tensorflow()
  n = x.shape[0]
  processes, me = jax.process_count(), jax.process_index()
  if batch_size % processes or batch_size % mesh.size:
    raise ValueError(f"batch_size={batch_size} must be divisible by the {processes} processes and the "
                     f"{mesh.size} devices")
  per_pass = -(-n // batch_size)
  steps = per_pass if steps is None else steps
  local = batch_size // processes
  rows = tf.constant(x)

  def one_pass(pass_index):
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed + 1_000_003 * pass_index, reshuffle_each_iteration=False)
    return order.batch(batch_size)

  def pad_and_slice(index):
    valid = tf.shape(index)[0]
    index = tf.pad(index, [[0, batch_size - valid]])
    mask = tf.range(batch_size) < valid
    index, mask = index[me * local:(me + 1) * local], mask[me * local:(me + 1) * local]
    return {"x": tf.gather(rows, index), "index": tf.cast(index, tf.int32), "mask": mask}

  passes = -(-steps // per_pass)
  data = (tf.data.Dataset.range(passes).flat_map(one_pass).take(steps)
          .map(pad_and_slice, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(prefetch))
  sharding = NamedSharding(mesh, P("data"))
  for batch in data.as_numpy_iterator():
    yield {key: jax.make_array_from_process_local_data(sharding, value, (batch_size, *value.shape[1:]))
           for key, value in batch.items()}
