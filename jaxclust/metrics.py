"""Clustering metrics: ACC (Hungarian), NMI, ARI from a contingency table; label-free measures.

The contingency (confusion) matrix can be accumulated over batches on device with
:func:`confusion_matrix`; the scores are then computed once on the host in float64 from the
summed matrix (:func:`scores_from_confusion`), so they equal the whole-dataset values exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxclust import validation
from jaxclust.kernels.chunks import default_chunk_size, scan_chunks


def _check_labels(y_true, y_pred):
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  for name, y in (("y_true", y_true), ("y_pred", y_pred)):
    if y.ndim != 1:
      raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"{name} must hold integer labels, got dtype={y.dtype}")
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
  if y_true.size == 0:
    raise ValueError("y_true and y_pred are empty")
  return y_true, y_pred


def contingency(y_true, y_pred) -> np.ndarray:
  """``[n_classes, n_clusters]`` int64 counts of (true class, predicted cluster) pairs."""
  y_true, y_pred = _check_labels(y_true, y_pred)
  classes, t = np.unique(y_true, return_inverse=True)
  clusters, p = np.unique(y_pred, return_inverse=True)
  table = np.zeros((classes.size, clusters.size), np.int64)
  np.add.at(table, (t, p), 1)
  return table


def scores_from_confusion(table) -> dict[str, float]:
  """ACC, NMI and ARI of a contingency table (rows: true classes, columns: clusters)."""
  table = np.asarray(table, np.float64)
  if table.ndim != 2 or (table < 0).any():
    raise ValueError(f"table must be a 2-D array of non-negative counts, got shape {table.shape}")
  table = table[table.sum(1) > 0][:, table.sum(0) > 0]  # classes / clusters that never occur
  if table.size == 0:
    raise ValueError("table is all zeros")
  return {"acc": _acc(table), "nmi": _nmi(table), "ari": _ari(table)}


def _acc(table):
  """Best one-to-one matching of clusters to classes (Hungarian); unmatched clusters count as wrong."""
  rows, cols = linear_sum_assignment(table, maximize=True)
  return float(table[rows, cols].sum() / table.sum())


def _entropy(counts):
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def _nmi(table):
  """Mutual information over the arithmetic mean of the two entropies (scikit-learn's default)."""
  n = table.sum()
  if table.shape[0] == table.shape[1] == 1:
    return 1.0  # neither labeling splits the data: identical partitions
  rows, cols = table.sum(1, keepdims=True), table.sum(0, keepdims=True)
  nz = table > 0
  mi = float((table[nz] / n * np.log(table[nz] * n / (rows @ cols)[nz])).sum())
  mi = max(mi, 0.0)
  if mi == 0.0:
    return 0.0
  return mi / (0.5 * (_entropy(rows.ravel()) + _entropy(cols.ravel())))


def _ari(table):
  """Hubert & Arabie (1985) adjusted Rand index from pair counts."""
  pairs = lambda v: (v * (v - 1) / 2).sum()
  n = table.sum()
  both, a, b = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
  expected = a * b / pairs(np.array([n]))
  denom = 0.5 * (a + b) - expected
  return 1.0 if denom == 0 else float((both - expected) / denom)


def cluster_acc(y_true, y_pred) -> float:
  """Clustering accuracy under the best one-to-one cluster-to-class map (Hungarian matching)."""
  return _acc(contingency(y_true, y_pred).astype(np.float64))


def nmi(y_true, y_pred) -> float:
  """Normalized mutual information (arithmetic normalization, as scikit-learn's default)."""
  return _nmi(contingency(y_true, y_pred).astype(np.float64))


def ari(y_true, y_pred) -> float:
  """Adjusted Rand index."""
  return _ari(contingency(y_true, y_pred).astype(np.float64))


def evaluate(y_true, y_pred) -> dict[str, float]:
  """``{"acc", "nmi", "ari"}`` of predicted clusters against true classes."""
  return scores_from_confusion(contingency(y_true, y_pred))


@functools.partial(jax.jit, static_argnames=("n_true", "n_pred"))
def _confusion(y_true, y_pred, weight, *, n_true, n_pred):
  flat = y_true.astype(jnp.int32) * n_pred + y_pred.astype(jnp.int32)
  return jax.ops.segment_sum(weight, flat, n_true * n_pred).reshape(n_true, n_pred)


def confusion_matrix(y_true, y_pred, *, n_true: int, n_pred: int, mask=None) -> jax.Array:
  """``[n_true, n_pred]`` int32 counts, on device; sum over batches, then :func:`scores_from_confusion`.

  Args:
    y_true, y_pred: ``[b]`` integer labels in ``[0, n_true)`` and ``[0, n_pred)``.
    n_true, n_pred: number of classes and of clusters.
    mask: optional ``[b]`` bool, False for padding rows that must not be counted.
  """
  for name, y, high in (("y_true", y_true, n_true), ("y_pred", y_pred, n_pred)):
    validation.check_count(high, f"n_{name[2:]}", low=1)
    if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(f"{name} must be 1-D integer labels, got shape {tuple(y.shape)} dtype={y.dtype}")
    low_seen, high_seen = validation.host_int(jnp.min(y)), validation.host_int(jnp.max(y))
    if low_seen is not None and (low_seen < 0 or high_seen >= high):
      raise ValueError(f"{name} has labels in [{low_seen}, {high_seen}], outside [0, {high})")
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
  weight = jnp.ones(y_true.shape, jnp.int32) if mask is None else jnp.asarray(mask).astype(jnp.int32)
  return _confusion(y_true, y_pred, weight, n_true=n_true, n_pred=n_pred)


def silhouette(x, labels, *, k: int, rng=None, sample_size: int | None = 2000) -> jax.Array:
  """Mean silhouette coefficient (Rousseeuw 1987), Euclidean, on a random sample, on device.

  ``s_i = (b_i - a_i) / max(a_i, b_i)`` with ``a_i`` the mean distance to the rest of its cluster
  and ``b_i`` the lowest mean distance to another cluster; 0 for singletons (scikit-learn's
  convention). Distances are computed from the sample only, in row chunks.

  Args:
    x: ``[n, d]`` points; labels: ``[n]`` ints in ``[0, k)``.
    k: number of clusters.
    rng: key for drawing the sample (required when ``sample_size < n``).
    sample_size: points to use (None: all). The cost is ``O(sample_size^2 d)``.
  """
  n = _check_rows(x, labels)
  if sample_size is not None and sample_size < n:
    if rng is None:
      raise ValueError(f"sample_size={sample_size} < n={n} needs an rng to draw the sample")
    idx = jax.random.choice(rng, n, (validation.check_count(sample_size, "sample_size", low=2),), replace=False)
    x, labels = x[idx], labels[idx]
  _check_used(labels, k, "silhouette")
  return _silhouette(x.astype(jnp.float32), labels.astype(jnp.int32), k=k)


@functools.partial(jax.jit, static_argnames=("k",))
def _silhouette(x, labels, *, k):
  x = x - jnp.mean(x, axis=0)  # distances do not move; |x|^2 - 2 x.y + |y|^2 cancels less in float32
  onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)
  counts = onehot.sum(0)
  sq = jnp.sum(x * x, axis=1)

  def per_chunk(_, chunk):
    xc, lc = chunk
    d2 = jnp.sum(xc * xc, 1)[:, None] - 2.0 * jnp.matmul(xc, x.T, precision="highest") + sq
    sums = jnp.sqrt(jnp.maximum(d2, 0.0)) @ onehot  # [c, k] total distance to each cluster
    own = jnp.take_along_axis(sums, lc[:, None], 1)[:, 0]
    own_count = counts[lc]
    a = own / jnp.maximum(own_count - 1.0, 1.0)
    other = jnp.where((jnp.arange(k) == lc[:, None]) | (counts == 0), jnp.inf, sums / jnp.maximum(counts, 1.0))
    b = jnp.min(other, axis=1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-30)
    return None, jnp.where(own_count > 1, s, 0.0)

  # One block up to 2,048 rows (16 MiB of distances; the sample of label_free): it compiles in half the time.
  _, s = scan_chunks(per_chunk, None, (x, labels), x.shape[0] if x.shape[0] <= 2048 else 512)
  return jnp.mean(s)


