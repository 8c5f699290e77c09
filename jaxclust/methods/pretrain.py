"""Autoencoder pretraining shared by DEC, IDEC and VaDE: minimize reconstruction error.

The papers pretrain the ``d-500-500-2000-10`` autoencoder on the whole dataset. DEC uses greedy
layer-wise denoising pretraining; its Keras re-implementations and IDEC train end to end with
Adam, batch 256, 200 epochs, which is what is offered here. An epoch can run as one compiled
``lax.scan`` over on-device batches (:func:`train_epoch`): with the dataset already on device,
no Python runs per step.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxclust.models.autoencoder import reconstruction_loss


class PretrainState(struct.PyTreeNode):
  step: jax.Array  # [] int32
  params: Any
  opt_state: Any


# One compiled program, which the persistent compilation cache can keep, not one per op as eagerly.
@functools.partial(jax.jit, static_argnames=("model", "tx"))
def init(model: nn.Module, rng, example_x, tx: optax.GradientTransformation) -> PretrainState:
  params = model.init(rng, example_x)["params"]
  return PretrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params))


def train_step(state: PretrainState, batch, rng, *, model, tx, loss: str = "mse"):
  """One step on ``{"x": [b, ...], "mask": [b]}``; ``rng`` is unused (no noise in end-to-end pretraining).

  ``loss`` is ``"mse"`` (DEC/IDEC) or ``"bce"`` (VaDE, whose decoder outputs Bernoulli logits).
  """
  del rng

  def loss_fn(params):
    _, x_hat = model.apply({"params": params}, batch["x"])
    return reconstruction_loss(batch["x"], x_hat, batch.get("mask"), kind=loss)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), {"loss": loss}


def epoch_batches(rng, n: int, batch_size: int):
  """``[steps, batch_size]`` shuffled row indices covering all ``n`` rows once, and their mask.

  The last batch is padded (with row 0, masked out) so every sample is used and shapes stay static.
  """
  steps = -(-n // batch_size)
  order = jax.random.permutation(rng, n)
  padded = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])
  mask = jnp.arange(steps * batch_size) < n
  return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnames=("model", "tx", "batch_size", "loss", "n", "batch_sharding"),
                   donate_argnums=0)
def train_epoch(state: PretrainState, x, rng, *, model, tx, batch_size: int = 256, loss: str = "mse",
                n: int | None = None, batch_sharding=None):
  """One shuffled pass over the on-device dataset ``x`` ([n, ...]); returns the mean loss.

  ``x`` may be a row-sharded global array whose rows past ``n`` are padding (see
  :func:`jaxclust.parallel.global_rows`); batches then draw from the first ``n`` rows only. With
  ``batch_sharding`` (e.g. ``NamedSharding(mesh, P("data"))``) each gathered batch is split over
  the devices, so every device computes the gradient of its own share (data parallelism).
  """
  index, mask = epoch_batches(rng, x.shape[0] if n is None else n, batch_size)

  def step(state, batch):
    idx, m = batch
    xb = x[idx]
    if batch_sharding is not None:
      xb, m = jax.lax.with_sharding_constraint((xb, m), batch_sharding)
    return train_step(state, {"x": xb, "mask": m}, None, model=model, tx=tx, loss=loss)

  state, metrics = jax.lax.scan(step, state, (index, mask))
  return state, {"loss": jnp.mean(metrics["loss"])}
