"""Choosing the number of clusters without labels: every k of a range scored by five criteria.

All k are clustered in one compiled call (:func:`jaxclust.kernels.kmeans.kmeans_range`, ``runs`` seedings
each), as are the gap statistic's reference data sets. For each k:

- silhouette (Rousseeuw 1987, on a sample; higher is better),
- Davies-Bouldin (lower is better) and Calinski-Harabasz (higher is better) of the best run,
- the gap statistic (Tibshirani, Walther & Hastie 2001): ``E*[log W_k] - log W_k`` with ``W_k`` the
  within-cluster sum of squares and ``E*`` the mean over ``references`` data sets drawn uniformly in the
  box of the data's principal axes (the paper's reference (b)), with its standard error ``s_k``,
- stability: the mean adjusted Rand index between the ``runs`` k-means solutions (1: every seeding finds the
  same partition).

The recommended k is stated in :data:`RULE`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxclust import metrics, validation
from jaxclust.kernels import kmeans as kmeans_kernel

# Chosen among the five criteria on the selection sets of experiments/choose_k_bench.py (right on 13 of 16 blob
# sets, against 11 for the gap statistic's rule, 10 silhouette, 9 Davies-Bouldin, 6 stability), then confirmed on
# other sets (experiments/RESULTS.md, "Choosing k").
RULE = "the k of the highest Calinski-Harabasz index"


@dataclasses.dataclass
class Choice:
  """The criteria for each k of ``ks`` and the recommended ``k`` (:data:`RULE`)."""
  ks: list
  inertia: np.ndarray
  silhouette: np.ndarray
  davies_bouldin: np.ndarray
  calinski_harabasz: np.ndarray
  gap: np.ndarray
  gap_se: np.ndarray
  reference_log_w: np.ndarray  # [references, len(ks)] log W_k of the uniform reference sets
  stability: np.ndarray
  k: int
  labels: np.ndarray  # [len(ks), n] the best run's labels for each k (of the rows used)
  rows: int  # rows clustered (a sample when the data had more than sample_size)

  def by_criterion(self) -> dict:
    """The k each criterion prefers on its own."""
    ks = np.asarray(self.ks)
    return {"silhouette": int(ks[np.nanargmax(self.silhouette)]),
            "davies_bouldin": int(ks[np.nanargmin(self.davies_bouldin)]),
            "calinski_harabasz": int(ks[np.nanargmax(self.calinski_harabasz)]),
            "gap": gap_rule(self.ks, self.gap, self.gap_se),
            "stability": int(ks[np.nanargmax(np.where(ks > 1, self.stability, -np.inf))])}

  def table(self) -> str:
    lines = [f"{'k':>4} {'inertia':>12} {'silhouette':>10} {'DB':>7} {'CH':>10} {'gap':>7} {'gap se':>7} "
             f"{'stability':>9}"]
    for i, k in enumerate(self.ks):
      lines.append(f"{k:>4} {self.inertia[i]:>12.5g} {self.silhouette[i]:>10.4f} {self.davies_bouldin[i]:>7.4f} "
                   f"{self.calinski_harabasz[i]:>10.5g} {self.gap[i]:>7.4f} {self.gap_se[i]:>7.4f} "
                   f"{self.stability[i]:>9.4f}")
    return "\n".join(lines)


def parse_range(text: str) -> list:
  """``"2..30"`` (inclusive) or ``"2,4,8"`` as a sorted list of distinct ks >= 1."""
  try:
    if ".." in text:
      low, high = (int(part) for part in text.split(".."))
      ks = list(range(low, high + 1))
    else:
      ks = [int(part) for part in text.split(",")]
  except ValueError:
    raise ValueError(f"k range {text!r} must be LOW..HIGH or a comma-separated list of integers") from None
  if not ks or min(ks) < 1:
    raise ValueError(f"k range {text!r} must hold numbers of clusters >= 1")
  return sorted(set(ks))


def gap_rule(ks, gap, se) -> int | None:
  """The smallest k with ``Gap(k) >= Gap(k') - s(k')``, k' the next k of the range; None when none does."""
  for i in range(len(ks) - 1):
    if gap[i] >= gap[i + 1] - se[i + 1]:
      return int(ks[i])
  return None


