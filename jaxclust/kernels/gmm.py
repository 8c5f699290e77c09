"""Diagonal-covariance Gaussian mixture fitted by EM on device (VaDE's initialization).

Dempster, Laird & Rubin (1977) EM for ``p(x) = sum_j pi_j N(x; mu_j, diag(var_j))``. Jiang et al.
(2017) initialize VaDE's mixture prior with such a fit on the pretrained embeddings. Per-cluster
statistics are accumulated in row chunks through GEMMs (``x^2 @ (1/var)^T`` and ``x @ (mu/var)^T``),
so the only ``[n, k]`` temporary is per chunk. With row-sharded input they are ``psum``-ed, as in
:func:`jaxclust.kmeans`. The defaults (``tol`` on the mean log-likelihood, ``reg_covar`` added
to every variance, initialization from k-means) are scikit-learn's, so fits compare one to one.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxclust import parallel, validation
from jaxclust.kernels.chunks import default_chunk_size, scan_chunks
from jaxclust.kernels.kmeans import kmeans


class GMMOutput(NamedTuple):
  weights: jax.Array  # [k] mixing proportions pi
  means: jax.Array  # [k, d]
  variances: jax.Array  # [k, d] diagonal covariances
  log_likelihood: jax.Array  # [] mean log p(x) under the returned parameters
  n_iter: jax.Array  # [] int32 EM iterations run
  converged: jax.Array  # [] bool


def gmm_diag(x, k: int, *, rng, max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
             init: tuple | None = None, kmeans_n_init: int = 1, chunk_size: int | None = None) -> GMMOutput:
  """Fits a k-component diagonal GMM to ``x`` by EM.

  Args:
    x: ``[n, d]`` floating-point points, possibly row-sharded over a mesh.
    k: components, ``1 <= k <= n``.
    rng: key for the k-means initialization (unused when ``init`` is given).
    max_iter: EM iterations at most.
    tol: stop when the mean log-likelihood improves by less than ``tol``.
    reg_covar: added to every variance (keeps components from collapsing onto a point).
    init: optional ``(weights [k], means [k, d], variances [k, d])``. Default: hard k-means
      responsibilities followed by one M-step, as scikit-learn's ``init_params="kmeans"``.
    kmeans_n_init: k-means restarts for that default initialization (the lowest inertia is kept;
      scikit-learn uses 1).
    chunk_size: rows per chunk (default sized to the platform).

  Returns:
    A :class:`GMMOutput`; its log-likelihood is evaluated at the returned parameters.
  """
  validation.check_float_array(x, "x", ranks=(2,))
  n, d = x.shape
  k = validation.check_count(k, "k", low=1, high=n, high_name="n_samples")
  max_iter = validation.check_count(max_iter, "max_iter", low=1)
  reg_covar = validation.check_positive(reg_covar, "reg_covar")
  if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
    raise ValueError(f"tol={tol!r} must be a finite number >= 0")
  sharding = parallel.row_sharding(x)
  if init is None:
    validation.check_rng(rng)
    n_init = validation.check_count(kmeans_n_init, "kmeans_n_init", low=1)
    labels = kmeans(x, k, rng=rng, n_init=n_init).labels
    init_args = (labels,)
  else:
    weights, means, variances = (jnp.asarray(a, jnp.float32) for a in init)
    if weights.shape != (k,) or means.shape != (k, d) or variances.shape != (k, d):
      raise ValueError(f"init shapes {weights.shape}, {means.shape}, {variances.shape} must be ({k},), "
                       f"({k}, {d}), ({k}, {d})")
    if bool(jnp.any(variances <= 0)) or bool(jnp.any(weights <= 0)):
      raise ValueError("init weights and variances must be > 0")
    init_args = (weights / jnp.sum(weights), means, variances)
  chunk_size = chunk_size or default_chunk_size(n // (sharding.n_shards if sharding else 1), k)
  return _fit(x, init_args, jnp.float32(tol), jnp.float32(reg_covar), k=k, max_iter=max_iter,
              chunk_size=validation.check_count(chunk_size, "chunk_size", low=1), sharding=sharding)


@functools.partial(jax.jit, static_argnames=("k", "max_iter", "chunk_size", "sharding"))
def _fit(x, init_args, tol, reg_covar, *, k, max_iter, chunk_size, sharding):
  fit = functools.partial(_fit_local, k=k, max_iter=max_iter, chunk_size=chunk_size)
  if sharding is None:
    return fit(x, init_args, tol, reg_covar, axis_name=None)
  rows = P(sharding.axes)
  init_specs = (rows,) if len(init_args) == 1 else (P(), P(), P())
  return jax.shard_map(functools.partial(fit, axis_name=sharding.axes), mesh=sharding.mesh,
                       in_specs=(rows, init_specs, P(), P()), out_specs=GMMOutput(*(P(),) * 6),
                       check_vma=False)(x, init_args, tol, reg_covar)


def _fit_local(x, init_args, tol, reg_covar, *, k, max_iter, chunk_size, axis_name):
  psum = (lambda v: lax.psum(v, axis_name)) if axis_name else (lambda v: v)
  n_total = psum(jnp.float32(x.shape[0]))

  def m_step(stats):
    resp_sum, sum_x, sum_xx = stats
    nk = resp_sum + 10 * jnp.finfo(jnp.float32).eps  # scikit-learn's guard against empty components
    means = sum_x / nk[:, None]
    variances = jnp.maximum(sum_xx / nk[:, None] - means ** 2, 0.0) + reg_covar
    return nk / n_total, means, variances

  def e_step(params):
    """Sufficient statistics of the responsibilities under ``params``, and the mean log-likelihood."""
    weights, means, variances = params
    precision = 1.0 / variances
    # log N(x; mu, diag var) = -0.5 [d log 2pi + sum log var + sum x^2/var - 2 x.(mu/var) + sum mu^2/var]
    const = (jnp.log(weights) - 0.5 * (x.shape[1] * math.log(2 * math.pi) + jnp.sum(jnp.log(variances), -1)
                                       + jnp.sum(means ** 2 * precision, -1)))

    def step(carry, chunk):
      xc = chunk[0].astype(jnp.float32)
      log_prob = const - 0.5 * (xc * xc) @ precision.T + xc @ (means * precision).T  # [c, k]
      norm = jax.nn.logsumexp(log_prob, axis=-1)
      resp = jnp.exp(log_prob - norm[:, None])
      resp_sum, sum_x, sum_xx, total = carry
      return (resp_sum + resp.sum(0), sum_x + resp.T @ xc, sum_xx + resp.T @ (xc * xc), total + norm.sum()), None

    zeros = (jnp.zeros(k), jnp.zeros((k, x.shape[1])), jnp.zeros((k, x.shape[1])), jnp.float32(0))
    *stats, total = psum(scan_chunks(step, zeros, (x,), chunk_size)[0])
    return tuple(stats), total / n_total

  if len(init_args) == 1:  # hard k-means responsibilities, then one M-step
    xf = x.astype(jnp.float32)
    onehot = jax.nn.one_hot(init_args[0], k, dtype=jnp.float32)
    params = m_step(psum((onehot.sum(0), onehot.T @ xf, onehot.T @ (xf * xf))))
  else:
    params = init_args

  def cond(state):
    _, _, it, converged = state
    return (it < max_iter) & ~converged

  def body(state):
    params, previous, it, _ = state
    stats, log_likelihood = e_step(params)
    return m_step(stats), log_likelihood, it + 1, jnp.abs(log_likelihood - previous) < tol

  params, _, n_iter, converged = lax.while_loop(cond, body, (params, jnp.float32(-jnp.inf), jnp.int32(0), False))
  _, log_likelihood = e_step(params)
  return GMMOutput(*params, log_likelihood, n_iter, converged)
