"""DEC: Deep Embedded Clustering (Xie, Girshick & Farhadi, ICML 2016).

After autoencoder pretraining, the encoder and k cluster centers are trained together to sharpen
the Student-t soft assignment Q (eq. 1) towards a target distribution P (eq. 3) by minimizing
KL(P || Q) (eq. 2). P is recomputed over the whole dataset every ``update_interval`` steps (140 on
MNIST in the official code), not per batch; training stops when fewer than ``tol`` (0.1%) of the
labels change between two refreshes. Centers start from k-means (n_init 20) on the embeddings.
The official optimizer is SGD, learning rate 0.01, momentum 0.9, batch 256.
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


def soft_assignment(z, centers, alpha: float = 1.0):
  """Eq. 1: ``q_ij ~ (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2)``, rows normalized.

  Args:
    z: ``[n, e]`` embeddings; centers: ``[k, e]``; alpha: Student-t degrees of freedom (1 in DEC).

  Returns:
    ``[n, k]`` soft assignments.
  """
  sq = jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ centers.T + jnp.sum(centers * centers, -1)
  kernel = (1.0 + jnp.maximum(sq, 0.0) / alpha) ** (-(alpha + 1.0) / 2.0)
  return kernel / jnp.sum(kernel, axis=-1, keepdims=True)


def target_distribution(q, mask=None):
  """Eq. 3: ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')`` with ``f_j = sum_i q_ij`` over all samples.

  Args:
    q: ``[n, k]`` soft assignments of the whole dataset (rows may be sharded).
    mask: optional ``[n]``, False for padding rows, which are left out of ``f``.
  """
  weight = q if mask is None else q * mask[:, None]
  frequency = jnp.sum(weight, axis=0)
  p = q ** 2 / frequency
  return p / jnp.sum(p, axis=-1, keepdims=True)


def kl_divergence(p, q, mask=None):
  """Eq. 2: ``KL(P || Q) = sum_j p_ij log(p_ij / q_ij)``, averaged over the (unmasked) samples."""
  per_sample = jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0), axis=-1)
  if mask is None:
    return jnp.mean(per_sample)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1)


class DECState(struct.PyTreeNode):
  """Everything a DEC/IDEC run needs to resume: this pytree is what is checkpointed."""
  step: jax.Array  # [] int32
  params: Any  # {"ae": autoencoder params, "centers": [k, e]}
  opt_state: Any
  target: jax.Array  # [n, k] P from the last whole-dataset refresh
  labels: jax.Array  # [n] int32 argmax of Q at the last refresh (for the tol criterion)


def sgd(learning_rate: float = 0.01, momentum: float = 0.9) -> optax.GradientTransformation:
  """DEC's optimizer for the clustering stage (official code)."""
  return optax.sgd(learning_rate, momentum=momentum)


def init(ae_params, centers, n: int, tx: optax.GradientTransformation, *, keep_decoder: bool = False) -> DECState:
  """The clustering-stage state after pretraining and k-means on the embeddings.

  DEC discards the decoder (as in the paper), so its parameters are neither differentiated nor
  updated; IDEC, whose loss reconstructs, passes ``keep_decoder=True``.
  """
  if not keep_decoder:
    ae_params = {name: p for name, p in ae_params.items() if name.startswith(("encoder_", "embedding"))}
  params = {"ae": ae_params, "centers": jnp.asarray(centers, jnp.float32)}
  k = params["centers"].shape[0]
  return DECState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                  target=jnp.full((n, k), 1.0 / k, jnp.float32), labels=jnp.full((n,), -1, jnp.int32))


def embed(model: nn.Module, params, x):
  return model.apply({"params": params["ae"]}, x, method=model.encode)


def loss_fn(params, batch, target, *, model, alpha, gamma):
  """KL(P || Q) on the batch, plus ``gamma`` times the reconstruction error when ``gamma > 0`` (IDEC)."""
  mask = batch.get("mask")
  if gamma > 0:
    z, x_hat = model.apply({"params": params["ae"]}, batch["x"])
  else:
    z, x_hat = embed(model, params, batch["x"]), None
  q = soft_assignment(z, params["centers"], alpha)
  kl = kl_divergence(target[batch["index"]], q, mask)
  metrics = {"kl": kl}
  loss = kl
  if gamma > 0:
    metrics["reconstruction"] = reconstruction_loss(batch["x"], x_hat, mask)
    loss = metrics["reconstruction"] + gamma * kl  # IDEC, eq. 6 (gamma weights the clustering loss)
  metrics["loss"] = loss
  return loss, metrics


def train_step(state: DECState, batch, rng, *, model, tx, alpha: float = 1.0, gamma: float = 0.0):
  """One SGD step on a batch ``{"x": [b, ...], "index": [b] rows into the dataset, "mask": [b]}``.

  ``rng`` is unused (DEC's step is deterministic); it is part of the common signature of
  ``train_step(state, batch, rng)``. Jit it with ``functools.partial`` over ``model``/``tx``.
  """
  del rng
  grads, metrics = jax.grad(functools.partial(loss_fn, model=model, alpha=alpha, gamma=gamma), has_aux=True)(
      state.params, batch, state.target)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def refresh_target(state: DECState, x, mask=None, *, model, alpha: float = 1.0):
  """Recomputes P from Q over the whole dataset ``x`` ([n, ...]); returns the share of labels changed.

  ``x`` may be a row-sharded global array padded to a multiple of the device count, with ``mask``
  False on the padding rows, which are excluded from P's cluster frequencies and from the count.
  """
  q = soft_assignment(embed(model, state.params, x), state.params["centers"], alpha)
  labels = jnp.argmax(q, axis=-1).astype(jnp.int32)
  valid = jnp.ones(labels.shape, bool) if mask is None else mask
  changed = jnp.sum((labels != state.labels) & valid) / jnp.maximum(jnp.sum(valid), 1)
  return state.replace(target=target_distribution(q, mask), labels=labels), changed


def predict(model: nn.Module, params, x, *, alpha: float = 1.0):
  """Hard cluster of each row of ``x``: the argmax of Q."""
  return jnp.argmax(soft_assignment(embed(model, params, x), params["centers"], alpha), axis=-1)
