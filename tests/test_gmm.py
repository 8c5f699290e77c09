"""Diagonal GMM EM against scikit-learn's GaussianMixture from the same initial parameters."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from jaxclust import parallel
from jaxclust.kernels.gmm import gmm_diag


def init_params(x, k, seed=0):
  rng = np.random.default_rng(seed)
  return (np.full(k, 1.0 / k), x[rng.choice(len(x), k, replace=False)].astype(np.float64),
          np.tile(x.var(0), (k, 1)) + 0.1)


@pytest.mark.parametrize("iterations", [1, 5, 30])
def test_matches_sklearn_iteration_by_iteration(blobs, iterations):
  x = blobs[0][:1500]
  weights, means, variances = init_params(x, 6)
  ours = gmm_diag(x, 6, rng=None, max_iter=iterations, tol=0.0, init=(weights, means, variances))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    theirs = GaussianMixture(6, covariance_type="diag", max_iter=iterations, tol=0.0, weights_init=weights,
                             means_init=means, precisions_init=1.0 / variances, reg_covar=1e-6).fit(x)
  np.testing.assert_allclose(np.asarray(ours.weights), theirs.weights_, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ours.means), theirs.means_, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.asarray(ours.variances), theirs.covariances_, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(float(ours.log_likelihood), theirs.score(x), rtol=1e-5)
  assert int(ours.n_iter) == iterations


def test_kmeans_initialization_and_convergence(blobs):
  x, y = blobs
  out = gmm_diag(x, 8, rng=jax.random.key(0))
  assert bool(out.converged) and int(out.n_iter) < 100
  reference = GaussianMixture(8, covariance_type="diag", random_state=0, n_init=3).fit(x)
  assert float(out.log_likelihood) >= reference.score(x) - 1e-2 * abs(reference.score(x))
  np.testing.assert_allclose(float(np.asarray(out.weights).sum()), 1.0, rtol=1e-6)


def test_kmeans_restarts_start_em_from_the_best_kmeans(blobs):
  """kmeans_n_init=r starts EM from the M-step of ``kmeans(n_init=r)``'s partition (numpy M-step here)."""
  from jaxclust import kmeans
  x = blobs[0].astype(np.float64)
  labels = np.asarray(kmeans(blobs[0], 8, rng=jax.random.key(3), n_init=4).labels)
  counts = np.bincount(labels, minlength=8)
  means = np.stack([x[labels == j].mean(0) for j in range(8)])
  variances = np.stack([x[labels == j].var(0) for j in range(8)]) + 1e-6
  ours = gmm_diag(blobs[0], 8, rng=jax.random.key(3), kmeans_n_init=4, max_iter=3, tol=0.0)
  single = gmm_diag(blobs[0], 8, rng=jax.random.key(3), max_iter=3, tol=0.0)  # key 3: one k-means run ends worse
  assert float(single.log_likelihood) < float(ours.log_likelihood) - 0.1
  expected = gmm_diag(blobs[0], 8, rng=None, init=(counts / len(x), means, variances), max_iter=3, tol=0.0)
  np.testing.assert_allclose(np.asarray(ours.means), np.asarray(expected.means), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(ours.log_likelihood), float(expected.log_likelihood), rtol=1e-5)


def test_sharded_equals_single_device(blobs, mesh):
  x = blobs[0][:1600]
  init = init_params(x, 5, seed=3)
  single = gmm_diag(x, 5, rng=None, init=init, max_iter=20, tol=0.0)
  sharded = gmm_diag(parallel.shard_rows(x, mesh), 5, rng=None, init=init, max_iter=20, tol=0.0)
  for a, b in zip(single, sharded):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  km_single = gmm_diag(x, 5, rng=jax.random.key(1), max_iter=10)
  km_sharded = gmm_diag(parallel.shard_rows(x, mesh), 5, rng=jax.random.key(1), max_iter=10)
  np.testing.assert_allclose(np.asarray(km_single.means), np.asarray(km_sharded.means), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, r"k=0 must be >= 1"),
    ({"reg_covar": 0.0}, r"reg_covar=0.0 must be a finite number > 0"),
    ({"tol": -1.0}, r"tol=-1.0 must be a finite number >= 0"),
    ({"kmeans_n_init": 0}, r"kmeans_n_init=0 must be >= 1"),
    ({"init": (np.ones(3), np.zeros((3, 2)), np.ones((3, 2)))}, r"init shapes"),
    ({"init": (np.ones(2), np.zeros((2, 12)), np.zeros((2, 12)))}, r"must be > 0"),
])
def test_bad_input(blobs, kwargs, message):
  args = {"k": 2, "rng": jax.random.key(0), **kwargs}
  with pytest.raises(ValueError, match=message):
    gmm_diag(blobs[0], args.pop("k"), **args)
