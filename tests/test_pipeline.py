"""tf.data batches: every row once per pass, deterministic, split over the mesh."""

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxclust import parallel
from jaxclust.data import pipeline


def collect(x, **kwargs):
  return [{key: np.asarray(value) for key, value in batch.items()}
          for batch in pipeline.batches(x, mesh=parallel.make_mesh(), **kwargs)]


def test_one_pass_sees_every_row_once_with_padding_masked():
  x = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
  batches = collect(x, batch_size=16, seed=0)
  assert len(batches) == 7  # ceil(100 / 16): the last batch is padded, not dropped
  index = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(np.sort(index), np.arange(100))
  assert not np.array_equal(index, np.arange(100))  # shuffled
  assert batches[-1]["mask"].sum() == 100 - 6 * 16
  for b in batches:
    np.testing.assert_array_equal(b["x"], x[b["index"]])  # rows match their indices, padding included
    assert b["x"].shape == (16, 3) and b["index"].dtype == np.int32 and b["mask"].dtype == bool


def test_batches_are_sharded_over_the_mesh_and_deterministic():
  x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
  first = next(pipeline.batches(x, batch_size=32, seed=3, mesh=parallel.make_mesh()))
  assert first["x"].sharding.spec == P("data") and len(first["x"].sharding.device_set) == 8
  again, other = collect(x, batch_size=32, seed=3), collect(x, batch_size=32, seed=4)
  np.testing.assert_array_equal(np.asarray(first["index"]), again[0]["index"])
  assert not np.array_equal(again[0]["index"], other[0]["index"])


def test_more_steps_than_a_pass_reshuffle():
  x = np.zeros((40, 2), np.float32)
  batches = collect(x, batch_size=8, seed=1, steps=12)  # 5 per pass: 2 passes and 2 batches of a third
  assert len(batches) == 12
  first, second = (np.concatenate([b["index"] for b in batches[i:i + 5]]) for i in (0, 5))
  np.testing.assert_array_equal(np.sort(first), np.arange(40))
  np.testing.assert_array_equal(np.sort(second), np.arange(40))
  assert not np.array_equal(first, second)


def test_batch_not_divisible_by_devices_is_refused():
  with pytest.raises(ValueError, match="batch_size=12 must be divisible by the 1 processes and the 8 devices"):
    next(pipeline.batches(np.zeros((40, 2), np.float32), batch_size=12, seed=0, mesh=parallel.make_mesh()))
