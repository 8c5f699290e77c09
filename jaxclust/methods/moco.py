"""MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick & He, 2020): contrast against a queue of keys.

A query encoder is trained with InfoNCE (eq. 1 of MoCo): each query's positive is the key of the
other view of its image, from a momentum encoder (an exponential moving average of the query
encoder, m = 0.999), and its negatives are the ``K`` keys of earlier batches held in a queue
(65,536 in the paper). MoCo v2 adds the MLP projection head, stronger augmentation and
temperature 0.2. The queue and the momentum encoder are part of the state, so they are
checkpointed with it.

BatchNorm: the paper shuffles the batch across GPUs for the key encoder so that per-GPU batch
statistics cannot leak which key matches which query. Here BatchNorm statistics are computed over
the global batch (under ``jit`` with the batch sharded), as SimCLR does, which closes the same
leak without shuffling.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


def _normalize(z):
  z = z.astype(jnp.float32)
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def info_nce(q, k, queue, temperature: float = 0.2, mask=None):
  """InfoNCE of MoCo's eq. 1 with normalized ``q`` ``[B, e]``, keys ``k`` ``[B, e]``, ``queue`` ``[K, e]``.

  ``-log( exp(q.k+ / t) / (exp(q.k+ / t) + sum_queue exp(q.k- / t)) )`` averaged over the
  (unmasked) queries. Inputs are normalized here; the keys get no gradient.
  """
  q, k, queue = _normalize(q), jax.lax.stop_gradient(_normalize(k)), jax.lax.stop_gradient(_normalize(queue))
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=1) / temperature
  per_query = -jax.nn.log_softmax(logits, axis=-1)[:, 0]
  if mask is None:
    return jnp.mean(per_query)
  return jnp.sum(jnp.where(mask, per_query, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


class MoCoState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key_params: Any  # the momentum encoder
  key_batch_stats: Any
  queue: jax.Array  # [K, e] normalized keys of earlier batches
  queue_ptr: jax.Array  # [] int32, where the next batch of keys goes


# One compiled program, which the persistent compilation cache can keep, not one per op as eagerly.
@functools.partial(jax.jit, static_argnames=("model", "tx", "queue_size", "out_dim"))
def init(model: nn.Module, rng, example_images, tx: optax.GradientTransformation, *, queue_size: int = 65536,
         out_dim: int | None = None) -> MoCoState:
  """Both encoders start equal; the queue starts as random unit vectors (as in the paper's code)."""
  variables = model.init(rng, example_images, train=False)
  out_dim = out_dim or model.apply(variables, example_images).shape[-1]
  queue = _normalize(jax.random.normal(jax.random.fold_in(rng, 1), (queue_size, out_dim)))
  batch_stats = variables.get("batch_stats", {})
  return MoCoState(step=jnp.int32(0), params=variables["params"], batch_stats=batch_stats,
                   opt_state=tx.init(variables["params"]), key_params=variables["params"],
                   key_batch_stats=batch_stats, queue=queue, queue_ptr=jnp.int32(0))


def train_step(state: MoCoState, batch, rng, *, model: nn.Module, tx, augment: Callable, temperature: float = 0.2,
               momentum: float = 0.999):
  """One step on ``{"image": [B, H, W, C]}`` (or host-made ``{"views": (query, key)}``); the queue size
  must be a multiple of B."""
  rng = jax.random.fold_in(rng, state.step)
  if "views" in batch:  # made on the host (input="tf.data")
    view_q, view_k = batch["views"]
  else:
    view_q, view_k = augment(jax.random.fold_in(rng, 1), batch["image"]), augment(jax.random.fold_in(rng, 2),
                                                                                  batch["image"])
  b = view_q.shape[0]
  if state.queue.shape[0] % b:
    raise ValueError(f"queue size {state.queue.shape[0]} must be a multiple of the batch {b}")
  mask = batch.get("mask")
  # As in the paper's code: the momentum update comes first, then the keys from the updated encoder.
  key_params = jax.tree.map(lambda k, p: momentum * k + (1.0 - momentum) * p, state.key_params, state.params)
  keys, key_updates = model.apply({"params": key_params, "batch_stats": state.key_batch_stats}, view_k,
                                  train=True, mutable=["batch_stats"])
  keys = _normalize(keys)

  def loss_fn(params):
    q, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, view_q, train=True,
                             mutable=["batch_stats"])
    return info_nce(q, keys, state.queue, temperature, mask), updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  queue = jax.lax.dynamic_update_slice(state.queue, keys, (state.queue_ptr, 0))
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                       key_params=key_params, key_batch_stats=key_updates["batch_stats"], queue=queue,
                       queue_ptr=(state.queue_ptr + b) % state.queue.shape[0]), {"loss": loss}
