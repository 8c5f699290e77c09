"""Sinkhorn-Knopp against a plain numpy transcription of SwAV's distributed_sinkhorn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxclust


def swav_sinkhorn_numpy(scores, epsilon=0.05, n_iter=3):
  """Caron et al. 2020, Algorithm 1 / distributed_sinkhorn on one worker, in float64."""
  q = np.exp(scores.astype(np.float64) / epsilon).T  # K x B
  n_protos, batch = q.shape
  q /= q.sum()
  for _ in range(n_iter):
    q /= q.sum(axis=1, keepdims=True)
    q /= n_protos
    q /= q.sum(axis=0, keepdims=True)
    q /= batch
  q *= batch
  return q.T


@pytest.mark.parametrize("n_iter", [1, 3, 10])
def test_matches_numpy_transcription(n_iter):
  scores = np.random.default_rng(0).uniform(-1, 1, (256, 30)).astype(np.float32)
  ours = jaxclust.sinkhorn_knopp(jnp.asarray(scores), n_iter=n_iter)
  np.testing.assert_allclose(np.asarray(ours), swav_sinkhorn_numpy(scores, n_iter=n_iter), rtol=2e-4, atol=1e-7)


def test_marginals():
  scores = np.random.default_rng(1).uniform(-1, 1, (512, 64)).astype(np.float32)
  q = np.asarray(jaxclust.sinkhorn_knopp(jnp.asarray(scores), n_iter=50))
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)  # every sample: one unit of mass
  np.testing.assert_allclose(q.sum(0), 512 / 64, rtol=1e-3)  # every prototype: B / K


def test_large_scores_do_not_overflow():
  """|scores| / eps = 400: exp overflows float32 (the official code returns inf/NaN), not here."""
  scores = np.random.default_rng(2).uniform(-20, 20, (128, 16)).astype(np.float32)
  with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(scores / 0.05)
  assert not np.isfinite(naive).all()
  ours = np.asarray(jaxclust.sinkhorn_knopp(jnp.asarray(scores)))
  assert np.isfinite(ours).all()
  np.testing.assert_allclose(ours, swav_sinkhorn_numpy(scores), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_scores_give_float32_codes(dtype):
  scores = jnp.asarray(np.random.default_rng(3).uniform(-5, 5, (64, 10)), dtype)
  q = jaxclust.sinkhorn_knopp(scores)
  assert q.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(q), swav_sinkhorn_numpy(np.asarray(scores.astype(jnp.float32))),
                             rtol=1e-3, atol=1e-6)


def test_no_gradient_flows():
  scores = jnp.asarray(np.random.default_rng(4).normal(size=(16, 4)), jnp.float32)
  grad = jax.grad(lambda s: jnp.sum(jaxclust.sinkhorn_knopp(s) * s))(scores)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(jaxclust.sinkhorn_knopp(scores)), rtol=1e-6)