def _check_rows(x, labels) -> int:
  validation.check_float_array(x, "x", ranks=(2,))
  n = x.shape[0]
  if labels.shape != (n,):
    raise ValueError(f"labels has shape {tuple(labels.shape)} but x has {n} rows")
  return n


def _check_used(labels, k: int, name: str) -> None:
  """The label-free scores compare clusters: scikit-learn's range, 2 <= clusters used <= n_samples - 1."""
  used = validation.host_int(jnp.sum(jnp.bincount(labels, length=k) > 0))
  if used is not None and not 2 <= used <= labels.shape[0] - 1:
    raise ValueError(f"{name} needs 2 <= number of clusters <= n_samples - 1, got {used} "
                     f"clusters in {labels.shape[0]} samples")


def davies_bouldin(x, labels, *, k: int) -> jax.Array:
  """Davies-Bouldin index (Davies & Bouldin 1979) of ``labels [n]`` (ints in ``[0, k)``) on the points
  ``x [n, d]``, Euclidean, on device: lower is better, 0 at best.

  ``DB = mean_i max_{j != i} (S_i + S_j) / |c_i - c_j|`` over the clusters in use, with ``c_i`` a
  cluster's centroid and ``S_i`` its members' mean distance to it. As scikit-learn's
  ``davies_bouldin_score``: coinciding centroids give a ratio of 0, empty cluster ids are left out.
  Two passes over ``x`` in row chunks (:func:`cluster_dispersion`).
  """
  return _from_dispersion(_davies_bouldin, x, labels, k, "davies_bouldin")


