"""PCA with whitening (jaxclust.kernels.pca) against scikit-learn's PCA(whiten=True), on one device and row-sharded."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from jaxclust import parallel
from jaxclust.kernels.pca import pca, pca_transform


def data(n=1000, d=12, seed=0, offset=50.0):
  rng = np.random.default_rng(seed)
  scales = np.linspace(3.0, 0.2, d)
  return (rng.normal(size=(n, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0] + offset).astype(np.float32)


@pytest.mark.parametrize("sharded", [False, True])
def test_pca_whitening_matches_scikit_learn(mesh, sharded):
  x = data()  # a mean far from zero: the two-pass covariance keeps float32 accurate
  reference = PCA(5, whiten=True, svd_solver="full").fit(x.astype(np.float64))
  placed = parallel.shard_rows(x, mesh) if sharded else x
  out = pca(placed, 5, chunk_size=96)  # chunks that do not divide the rows: a tail chunk
  np.testing.assert_allclose(np.asarray(out.mean), reference.mean_, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.explained_variance), reference.explained_variance_, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(out.explained_variance_ratio), reference.explained_variance_ratio_, rtol=1e-4)
  signs = np.sign(np.sum(np.asarray(out.components) * reference.components_, axis=1))  # axes agree up to sign
  np.testing.assert_allclose(np.asarray(out.components) * signs[:, None], reference.components_, atol=1e-4)
  ours = np.asarray(pca_transform(x, out, whiten=True)) * signs
  np.testing.assert_allclose(ours, reference.transform(x.astype(np.float64)), atol=2e-3)
  np.testing.assert_allclose(ours.var(0, ddof=1), 1.0, rtol=1e-3)  # whitened: unit variance per axis
  unit = np.asarray(pca_transform(x, out, whiten=True, normalize=True))
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
  largest = np.take_along_axis(np.asarray(out.components), np.abs(np.asarray(out.components)).argmax(1)[:, None], 1)
  assert np.all(largest > 0)  # the sign convention


def test_bad_pca_arguments_are_named():
  with pytest.raises(ValueError, match=r"n_components=13 must be <= min\(n_samples, n_features\)=12"):
    pca(data(), 13)
  with pytest.raises(ValueError, match="n_components=0 must be >= 1"):
    pca(data(), 0)
  with pytest.raises(ValueError, match="at least 2 rows"):
    pca(data(n=1, d=1), 1)
