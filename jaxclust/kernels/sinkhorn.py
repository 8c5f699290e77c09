"""SwAV's equal-partition Sinkhorn-Knopp codes, in the log domain, over the global batch.

Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
Algorithm 1 and ``distributed_sinkhorn`` in the official code: ``Q = exp(scores / eps)`` is scaled
so that every prototype receives ``B / K`` of the mass and every sample exactly 1.

The official code exponentiates first, which overflows float32 once ``|scores| / eps > 88`` (e.g.
unnormalized scores, or fp16/bf16 logits) and yields inf/NaN codes. Here every normalization is a
log-sum-exp, so the same mathematics never overflows. ott-jax has a general log-domain Sinkhorn,
but not SwAV's fixed-iteration schedule with its row-then-column order and cross-device marginals
(``pmax``/``psum`` over ``axis_name``), which is what SwAV's semantics need.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxclust import validation


def sinkhorn_knopp(scores, *, epsilon: float = 0.05, n_iter: int = 3, axis_name=None):
  """SwAV codes for ``scores`` (samples x prototypes); no gradient flows through them.

  Each iteration divides every prototype column by its total over the global batch (then by K)
  and every sample row by its total (then by B); the result is multiplied by B, so each row of the
  output sums to 1 and each column to ``B / K`` over the global batch (exactly after the last
  row step, approximately for columns after a few iterations).

  Args:
    scores: ``[b, K]`` prototype scores of this device's samples, any float dtype (computed in fp32).
    epsilon: entropic regularization; 0.05 in SwAV.
    n_iter: Sinkhorn iterations; 3 in SwAV.
    axis_name: inside ``jax.shard_map``/``pmap``, the axis (or tuple of axes) over which the batch
      is split; the marginals are then those of the global batch ``B = b * axis_size``, and the
      result equals the single-device computation on the concatenated batch.

  Returns:
    ``[b, K]`` float32 codes.
  """
  validation.check_float_array(scores, "scores", ranks=(2,))
  epsilon = validation.check_positive(epsilon, "epsilon")
  n_iter = validation.check_count(n_iter, "n_iter", low=0)
  log_q = lax.stop_gradient(scores).astype(jnp.float32) / epsilon
  n_protos = scores.shape[1]
  batch = scores.shape[0] * (lax.psum(1, axis_name) if axis_name else 1)

  def global_max(v):
    return lax.pmax(v, axis_name) if axis_name else v

  def global_sum(v):
    return lax.psum(v, axis_name) if axis_name else v

  def log_total(v, axis):
    """log of the sum of exp(v) over ``axis``, summed across devices (0 = the batch axis)."""
    if axis == 1:  # samples are never split across devices
      return jax.nn.logsumexp(v, axis=1, keepdims=True)
    m = lax.stop_gradient(global_max(jnp.max(v, axis=axis, keepdims=True)))
    return m + jnp.log(global_sum(jnp.sum(jnp.exp(v - m), axis=axis, keepdims=True)))

  # The paper's first step, Q /= sum(Q), scales Q by a constant that the first prototype
  # normalization below cancels exactly; it is omitted (two fewer passes over [b, K]).
  log_k, log_b = math.log(n_protos), jnp.log(jnp.float32(batch))

  def iteration(_, log_q):
    log_q = log_q - log_total(log_q, 0) - log_k  # each prototype gets 1/K of the mass
    return log_q - log_total(log_q, 1) - log_b  # each sample gets 1/B
  log_q = lax.fori_loop(0, n_iter, iteration, log_q)
  return jnp.exp(log_q + log_b)
