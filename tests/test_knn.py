"""kNN against brute-force numpy."""

import jax
import numpy as np
import pytest

import jaxclust


def all_values(x, q, metric):
  x, q = x.astype(np.float64), q.astype(np.float64)
  if metric == "cosine":
    return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
  return np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))


def brute_force(x, q, k, metric):
  v = all_values(x, q, metric)
  idx = np.argsort(-v if metric == "cosine" else v, axis=1, kind="stable")[:, :k]
  return idx, np.take_along_axis(v, idx, 1)


def assert_exact_knn(out, x, q, k, metric):
  """Our neighbours have exactly the true top-k values (float64); order differs only in near-ties."""
  idx, vals = brute_force(x, q, k, metric)
  ours = np.asarray(out.indices)
  np.testing.assert_allclose(np.take_along_axis(all_values(x, q, metric), ours, 1), vals, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.values), vals, rtol=1e-4, atol=1e-4)
  assert (ours == idx).mean() > 0.999


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunks", [(None, None), (64, 200)])
def test_matches_brute_force(metric, chunks):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1500, 24)).astype(np.float32)
  q = rng.normal(size=(300, 24)).astype(np.float32)
  out = jaxclust.knn(x, 10, query=q, metric=metric, query_chunk=chunks[0], db_chunk=chunks[1])
  assert_exact_knn(out, x, q, 10, metric)


def test_self_search_finds_itself_first():
  x = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
  out = jaxclust.knn(x, 5, metric="euclidean")
  np.testing.assert_array_equal(np.asarray(out.indices[:, 0]), np.arange(500))
  assert_exact_knn(out, x, x, 5, "euclidean")


def test_ties_go_to_the_lower_index_whatever_the_chunking():
  base = np.random.default_rng(2).normal(size=(40, 6)).astype(np.float32)
  x = np.concatenate([base, base, base])  # every point has two exact duplicates
  # Chunkings with equal-shape blocks: a 1-row tail block runs another GEMM kernel, whose last-bit
  # rounding can make exact duplicates unequal scores (then no longer ties).
  for db_chunk in (None, 8, 40, 60):
    out = jaxclust.knn(x, 3, query=base, metric="cosine", db_chunk=db_chunk)
    np.testing.assert_array_equal(np.asarray(out.indices), np.arange(40)[:, None] + np.array([0, 40, 80]))


def test_no_recompilation_for_same_shapes(monkeypatch):
  import chex
  from jaxclust.kernels import knn as knn_module
  traced = jax.jit(chex.assert_max_traces(knn_module._knn_impl, n=1), static_argnames=knn_module._STATIC)
  monkeypatch.setattr(knn_module, "_knn", traced)
  rng = np.random.default_rng(0)
  for _ in range(2):  # new values, same shapes: one trace
    jaxclust.knn(rng.normal(size=(300, 8)).astype(np.float32), 4)
  with pytest.raises(AssertionError):
    jaxclust.knn(rng.normal(size=(301, 8)).astype(np.float32), 4)


@pytest.mark.parametrize("k", [1, 5, 16, 40])  # 40: the groups of 16 used above k=32
def test_block_top_k_equals_lax_top_k_with_ties(k):
  from jax import lax
  from jaxclust.kernels.knn import _block_top_k
  scores = jax.numpy.asarray(np.random.default_rng(k).integers(0, 12, (64, 1024)), jax.numpy.float32)  # many ties
  vals, idx = _block_top_k(scores, k)
  ref_vals, ref_idx = lax.top_k(scores, k)
  np.testing.assert_array_equal(np.asarray(vals), np.asarray(ref_vals))
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
