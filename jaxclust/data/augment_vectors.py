"""On-device views of vector rows (tabular features, flattened time series, embeddings) in pure JAX.

What crops and colour jitter are to images, for rows without a spatial structure: each view of a row is
- :func:`interpolate`: moved toward one of its nearest neighbours in the training data by a weight drawn
  per row from ``U(0, mix)``, so it stays on the segment between the two (neighbour mixing, as in the
  tabular SSL work that interpolates within a class-consistent neighbourhood; the neighbours are
  precomputed once with :func:`jaxclust.kernels.knn.knn`, :func:`context`);
- :func:`feature_mask`: each feature replaced with probability ``mask`` by the training mean of that
  feature (0 after standardization), SCARF's corruption (Bahri et al., ICLR 2022) with the mean as the
  value a feature carries no information in;
- :func:`gaussian_noise`: plus Gaussian noise of ``noise`` times each feature's standard deviation in the
  training data, so a feature on a large scale is perturbed as much, relative to its spread, as a small one.

Every function is pure, takes an explicit ``rng`` and keeps static shapes; rows may have any trailing
shape (the statistics have the row's shape). A batch is a :class:`Rows`: the rows, one sampled partner
(nearest neighbour) each, and the training statistics, taken from the on-device dataset by :func:`take`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Context(NamedTuple):
  """What the views of a dataset need, computed once (:func:`context`) and replicated on the devices."""
  neighbors: jax.Array  # [n, k] int32: each row's k nearest neighbours (Euclidean), itself excluded
  mean: jax.Array  # [...] per-feature mean of the training rows (the masking fill)
  std: jax.Array  # [...] per-feature standard deviation of the training rows (the noise scale)


class Rows(NamedTuple):
  """A batch of rows as the views take it."""
  x: jax.Array  # [B, ...] the rows
  partner: jax.Array  # [B, ...] one of each row's nearest neighbours
  mean: jax.Array  # [...]
  std: jax.Array  # [...]


def context(x: np.ndarray, k: int) -> Context:
  """The views' :class:`Context` of the rows ``x`` ``[n, ...]`` (host numpy, every row valid): the ``k``
  nearest neighbours of each row by exact Euclidean kNN on the device, and the features' mean and
  standard deviation (float64 sums)."""
  from jaxclust.kernels.knn import knn
  n = x.shape[0]
  if not 1 <= k <= n - 1:
    raise ValueError(f"k={k} neighbours must be in [1, n_samples - 1={n - 1}]")
  flat = np.asarray(x, np.float32).reshape(n, -1)
  found = np.asarray(knn(jnp.asarray(flat), k + 1, metric="euclidean").indices)
  # Column 0 is the row itself unless an identical row comes first: drop the row wherever it sits.
  is_self = found == np.arange(n)[:, None]
  order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
  neighbors = np.take_along_axis(found, order, axis=1).astype(np.int32)
  mean, std = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
  return Context(neighbors, mean.astype(np.float32), std.astype(np.float32))


def placed_context(x, n: int, k: int, mesh) -> Context:
  """:func:`context` of the first ``n`` rows of the on-device ``x`` (a global array, padded), replicated on
  ``mesh``: the same on every process, computed from the data alone (a resumed run gets the same)."""
  from jaxclust import parallel
  return parallel.put(context(parallel.fetch(x)[:n], k), mesh)


def take(x, context: Context, index, rng) -> Rows:
  """Rows ``index`` of the on-device ``x`` with one partner each, drawn uniformly among its neighbours."""
  column = jax.random.randint(rng, index.shape, 0, context.neighbors.shape[1])
  return Rows(x[index], x[context.neighbors[index, column]], context.mean, context.std)


def gaussian_noise(rng, x, std, scale: float):
  """``x + scale * std * N(0, 1)``, independently for every entry; ``std`` has the row's shape."""
  return x + scale * std * jax.random.normal(rng, x.shape, x.dtype)


def feature_mask(rng, x, fill, p: float):
  """Every entry of ``x`` replaced by its feature's ``fill`` (the row's shape) with probability ``p``."""
  return jnp.where(jax.random.uniform(rng, x.shape) < p, jnp.broadcast_to(fill, x.shape).astype(x.dtype), x)


def interpolate(rng, x, partner, high: float):
  """``x + w (partner - x)`` with ``w ~ U(0, high)`` drawn once per row: a point of the segment from the
  row toward its partner."""
  w = jax.random.uniform(rng, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype, 0.0, high)
  return x + w * (partner - x)


def view(rng, rows: Rows, *, noise: float, mask: float, mix: float):
  """One view of every row of ``rows``: toward a neighbour, then masked, then noised. ``[B, ...]`` float32."""
  k_mix, k_mask, k_noise = jax.random.split(rng, 3)
  x = rows.x.astype(jnp.float32)
  if mix > 0:
    x = interpolate(k_mix, x, rows.partner.astype(jnp.float32), mix)
  if mask > 0:
    x = feature_mask(k_mask, x, rows.mean, mask)
  if noise > 0:
    x = gaussian_noise(k_noise, x, rows.std, noise)
  return x


def views(rng, rows: Rows, *, count: int, **options):
  """``count`` independent views of every row (SwAV's and DeepCluster-v2's multi-crop for vectors):
  a list of ``[B, ...]`` arrays, static in number and shape."""
  return [view(jax.random.fold_in(rng, i), rows, **options) for i in range(count)]


def unaugmented(rng, rows: Rows):
  """The rows themselves (SCAN's self-labeling targets, the un-augmented SCAN stage)."""
  del rng
  return rows.x.astype(jnp.float32)


def options(config) -> tuple:
  """``config.views``' view settings, hashable: ``(("mask", m), ("mix", w), ("noise", s))``."""
  v = config.views
  return tuple(sorted({"noise": float(v.noise), "mask": float(v.mask), "mix": float(v.mix)}.items()))


@functools.lru_cache(maxsize=None)
def batch_view(settings: tuple):
  """:func:`view` with ``settings`` (from :func:`options`): ``(rng, rows) -> [B, ...]``, the same object for the
  same settings (compiled epochs are cached on it)."""
  return functools.partial(view, **dict(settings))