def choose_k(x, ks=range(2, 31), *, seed: int = 0, runs: int = 4, references: int = 8,
             sample_size: int = 10_000, silhouette_sample: int = 2000) -> Choice:
  """Scores every k of ``ks`` on the rows ``x [n, ...]`` (flattened) and recommends one (:data:`RULE`).

  Rows beyond ``sample_size`` are subsampled (seeded). ``runs`` k-means seedings per k (the best by inertia
  is scored; their agreement is the stability); ``references`` uniform data sets for the gap statistic.
  """
  x = np.asarray(x)
  if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"x must be numeric rows [n, ...], got shape {x.shape} and dtype {x.dtype}")
  x = x.reshape(len(x), -1).astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError("x has NaN or Inf values")
  ks = sorted({int(k) for k in ks})
  rng = np.random.default_rng(seed)
  if len(x) > sample_size:
    x = x[np.sort(rng.choice(len(x), sample_size, replace=False))]
  n = len(x)
  if not ks or ks[0] < 1 or ks[-1] > n - 1:
    raise ValueError(f"ks {ks[0] if ks else ''}..{ks[-1] if ks else ''} must lie in [1, {n - 1}] for {n} rows")
  runs = validation.check_count(runs, "runs", low=2)
  references = validation.check_count(references, "references", low=1)
  key = jax.random.key(seed)
  out = kmeans_kernel.kmeans_range(x, ks, rng=jax.random.fold_in(key, 0), runs=runs)
  inertia = np.asarray(out.inertia)  # [runs, K]
  best = inertia.argmin(0)
  labels = np.asarray(out.labels)[best, np.arange(len(ks))]  # [K, n]

  k_max = max(ks)
  xj = jnp.asarray(x)
  sil, db, ch = [], [], []
  for i, k in enumerate(ks):
    if len(np.unique(labels[i])) < 2:  # k=1, or every point in one cluster: the indices are undefined
      sil.append(np.nan), db.append(np.nan), ch.append(np.nan)
      continue
    lab = jnp.asarray(labels[i])
    sil.append(float(metrics.silhouette(xj, lab, k=k_max, rng=jax.random.fold_in(key, 1),
                                        sample_size=min(silhouette_sample, n))))
    db.append(float(metrics.davies_bouldin(xj, lab, k=k_max)))
    ch.append(float(metrics.calinski_harabasz(xj, lab, k=k_max)))
  stability = np.array([_mean_pairwise_ari(np.asarray(out.labels)[:, i]) for i in range(len(ks))])

  log_w = np.log(np.maximum(inertia.min(0), 1e-30))
  reference = _reference_log_w(x, ks, references, jax.random.fold_in(key, 2))  # [B, K]
  gap = reference.mean(0) - log_w
  se = reference.std(0) * math.sqrt(1 + 1 / references)
  choice = Choice(ks, inertia.min(0), np.array(sil), np.array(db), np.array(ch), gap, se, reference, stability, 0,
                  labels, n)
  scored = np.isfinite(choice.calinski_harabasz)
  choice.k = int(np.asarray(ks)[scored][np.argmax(choice.calinski_harabasz[scored])]) if scored.any() else ks[0]
  return choice


def _mean_pairwise_ari(labelings) -> float:
  pairs = [metrics.ari(a, b) for i, a in enumerate(labelings) for b in labelings[i + 1:]]
  return float(np.mean(pairs))


def _reference_log_w(x, ks, references: int, key) -> np.ndarray:
  """``log W_k`` of k-means (one run) on each of ``references`` data sets uniform in the box of ``x``'s
  principal axes, as ``[references, K]``."""
  mean = x.mean(0)
  _, _, axes = np.linalg.svd(x - mean, full_matrices=False)
  projected = (x - mean) @ axes.T
  low, high = projected.min(0), projected.max(0)
  keys = jax.random.split(key, references)
  log_w = []
  for b in range(references):  # one compiled program, reused: k-means of all ks on each reference set
    uniform = jax.random.uniform(jax.random.fold_in(keys[b], 0), projected.shape, minval=low, maxval=high)
    reference = np.asarray(uniform) @ axes + mean
    out = kmeans_kernel.kmeans_range(reference.astype(np.float32), ks, rng=jax.random.fold_in(keys[b], 1), runs=1)
    log_w.append(np.log(np.maximum(np.asarray(out.inertia)[0], 1e-30)))
  return np.stack(log_w)


def plot(choice: Choice, path) -> None:
  """The criteria against k as a PNG at ``path``, the recommended k marked."""
  from etils import epath

  from jaxclust import figures
  curves = {"within-cluster sum of squares": (choice.inertia, None),
            "silhouette (higher is better)": (choice.silhouette, None),
            "Davies-Bouldin (lower is better)": (choice.davies_bouldin, None),
            "Calinski-Harabasz (higher is better)": (choice.calinski_harabasz, None),
            "gap statistic, +- its standard error": (choice.gap, choice.gap_se),
            "stability (ARI between seedings)": (choice.stability, None)}
  epath.Path(path).write_bytes(figures.choose_k_curves(choice.ks, curves, choice.k))