def calinski_harabasz(x, labels, *, k: int) -> jax.Array:
  """Calinski-Harabasz index (variance ratio criterion, Calinski & Harabasz 1974) of ``labels [n]`` (ints in
  ``[0, k)``) on the points ``x [n, d]``, on device: higher is better.

  ``CH = [B / (K - 1)] / [W / (n - K)]`` with ``B = sum_c n_c |c_c - mean|^2`` the between-cluster and
  ``W = sum_i |x_i - c_(label i)|^2`` the within-cluster dispersion, ``K`` the clusters in use; 1.0 when
  ``W`` is 0 (scikit-learn's ``calinski_harabasz_score``). Two passes over ``x`` in row chunks.
  """
  return _from_dispersion(_calinski_harabasz, x, labels, k, "calinski_harabasz")


def _from_dispersion(score, x, labels, k: int, name: str) -> jax.Array:
  _check_rows(x, labels)
  _check_used(labels, k, name)
  return score(*cluster_dispersion(x, labels, k=k))


@functools.partial(jax.jit, static_argnames=("k",))
def cluster_dispersion(x, labels, *, k: int):
  """Per cluster id: ``(sizes [k], centroids [k, d], summed distance [k], summed squared distance [k])``
  of the members to their centroid (0 for an empty id). Each member's distance is taken from its own
  centroid, gathered per row: memory ``O(chunk d + k d)``, never an ``[n, k, d]`` broadcast."""
  x = x.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  n, d = x.shape
  chunk = default_chunk_size(n, max(k, d))

  def sums(carry, rows):
    xc, lc = rows
    return (carry[0] + jax.ops.segment_sum(jnp.ones_like(lc, jnp.float32), lc, k),
            carry[1] + jax.ops.segment_sum(xc, lc, k)), None

  (sizes, total), _ = scan_chunks(sums, (jnp.zeros(k), jnp.zeros((k, d))), (x, labels), chunk)
  centers = total / jnp.maximum(sizes, 1.0)[:, None]

  def spread(carry, rows):
    xc, lc = rows
    sq = jnp.sum(jnp.square(xc - centers[lc]), axis=1)
    return (carry[0] + jax.ops.segment_sum(jnp.sqrt(sq), lc, k), carry[1] + jax.ops.segment_sum(sq, lc, k)), None

  (distance, squared), _ = scan_chunks(spread, (jnp.zeros(k), jnp.zeros(k)), (x, labels), chunk)
  return sizes, centers, distance, squared


@jax.jit
def _davies_bouldin(sizes, centers, distance, squared):
  used = sizes > 0
  scatter = distance / jnp.maximum(sizes, 1.0)
  # Centroid to centroid as differences, one centroid at a time: [k, d] of memory, and no cancellation
  # between nearby centroids (the |a|^2 - 2 a.b + |b|^2 form lost 3e-5 of DB on uniform noise).
  gap = jax.lax.map(lambda c: jnp.sqrt(jnp.sum(jnp.square(centers - c), axis=1)), centers)
  pair = used[:, None] & used[None, :] & ~jnp.eye(len(sizes), dtype=bool) & (gap > 0)
  ratio = jnp.where(pair, (scatter[:, None] + scatter[None, :]) / jnp.where(pair, gap, 1.0), 0.0)
  return jnp.sum(jnp.where(used, jnp.max(ratio, axis=1), 0.0)) / jnp.sum(used)


@jax.jit
def _calinski_harabasz(sizes, centers, distance, squared):
  used = jnp.sum(sizes > 0)
  n = jnp.sum(sizes)
  mean = jnp.sum(sizes[:, None] * centers, axis=0) / n
  between = jnp.sum(sizes * jnp.sum(jnp.square(centers - mean), axis=1))
  within = jnp.sum(squared)
  return jnp.where(within == 0, 1.0, between * (n - used) / jnp.where(within == 0, 1.0, within * (used - 1)))


