"""SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020): contrast two augmented views.

Each image gives two views; their projections are pulled together and pushed away from the other
``2(B - 1)`` views of the batch by the NT-Xent loss (eq. 1 of the paper). ``B`` is the global
batch: under ``jit`` with the batch sharded over a mesh, ``z @ z.T`` spans every device's views,
so the negatives come from all devices, as in the paper's TPU implementation. The SCAN pretext
recipe for CIFAR is SimCLR with a ResNet-18, batch 512, temperature 0.1, 500 epochs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


def nt_xent(z1, z2, temperature: float = 0.1, mask=None):
  """NT-Xent of eq. 1, averaged over the ``2B`` views.

  Args:
    z1, z2: ``[B, e]`` projections of the two views of the same ``B`` images (not normalized).
    temperature: tau of the paper (0.1 in SCAN's SimCLR configs; 0.5 in SimCLR's CIFAR runs).
    mask: optional ``[B]``, False for padding images: they are neither anchors nor negatives.

  Returns:
    The scalar loss ``mean_i -log( exp(s(i, pos(i)) / tau) / sum_{j != i} exp(s(i, j) / tau) )``
    with ``s`` the cosine similarity.
  """
  b = z1.shape[0]
  z = jnp.concatenate([z1, z2]).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  logits = z @ z.T / temperature
  valid = jnp.ones((2 * b,), bool) if mask is None else jnp.concatenate([mask, mask])
  excluded = jnp.eye(2 * b, dtype=bool) | ~valid[None, :]
  logits = jnp.where(excluded, -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  per_view = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), positive[:, None], axis=-1)[:, 0]
  return jnp.sum(jnp.where(valid, per_view, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


class SimCLRState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # {"backbone": ..., "head": ...}
  batch_stats: Any
  opt_state: Any


# One compiled program, which the persistent compilation cache can keep, not one per op as eagerly.
@functools.partial(jax.jit, static_argnames=("model", "tx"))
def init(model: nn.Module, rng, example_images, tx: optax.GradientTransformation) -> SimCLRState:
  variables = model.init(rng, example_images, train=False)
  return SimCLRState(step=jnp.int32(0), params=variables["params"], batch_stats=variables.get("batch_stats", {}),
                     opt_state=tx.init(variables["params"]))


def train_step(state: SimCLRState, batch, rng, *, model: nn.Module, tx, augment: Callable, temperature: float = 0.1):
  """One step on ``{"image": [B, H, W, C]}``: two views from ``augment(rng, images)``, NT-Xent.
  With ``{"views": (view_1, view_2)}`` (host-made views) ``augment`` is not used.

  ``model(images, train=True)`` returns the projections ``[B, e]``; BatchNorm statistics are
  taken over the whole (global) batch of both views.
  """
  rng = jax.random.fold_in(rng, state.step)
  if "views" in batch:  # the two views, made on the host (input="tf.data")
    views = jnp.concatenate(batch["views"])
  else:
    images = batch["image"]
    views = jnp.concatenate([augment(jax.random.fold_in(rng, 1), images),
                             augment(jax.random.fold_in(rng, 2), images)])
  mask = batch.get("mask")

  def loss_fn(params):
    z, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, views, train=True,
                             mutable=["batch_stats"])
    z1, z2 = jnp.split(z, 2)
    return nt_xent(z1, z2, temperature, mask), updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state), {"loss": loss}
