"""Mini-batch k-means (Sculley 2010, "Web-scale k-means clustering") for streams and huge data.

Sculley's per-center learning rate ``1 / v_c`` (``v_c`` = points the center has absorbed so far)
makes each center the running mean of every point ever assigned to it; applied to a whole batch at
once, that is ``c <- (v_c c + sum_batch) / (v_c + n_c)``, which is what :func:`minibatch_update`
computes in one chunked pass.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxclust import validation
from jaxclust.kernels.chunks import default_chunk_size, normalize_rows
from jaxclust.kernels.kmeans import KMeansOutput, _kmeans_plus_plus, _Ops


class MiniBatchState(NamedTuple):
  centers: jax.Array  # [k, d]
  counts: jax.Array  # [k] total weight absorbed by each center
  step: jax.Array  # [] int32


def minibatch_init(centers) -> MiniBatchState:
  """A streaming state starting from ``[k, d]`` centers (e.g. k-means++ on a first sample)."""
  validation.check_float_array(centers, "centers", ranks=(2,))
  k = centers.shape[0]
  return MiniBatchState(jnp.asarray(centers, jnp.float32), jnp.zeros(k, jnp.float32), jnp.int32(0))


@functools.partial(jax.jit, static_argnames=("spherical", "chunk_size"))
def minibatch_update(state: MiniBatchState, batch, sample_weight=None, *, spherical: bool = False,
                     chunk_size: int = 4096) -> MiniBatchState:
  """One mini-batch step: assign ``batch`` ([b, d]) to the nearest centers, move them to running means.

  Pure and jittable, for data that arrives as a stream. Centers that receive no point stay put.
  """
  k = state.centers.shape[0]
  w = jnp.ones(batch.shape[0], jnp.float32) if sample_weight is None else sample_weight.astype(jnp.float32)
  ops = _Ops(k=k, chunk_size=chunk_size, spherical=spherical, precision=None, psum=lambda v: v)
  sums, n_c, _ = ops.accumulate(batch, w, state.centers)
  counts = state.counts + n_c
  centers = jnp.where(n_c[:, None] > 0,
                      (state.centers * state.counts[:, None] + sums) / jnp.maximum(counts, 1e-30)[:, None],
                      state.centers)
  if spherical:
    centers = normalize_rows(centers)
  return MiniBatchState(centers, counts, state.step + 1)


def minibatch_kmeans(x, k: int, *, rng, batch_size: int = 1024, n_steps: int = 100,
                     init_size: int | None = None, sample_weight=None, spherical: bool = False,
                     tol: float = 1e-4) -> KMeansOutput:
  """Mini-batch k-means over an in-memory (possibly sharded) ``x``: ``n_steps`` random batches.

  Centers start from greedy k-means++ on ``init_size`` random points (default ``3 * batch_size``,
  as scikit-learn); batches are drawn uniformly with replacement by global index, so a row-sharded
  ``x`` gives the same result as an unsharded one. Labels and inertia come from a final full pass.

  Args:
    x: ``[n, d]`` floating-point points.
    k: number of clusters.
    rng: a ``jax.random`` key.
    batch_size: points per step.
    n_steps: number of mini-batch steps.
    init_size: points for the k-means++ seeding.
    sample_weight: optional ``[n]`` non-negative weights (used in the updates and the final pass).
    spherical: cosine variant (unit rows and centers).
    tol: ``converged`` reports whether the last step moved the centers by at most
      ``tol * mean(var(x, axis=0))`` (squared shift), as in :func:`jaxclust.kmeans`.

  Returns:
    A :class:`jaxclust.KMeansOutput` with ``n_iter = n_steps``.
  """
  validation.check_float_array(x, "x", ranks=(2,))
  n, _ = x.shape
  k = validation.check_count(k, "k", low=1, high=n, high_name="n_samples")
  batch_size = validation.check_count(batch_size, "batch_size", low=1)
  n_steps = validation.check_count(n_steps, "n_steps", low=1)
  init_size = validation.check_count(init_size or min(n, max(3 * batch_size, k)), "init_size", low=k, high=n,
                                     high_name="n_samples")
  validation.check_rng(rng)
  if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
    raise ValueError(f"tol={tol!r} must be a finite number >= 0")
  if sample_weight is None:
    sample_weight = jnp.ones(n, jnp.float32)
  else:
    validation.check_weights(sample_weight, (n,))
  return _minibatch(x, sample_weight, rng, jnp.float32(tol), k=k, batch_size=batch_size, n_steps=n_steps,
                    init_size=init_size, spherical=spherical, chunk_size=default_chunk_size(n, k))


@functools.partial(jax.jit, static_argnames=("k", "batch_size", "n_steps", "init_size", "spherical", "chunk_size"))
def _minibatch(x, w, rng, tol, *, k, batch_size, n_steps, init_size, spherical, chunk_size):
  n = x.shape[0]
  ops = _Ops(k=k, chunk_size=chunk_size, spherical=spherical, precision=None, psum=lambda v: v)
  key_init, key_seed, key_steps = jax.random.split(rng, 3)
  sample = jax.random.choice(key_init, n, (init_size,), replace=False)
  centers = _kmeans_plus_plus(x[sample], w[sample], key_seed, ops, 2 + int(math.log(k)), None)
  state = MiniBatchState(centers, jnp.zeros(k, jnp.float32), jnp.int32(0))

  def step(carry, key):
    state, _ = carry
    idx = jax.random.randint(key, (batch_size,), 0, n)
    new = minibatch_update(state, x[idx], w[idx], spherical=spherical, chunk_size=min(chunk_size, batch_size))
    return (new, jnp.sum((new.centers - state.centers) ** 2)), None

  (state, shift), _ = lax.scan(step, (state, jnp.float32(0)), jax.random.split(key_steps, n_steps))
  xf = x.astype(jnp.float32)
  var = jnp.mean(xf * xf, axis=0) - jnp.mean(xf, axis=0) ** 2
  (_, counts, inertia), labels = ops.accumulate(x, w, state.centers, with_labels=True)
  return KMeansOutput(state.centers, labels, inertia, jnp.int32(n_steps),
                      shift <= tol * jnp.mean(jnp.maximum(var, 0.0)), counts)