def center_distances(x, labels, *, k: int) -> tuple[jax.Array, jax.Array]:
  """Each row's distance to its cluster's centroid and to the nearest other centroid, ``([n], [n])``, on device.

  What ranks a cluster's members when a method gives no confidence: the nearest its centroid are its most
  typical, and those whose two distances are closest (the simplified silhouette ``(b - a) / max(a, b)`` of
  Hruschka et al. 2004 near 0) its most ambiguous. Row chunks, one ``[chunk, k]`` block at a time."""
  _check_rows(x, labels)
  return _center_distances(jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32), k=k)


@functools.partial(jax.jit, static_argnames=("k",))
def _center_distances(x, labels, *, k):
  _, centers, _, _ = cluster_dispersion(x, labels, k=k)
  norms = jnp.sum(centers * centers, axis=1)

  def per_chunk(_, rows):
    xc, lc = rows
    sq = jnp.sum(xc * xc, 1)[:, None] - 2.0 * jnp.matmul(xc, centers.T, precision="highest") + norms
    own = jnp.sqrt(jnp.sum(jnp.square(xc - centers[lc]), axis=1))
    other = jnp.min(jnp.where(jnp.arange(k) == lc[:, None], jnp.inf, sq), axis=1)
    return None, (own, jnp.sqrt(jnp.maximum(other, 0.0)))

  _, (own, other) = scan_chunks(per_chunk, None, (x, labels), default_chunk_size(x.shape[0], k))
  return own, other


def label_free(x, labels, *, k: int, rng, sample_size: int = 2000) -> dict[str, float]:
  """``{"silhouette", "davies_bouldin", "calinski_harabasz"}`` of the clusters ``labels [n]`` in the space
  ``x [n, d]``, the silhouette on ``sample_size`` rows drawn with ``rng`` (it costs ``O(sample^2 d)``); ``{}``
  when fewer than two clusters are in use (none is defined), no silhouette when the sample holds fewer.
  One compiled program: the end of every fit computes them, and compiling is most of their cost."""
  x, labels = np.asarray(x, np.float32), np.asarray(labels)  # checked on the host: jitted checks compile
  if x.ndim != 2 or labels.shape != (len(x),) or not np.all(np.isfinite(x)):
    raise ValueError(f"x must be [n, d] finite values and labels [n]; got shapes {x.shape} and {labels.shape}")
  n = len(x)
  used = np.count_nonzero(np.bincount(labels, minlength=k))
  if not 2 <= used <= n - 1:
    return {}
  size = validation.check_count(min(sample_size, n), "sample_size", low=2)
  db, ch, silhouette_, sampled = _label_free(jnp.asarray(x), jnp.asarray(labels, jnp.int32), rng, k=k, sample=size)
  out = {"davies_bouldin": float(db), "calinski_harabasz": float(ch)}
  if 2 <= int(sampled) <= size - 1:  # else the sample drew one cluster (one holds almost every row)
    out["silhouette"] = float(silhouette_)
  return out


@functools.partial(jax.jit, static_argnames=("k", "sample"))
def _label_free(x, labels, rng, *, k, sample):
  dispersion = cluster_dispersion(x, labels, k=k)
  if sample < x.shape[0]:
    index = jax.random.choice(rng, x.shape[0], (sample,), replace=False)
    x, labels = x[index], labels[index]
  sampled = jnp.sum(jnp.bincount(labels, length=k) > 0)
  return _davies_bouldin(*dispersion), _calinski_harabasz(*dispersion), _silhouette(x, labels, k=k), sampled


@functools.partial(jax.jit, static_argnames=("k",))
def cluster_balance(labels, *, k: int) -> dict[str, jax.Array]:
  """Label-free balance of cluster sizes, on device.

  Returns:
    ``entropy`` (nats) of the cluster-size distribution, ``normalized_entropy`` = entropy / ln k
    (1: perfectly balanced, 0: everything in one cluster), ``min_over_max`` size ratio, and
    ``n_empty`` clusters.
  """
  sizes = jnp.bincount(labels, length=k).astype(jnp.float32)
  p = sizes / sizes.sum()
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"entropy": entropy,
          "normalized_entropy": entropy / jnp.log(jnp.float32(k)) if k > 1 else jnp.float32(1.0),
          "min_over_max": sizes.min() / sizes.max(),
          "n_empty": jnp.sum(sizes == 0)}
