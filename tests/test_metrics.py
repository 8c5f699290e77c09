"""Metrics against scikit-learn and brute force."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxclust import metrics


def brute_force_acc(y_true, y_pred):
  classes, clusters = np.unique(y_true), np.unique(y_pred)
  best = 0
  for perm in itertools.permutations(classes, min(len(classes), len(clusters))):
    mapping = dict(zip(clusters, perm))
    best = max(best, np.mean([mapping.get(p, -1) == t for t, p in zip(y_true, y_pred)]))
  return best


@pytest.mark.parametrize("n_true,n_pred", [(5, 5), (4, 6), (6, 3), (1, 1), (1, 4)])
def test_against_sklearn_and_brute_force(n_true, n_pred):
  rng = np.random.default_rng(n_true * 10 + n_pred)
  y_true = rng.integers(0, n_true, 400)
  y_pred = np.where(rng.random(400) < 0.6, y_true % n_pred, rng.integers(0, n_pred, 400)) + 100  # labels need not start at 0
  scores = metrics.evaluate(y_true, y_pred)
  assert abs(scores["nmi"] - skm.normalized_mutual_info_score(y_true, y_pred)) < 1e-6
  assert abs(scores["ari"] - skm.adjusted_rand_score(y_true, y_pred)) < 1e-6
  assert abs(scores["acc"] - brute_force_acc(y_true, y_pred)) < 1e-12
  assert metrics.nmi(y_true, y_pred) == scores["nmi"] and metrics.ari(y_true, y_pred) == scores["ari"]


def test_perfect_and_permuted():
  y = np.repeat(np.arange(4), 25)
  assert metrics.evaluate(y, (y + 1) % 4) == {"acc": 1.0, "nmi": 1.0, "ari": 1.0}


def test_confusion_accumulates_over_batches_on_device():
  rng = np.random.default_rng(0)
  y_true, y_pred = rng.integers(0, 7, 1000), rng.integers(0, 9, 1000)
  total = sum(metrics.confusion_matrix(jnp.asarray(y_true[i:i + 128]), jnp.asarray(y_pred[i:i + 128]), n_true=7, n_pred=9)
              for i in range(0, 1000, 128))
  expected = np.zeros((7, 9), np.int64)
  np.add.at(expected, (y_true, y_pred), 1)
  np.testing.assert_array_equal(np.asarray(total), expected)
  assert metrics.scores_from_confusion(total) == metrics.evaluate(y_true, y_pred)


def test_confusion_mask_drops_padding():
  y_true, y_pred = jnp.array([0, 1, 1, 0]), jnp.array([1, 1, 0, 0])
  cm = metrics.confusion_matrix(y_true, y_pred, n_true=2, n_pred=2, mask=jnp.array([True, True, False, False]))
  np.testing.assert_array_equal(np.asarray(cm), [[0, 1], [0, 1]])


def test_silhouette_matches_sklearn(digits):
  x, y = digits
  ours = metrics.silhouette(jnp.asarray(x), jnp.asarray(y), k=10, sample_size=None)
  assert abs(float(ours) - skm.silhouette_score(x, y)) < 1e-5


def test_silhouette_on_a_sample_matches_sklearn_on_that_sample(digits):
  x, y = digits
  rng = jax.random.key(0)
  ours = metrics.silhouette(jnp.asarray(x), jnp.asarray(y), k=10, rng=rng, sample_size=500)
  idx = np.asarray(jax.random.choice(rng, len(x), (500,), replace=False))
  assert abs(float(ours) - skm.silhouette_score(x[idx], y[idx])) < 1e-5


def test_silhouette_singleton_cluster_scores_zero():
  x = np.array([[0.0], [0.1], [5.0]], np.float32)
  labels = np.array([0, 0, 1])
  assert abs(float(metrics.silhouette(jnp.asarray(x), jnp.asarray(labels), k=2)) - skm.silhouette_score(x, labels)) < 1e-6


def _clusters(seed):
  """Random points in k clusters of various spreads, one cluster id left empty in every other case."""
  rng = np.random.default_rng(seed)
  n, d, k = int(rng.integers(40, 1500)), int(rng.integers(1, 24)), int(rng.integers(2 + seed % 2, 13))
  labels = rng.integers(0, k, n)
  if seed % 2:
    labels[labels == k // 2] = 0  # an id no row has: scikit-learn never sees it, ours must ignore it
  centers = rng.normal(scale=3.0, size=(k, d)) + 10.0  # off the origin: the sums are not centred
  x = (centers[labels] + rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, size=(k, 1))[labels]).astype(np.float32)
  return x, labels, k


@pytest.mark.parametrize("seed", range(6))
def test_davies_bouldin_and_calinski_harabasz_match_sklearn(seed):
  x, labels, k = _clusters(seed)
  x64 = x.astype(np.float64)
  db = float(metrics.davies_bouldin(jnp.asarray(x), jnp.asarray(labels), k=k))
  ch = float(metrics.calinski_harabasz(jnp.asarray(x), jnp.asarray(labels), k=k))
  assert db == pytest.approx(skm.davies_bouldin_score(x64, labels), rel=2e-5)
  assert ch == pytest.approx(skm.calinski_harabasz_score(x64, labels), rel=2e-5)


@pytest.mark.parametrize("seed", range(3))
def test_label_free_matches_sklearn_with_the_silhouette_on_its_sample(seed):
  x, labels, k = _clusters(seed + 10)
  rng = jax.random.key(seed)
  out = metrics.label_free(x, labels, k=k, rng=rng, sample_size=300)
  index = np.asarray(jax.random.choice(rng, len(x), (300,), replace=False)) if len(x) > 300 else np.arange(len(x))
  x64 = x.astype(np.float64)
  assert out["silhouette"] == pytest.approx(skm.silhouette_score(x64[index], labels[index]), abs=1e-5)
  assert out["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(x64, labels), rel=2e-5)
  assert out["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(x64, labels), rel=2e-5)


def test_label_free_scores_in_the_degenerate_cases_as_sklearn():
  # Clusters whose centroids coincide (a ratio of 0, not infinity) and clusters of identical points (W = 0).
  x = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0], [5.0, 5.0], [5.0, 5.0]], np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  assert float(metrics.davies_bouldin(jnp.asarray(x), jnp.asarray(labels), k=3)) == pytest.approx(
      skm.davies_bouldin_score(x, labels), rel=1e-6)
  points = np.array([[0.0], [0.0], [3.0], [3.0]], np.float32)
  assert float(metrics.calinski_harabasz(jnp.asarray(points), jnp.asarray(np.array([0, 0, 1, 1])), k=2)) == \
      skm.calinski_harabasz_score(points, [0, 0, 1, 1]) == 1.0
  assert metrics.label_free(x, np.zeros(6, np.int64), k=3, rng=jax.random.key(0)) == {}  # one cluster: undefined
  with pytest.raises(ValueError, match="davies_bouldin needs 2 <= number of clusters"):
    metrics.davies_bouldin(jnp.asarray(x), jnp.zeros(6, jnp.int32), k=3)
  with pytest.raises(ValueError, match="labels has shape"):
    metrics.calinski_harabasz(jnp.asarray(x), jnp.zeros(5, jnp.int32), k=3)


def test_center_distances_against_numpy():
  x, labels, k = _clusters(1)
  own, other = (np.asarray(a) for a in metrics.center_distances(jnp.asarray(x), jnp.asarray(labels), k=k))
  used = np.unique(labels)
  centers = np.stack([x[labels == c].astype(np.float64).mean(0) for c in used])
  distances = np.linalg.norm(x[:, None, :] - centers[None], axis=-1)  # [n, k, d]: fine for a reference
  mine = labels[:, None] == used[None, :]
  np.testing.assert_allclose(own, distances[mine], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(other, np.where(mine, np.inf, distances).min(1), rtol=1e-4, atol=1e-4)


def test_cluster_balance():
  labels = jnp.array([0] * 6 + [1] * 3 + [2] * 1)
  out = metrics.cluster_balance(labels, k=4)
  p = np.array([0.6, 0.3, 0.1])
  np.testing.assert_allclose(float(out["entropy"]), -(p * np.log(p)).sum(), rtol=1e-6)
  np.testing.assert_allclose(float(out["normalized_entropy"]), -(p * np.log(p)).sum() / np.log(4), rtol=1e-6)
  assert float(out["min_over_max"]) == 0.0 and int(out["n_empty"]) == 1
