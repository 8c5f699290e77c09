"""Sharded (8 fake CPU devices, see conftest) == single-device, for every kernel."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxclust
from jaxclust import parallel


def assert_same_kmeans(a, b):
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_allclose(np.asarray(a.centers), np.asarray(b.centers), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-5)
  assert int(a.n_iter) == int(b.n_iter)


@pytest.mark.parametrize("kwargs", [{}, {"n_init": 3}, {"spherical": True}, {"weighted": True}],
                         ids=["plain", "restarts", "spherical", "weighted"])
def test_kmeans(blobs, mesh, kwargs):
  x = blobs[0][:2400]
  kwargs = dict(kwargs)
  if kwargs.pop("weighted", False):
    kwargs["sample_weight"] = np.random.default_rng(0).uniform(0.1, 2, len(x)).astype(np.float32)
  single = jaxclust.kmeans(x, 8, rng=jax.random.key(3), **kwargs)
  sharded_kwargs = {k: parallel.shard_rows(v, mesh) if k == "sample_weight" else v for k, v in kwargs.items()}
  sharded = jaxclust.kmeans(parallel.shard_rows(x, mesh), 8, rng=jax.random.key(3), **sharded_kwargs)
  assert sharded.labels.sharding.spec == P("data")
  assert_same_kmeans(single, sharded)


def test_kmeans_reseeding(blobs, mesh):
  x = blobs[0][:2400]
  init = np.tile(x[:1], (8, 1)) + 1e-3 * np.arange(8)[:, None]
  single = jaxclust.kmeans(x, 8, rng=jax.random.key(0), init=init)
  sharded = jaxclust.kmeans(parallel.shard_rows(x, mesh), 8, rng=jax.random.key(0), init=init)
  assert_same_kmeans(single, sharded)


def test_minibatch_kmeans(blobs, mesh):
  x = blobs[0][:2400]
  single = jaxclust.minibatch_kmeans(x, 8, rng=jax.random.key(1), batch_size=128, n_steps=30)
  sharded = jaxclust.minibatch_kmeans(parallel.shard_rows(x, mesh), 8, rng=jax.random.key(1), batch_size=128, n_steps=30)
  assert_same_kmeans(single, sharded)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("with_query", [False, True])
def test_knn(mesh, metric, with_query):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1600, 16)).astype(np.float32)
  query = rng.normal(size=(400, 16)).astype(np.float32) if with_query else None
  single = jaxclust.knn(x, 9, query=query, metric=metric)
  sharded = jaxclust.knn(parallel.shard_rows(x, mesh), 9, query=query, metric=metric, db_chunk=64)
  assert sharded.indices.sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(single.indices), np.asarray(sharded.indices))
  np.testing.assert_allclose(np.asarray(single.values), np.asarray(sharded.values), rtol=1e-5, atol=1e-6)


def test_sinkhorn_global_batch(mesh):
  scores = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (256, 24)), jnp.float32)
  single = jaxclust.sinkhorn_knopp(scores)
  per_device = jax.shard_map(functools.partial(jaxclust.sinkhorn_knopp, axis_name="data"), mesh=mesh,
                             in_specs=P("data"), out_specs=P("data"))
  sharded = jax.jit(per_device)(parallel.shard_rows(scores, mesh))
  np.testing.assert_allclose(np.asarray(single), np.asarray(sharded), rtol=1e-5, atol=1e-8)
  # per-device normalization (the bug some libraries have) would differ:
  local = np.concatenate([np.asarray(jaxclust.sinkhorn_knopp(scores[i:i + 32])) for i in range(0, 256, 32)]) / 8
  assert np.abs(local - np.asarray(single)).max() > 1e-3


def test_confusion_matrix_on_sharded_labels(mesh):
  rng = np.random.default_rng(0)
  y_true, y_pred = rng.integers(0, 5, 800), rng.integers(0, 6, 800)
  cm = jaxclust.metrics.confusion_matrix(parallel.shard_rows(jnp.asarray(y_true), mesh),
                                         parallel.shard_rows(jnp.asarray(y_pred), mesh), n_true=5, n_pred=6)
  np.testing.assert_array_equal(np.asarray(cm), jaxclust.metrics.contingency(y_true, y_pred))


def test_label_free_metrics_on_sharded_arrays(digits, mesh):
  x, y = digits
  x, y = jnp.asarray(x[:1600]), jnp.asarray(y[:1600], jnp.int32)
  single = jaxclust.metrics.silhouette(x, y, k=10, sample_size=None)
  sharded = jaxclust.metrics.silhouette(parallel.shard_rows(x, mesh), parallel.shard_rows(y, mesh), k=10, sample_size=None)
  np.testing.assert_allclose(float(single), float(sharded), rtol=1e-5)
  a = jaxclust.metrics.cluster_balance(y, k=10)
  b = jaxclust.metrics.cluster_balance(parallel.shard_rows(y, mesh), k=10)
  for key in a:
    np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-6)
