"""PCA on device, with whitening: DeepCluster's (Caron et al. 2018) reduction of features before k-means.

Written here rather than taken from a library because it must run on row-sharded device arrays: each device
sums its own rows in chunks and the sums are ``psum``-ed, as :func:`jaxclust.kmeans` does, so the ``[n, d]``
features never leave the devices. Two passes (the mean, then the centered scatter matrix ``X_c^T X_c``) keep
float32 accurate when the mean is large against the spread; the ``[d, d]`` covariance is eigendecomposed
(``eigh``). Conventions are scikit-learn's ``PCA``: variances with ``n - 1``, whitened components of unit
variance; each component's sign is fixed so that its largest-magnitude entry is positive (scikit-learn fixes it
from the SVD instead, so signs may differ).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxclust import parallel, validation
from jaxclust.kernels.chunks import default_chunk_size, normalize_rows, scan_chunks


class PCAOutput(NamedTuple):
  mean: jax.Array  # [d]
  components: jax.Array  # [c, d] unit principal axes, by decreasing variance
  explained_variance: jax.Array  # [c] variance along each axis (n - 1 denominator)
  explained_variance_ratio: jax.Array  # [c] share of the total variance


def pca(x, n_components: int, *, chunk_size: int | None = None) -> PCAOutput:
  """The first ``n_components`` principal axes of the rows of ``x`` (``[n, d]``, possibly row-sharded).

  Memory: besides ``x``, ``[d, d]`` sums and one ``[chunk, d]`` block per device.
  """
  validation.check_float_array(x, "x", ranks=(2,))
  n, d = x.shape
  n_components = validation.check_count(n_components, "n_components", low=1, high=min(n, d),
                                        high_name="min(n_samples, n_features)")
  if n < 2:
    raise ValueError(f"PCA needs at least 2 rows, got {n}")
  sharding = parallel.row_sharding(x)
  chunk_size = chunk_size or default_chunk_size(n // (sharding.n_shards if sharding else 1), d)
  return _pca(x, k=n_components, chunk_size=validation.check_count(chunk_size, "chunk_size", low=1),
              sharding=sharding)


def pca_transform(x, out: PCAOutput, *, whiten: bool = False, normalize: bool = False):
  """``x`` projected on the axes: ``(x - mean) @ components^T``, divided by the axes' standard deviations
  (``whiten``) and scaled to unit rows (``normalize``: DeepCluster's l2-normalization after whitening)."""
  z = (jnp.asarray(x, jnp.float32) - out.mean) @ out.components.T
  if whiten:
    z = z / jnp.sqrt(out.explained_variance)
  return normalize_rows(z) if normalize else z


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "sharding"))
def _pca(x, *, k, chunk_size, sharding):
  fit = functools.partial(_pca_local, k=k, chunk_size=chunk_size)
  if sharding is None:
    return fit(x, axis_name=None)
  return jax.shard_map(functools.partial(fit, axis_name=sharding.axes), mesh=sharding.mesh,
                       in_specs=(P(sharding.axes),), out_specs=PCAOutput(P(), P(), P(), P()),
                       check_vma=False)(x)


def _pca_local(x, *, k, chunk_size, axis_name):
  psum = (lambda v: jax.lax.psum(v, axis_name)) if axis_name else (lambda v: v)
  x = x.astype(jnp.float32)
  d = x.shape[1]
  n = psum(jnp.float32(x.shape[0]))
  total, _ = scan_chunks(lambda s, c: (s + jnp.sum(c[0], axis=0), None), jnp.zeros(d, jnp.float32), (x,), chunk_size)
  mean = psum(total) / n

  def scatter(s, c):
    centered = c[0] - mean
    return s + jnp.matmul(centered.T, centered, precision=jax.lax.Precision.HIGHEST), None

  s, _ = scan_chunks(scatter, jnp.zeros((d, d), jnp.float32), (x,), chunk_size)
  covariance = psum(s) / (n - 1)
  values, vectors = jnp.linalg.eigh(covariance)  # ascending
  values, vectors = values[::-1], vectors[:, ::-1].T  # [d], [d, d] rows = axes, descending
  largest = jnp.take_along_axis(vectors, jnp.argmax(jnp.abs(vectors), axis=1)[:, None], axis=1)
  vectors = vectors * jnp.sign(largest)
  values = jnp.maximum(values, 0.0)
  return PCAOutput(mean, vectors[:k], values[:k], values[:k] / jnp.maximum(jnp.sum(values), 1e-30))
