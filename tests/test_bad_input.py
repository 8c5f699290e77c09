"""Every bad input is a ValueError that names the offending value, raised before device work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxclust
from jaxclust import metrics

X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
KEY = jax.random.key(0)


def with_nan():
  x = X.copy()
  x[7, 2] = np.nan
  return x


def with_inf():
  x = X.copy()
  x[3, 1] = np.inf
  return x


@pytest.mark.parametrize("call,message", [
    (lambda: jaxclust.kmeans(with_nan(), 3, rng=KEY), r"1 non-finite values.*\(7, 2\)"),
    (lambda: jaxclust.kmeans(jnp.asarray(with_inf()), 3, rng=KEY), r"1 non-finite values.*\(3, 1\)"),
    (lambda: jaxclust.kmeans(X, 0, rng=KEY), r"k=0 must be >= 1"),
    (lambda: jaxclust.kmeans(X, 51, rng=KEY), r"k=51 must be <= n_samples=50"),
    (lambda: jaxclust.kmeans(X, 2.5, rng=KEY), r"k must be an int, got 2.5"),
    (lambda: jaxclust.kmeans(X[0], 2, rng=KEY), r"rank 2 or 3, got shape \(4,\)"),
    (lambda: jaxclust.kmeans(X.astype(np.int32), 2, rng=KEY), r"floating point, got dtype=int32"),
    (lambda: jaxclust.kmeans(X, 2, rng=0), r"rng must be a jax.random key, got int"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, n_init=0), r"n_init=0 must be >= 1"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, max_iter=-1), r"max_iter=-1 must be >= 1"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, tol=-1.0), r"tol=-1.0 must be a finite number >= 0"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, init="random"), r"init='random' must be 'k-means\+\+'"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, init=X[:3]), r"init has shape \(3, 4\), expected \(2, 4\)"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, sample_weight=np.ones(49, np.float32)), r"shape \(49,\) but x has \(50,\)"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, sample_weight=-np.ones(50, np.float32)), r"50 negative entries"),
    (lambda: jaxclust.kmeans(X, 2, rng=KEY, sample_weight=np.zeros(50, np.float32)), r"sums to zero"),
    (lambda: jaxclust.kmeans(np.zeros((5, 3), np.float32), 2, rng=KEY, spherical=True), r"5 all-zero rows"),
    (lambda: jaxclust.minibatch_kmeans(X, 60, rng=KEY), r"k=60 must be <= n_samples=50"),
    (lambda: jaxclust.minibatch_kmeans(X, 3, rng=KEY, batch_size=0), r"batch_size=0 must be >= 1"),
    (lambda: jaxclust.knn(X, 51), r"k=51 must be <= n_samples=50"),
    (lambda: jaxclust.knn(X, 3, metric="manhattan"), r"metric='manhattan' must be one of"),
    (lambda: jaxclust.knn(X, 3, query=X[:, :2]), r"query has 2 features but x has 4"),
    (lambda: jaxclust.knn(with_nan(), 3), r"non-finite"),
    (lambda: jaxclust.knn(X, 5, db_chunk=3), r"db_chunk=3 must be >= k=5"),
    (lambda: jaxclust.sinkhorn_knopp(jnp.ones((4, 3)), epsilon=0.0), r"epsilon=0.0 must be a finite number > 0"),
    (lambda: jaxclust.sinkhorn_knopp(jnp.ones((4, 3)), n_iter=-1), r"n_iter=-1 must be >= 0"),
    (lambda: jaxclust.sinkhorn_knopp(jnp.ones(4)), r"rank 2, got shape \(4,\)"),
    (lambda: jaxclust.sinkhorn_knopp(jnp.array([[1.0, jnp.nan]])), r"non-finite"),
    (lambda: metrics.evaluate([0, 1, 1], [0, 1]), r"y_true has 3 labels but y_pred has 2"),
    (lambda: metrics.evaluate([0.5, 1.0], [0, 1]), r"integer labels, got dtype=float64"),
    (lambda: metrics.confusion_matrix(jnp.array([0, 3]), jnp.array([0, 1]), n_true=3, n_pred=2), r"labels in \[0, 3\], outside \[0, 3\)"),
    (lambda: metrics.silhouette(jnp.asarray(X), jnp.zeros(50, jnp.int32), k=2), r"got 1 clusters in 50 samples"),
    (lambda: metrics.silhouette(jnp.asarray(X), jnp.zeros(50, jnp.int32).at[0].set(1), k=2, sample_size=10), r"needs an rng"),
    (lambda: jaxclust.parallel.make_mesh(9), r"n_devices=9 must be in \[1, 8\]"),
    (lambda: jaxclust.parallel.shard_rows(X[:49], jaxclust.parallel.make_mesh(8)), r"49 rows, not divisible by the 8 shards"),
])
def test_bad_input_raises_value_error_naming_the_value(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_errors_come_before_device_work(monkeypatch):
  from jaxclust.kernels import kmeans as kmeans_module
  monkeypatch.setattr(kmeans_module, "_solve", lambda *a, **k: pytest.fail("kernel ran on bad input"))
  with pytest.raises(ValueError):
    jaxclust.kmeans(X, 51, rng=KEY)


def test_every_shipped_config_passes_the_settings_check_and_a_bad_one_does_not():
  from jaxclust import configs, validation
  for method in configs.METHODS:
    for dataset in ("digits", "mnist", "usps", "tfds:cifar10", "tfds:cifar100_20", "tfds:stl10", "tfds:imagenet2012"):
      validation.check_settings(configs.get_config(method, dataset))
  config = configs.get_config("scan", "mnist")
  config.scan.learning_rate = 0.0
  with pytest.raises(ValueError, match=r"scan.learning_rate=0.0 must be a finite number > 0"):
    validation.check_settings(config)
  config = configs.get_config("swav", "mnist")
  config.crops = ((2, 28, (0.3, 1.0)), (4, 16))
  with pytest.raises(ValueError, match=r"crops\[1\]=\(4, 16\) must be \(count, size, \(low, high\)\)"):
    validation.check_settings(config)
