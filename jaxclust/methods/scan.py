"""SCAN (Van Gansbeke et al., ECCV 2020): clustering by nearest-neighbour consistency, then self-labeling.

Three stages follow a pretext task (SimCLR or MoCo):
1. mine the ``k`` nearest neighbours (20 in the paper) of every pretext embedding
   (``jaxclust.knn``);
2. train clustering heads so that an image and a random one of its neighbours get the same
   cluster (eq. 2), with an entropy term against collapse (weight 5.0 in the official configs).
   Several heads train at once and the one with the lowest SCAN loss is kept;
3. self-label: images assigned with confidence above 0.99 (on the image itself, the official
   code's "standard" view; the driver passes it as the weak view) train on their strong view
   (flip, RandAugment-style ops, Cutout) with a cross-entropy that weighs classes by their inverse
   frequency among the confident.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


def entropy(p, axis: int = -1):
  """Shannon entropy in nats, ``0 log 0 = 0``."""
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def scan_loss(anchor_logits, neighbor_logits, entropy_weight: float = 5.0, mask=None):
  """Eq. 2 of the paper for one head.

  ``consistency = mean_i -log <softmax(anchor_i), softmax(neighbor_i)>`` and
  ``total = consistency - entropy_weight * H(mean_i softmax(anchor_i))``.

  Args:
    anchor_logits, neighbor_logits: ``[B, k]`` cluster logits of the images and of one sampled
      neighbour each.
    entropy_weight: lambda (5.0 in the official CIFAR/STL configs).
    mask: optional ``[B]``, False on padding.

  Returns:
    ``(total, {"consistency", "entropy"})``, scalars.
  """
  valid = jnp.ones(anchor_logits.shape[:1], bool) if mask is None else mask
  weight = valid.astype(jnp.float32) / jnp.maximum(jnp.sum(valid), 1)
  p_anchor = jax.nn.softmax(anchor_logits.astype(jnp.float32), axis=-1)
  p_neighbor = jax.nn.softmax(neighbor_logits.astype(jnp.float32), axis=-1)
  similarity = jnp.sum(p_anchor * p_neighbor, axis=-1)
  consistency = -jnp.sum(weight * jnp.log(jnp.maximum(similarity, 1e-7)))
  mean_p = jnp.sum(weight[:, None] * p_anchor, axis=0)
  h = entropy(mean_p)
  return consistency - entropy_weight * h, {"consistency": consistency, "entropy": h}


def selflabel_loss(weak_logits, strong_logits, threshold: float = 0.99, mask=None):
  """Confidence-masked, class-balanced cross-entropy of the self-labeling stage.

  The targets are the argmax of the weak view where its top probability exceeds ``threshold``;
  each confident sample of class ``c`` weighs ``n_confident / count_c``, and the loss is the
  weighted mean of the strong view's cross-entropy (the official ``ConfidenceBasedCE``). The weak
  view gets no gradient.

  When no sample is confident the loss is 0 and ``confident`` is 0 (no NaN); :func:`selflabel_step`
  then leaves the model unchanged and the driver warns.

  Returns:
    ``(loss, {"confident": share of confident samples})``.
  """
  valid = jnp.ones(weak_logits.shape[:1], bool) if mask is None else mask
  p_weak = jax.nn.softmax(jax.lax.stop_gradient(weak_logits).astype(jnp.float32), axis=-1)
  k = p_weak.shape[-1]
  target = jnp.argmax(p_weak, axis=-1)
  confident = (jnp.max(p_weak, axis=-1) > threshold) & valid
  n_confident = jnp.sum(confident)
  counts = jnp.zeros((k,), jnp.float32).at[target].add(confident.astype(jnp.float32))
  class_weight = jnp.where(counts > 0, n_confident / jnp.maximum(counts, 1.0), 1.0)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(strong_logits.astype(jnp.float32), -1), target[:, None], -1)[:, 0]
  w = jnp.where(confident, class_weight[target], 0.0)
  loss = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)
  return loss, {"confident": n_confident / jnp.maximum(jnp.sum(valid), 1)}


class ClusterState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # {"backbone": ..., "heads": ...}
  batch_stats: Any
  opt_state: Any


# One compiled program, which the persistent compilation cache can keep, not one per op as eagerly.
@functools.partial(jax.jit, static_argnames=("model", "tx"))
def init(model: nn.Module, rng, example_images, tx: optax.GradientTransformation, params=None) -> ClusterState:
  """``model(images, train)`` returns ``[heads, B, k]`` logits; ``params`` may carry a pretext backbone."""
  variables = model.init(rng, example_images, train=False)
  p = variables["params"] if params is None else {**variables["params"], **params}
  return ClusterState(step=jnp.int32(0), params=p, batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(p))


def scan_step(state: ClusterState, batch, rng, *, model: nn.Module, tx, augment: Callable,
              entropy_weight: float = 5.0, update_backbone: bool = True):
  """One SCAN step on ``{"image": [B, ...], "neighbor": [B, ...]}`` (one sampled neighbour each), on
  host-made ``{"views": (images, neighbours)}``, or, for the heads alone, on precomputed backbone
  features ``{"features": [2B, d]}`` (the images' rows, then their neighbours').

  All heads train together on the sum of their losses; metrics hold each head's loss
  (``[heads]``), from which the driver keeps the lowest.

  ``update_backbone=False`` trains the heads alone (the official code's
  ``update_cluster_head_only``): the backbone runs in inference mode without gradients, its
  BatchNorm statistics stay as they are, and ``tx`` must leave its parameters unchanged (see
  :func:`head_only`).
  """
  rng = jax.random.fold_in(rng, state.step)
  mask = batch.get("mask")
  if "features" in batch:  # precomputed backbone features [2B, d]: the images', then their neighbours'
    if update_backbone:
      raise ValueError("scan_step got precomputed features, which can only train the heads: "
                       "set update_backbone=False")
    features = jax.lax.stop_gradient(batch["features"])
  else:
    if "views" in batch:  # (image view, neighbour view), made on the host (input="tf.data")
      images = jnp.concatenate(batch["views"])
    else:
      images = jnp.concatenate([augment(jax.random.fold_in(rng, 1), batch["image"]),
                                augment(jax.random.fold_in(rng, 2), batch["neighbor"])])
    if not update_backbone:
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      features = jax.lax.stop_gradient(model.apply(variables, images, train=False, method=model.features))

  def loss_fn(params):
    if update_backbone:
      logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images, train=True,
                                    mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      logits, batch_stats = model.apply({"params": params}, features, method=model.classify), state.batch_stats
    anchor, neighbor = jnp.split(logits, 2, axis=1)
    total, parts = jax.vmap(lambda a, n: scan_loss(a, n, entropy_weight, mask))(anchor, neighbor)
    return jnp.sum(total), ({"head_loss": total, **parts}, batch_stats)

  (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state), metrics


def head_only(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` on everything but ``params["backbone"]``, which gets no update (not even weight decay)."""
  def labels(params):
    return {name: jax.tree.map(lambda _: "frozen" if name == "backbone" else "train", sub)
            for name, sub in params.items()}
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def selflabel_step(state: ClusterState, batch, rng, *, model: nn.Module, tx, weak: Callable, strong: Callable,
                   head: int = 0, threshold: float = 0.99, batchnorm_train: bool = True):
  """One self-labeling step on ``{"image": [B, ...]}`` (or host-made ``{"views": (weak, strong)}``) for
  clustering head ``head``.

  ``batchnorm_train=False`` runs both views with the running BatchNorm statistics and leaves them
  unchanged: the statistics under which heads trained on a frozen backbone (SCAN's
  ``update_backbone=False``) learned their clusters. With batch statistics their predictions differ.
  """
  rng = jax.random.fold_in(rng, state.step)
  if "views" in batch:
    weak_images, strong_images = batch["views"]
  else:
    weak_images, strong_images = weak(jax.random.fold_in(rng, 1), batch["image"]), strong(
        jax.random.fold_in(rng, 2), batch["image"])
  mask = batch.get("mask")

  def loss_fn(params):
    if batchnorm_train:
      # As the official code (the model in train mode, the weak view under no_grad): both views use
      # their batch's BatchNorm statistics and both move the running averages, weak view first.
      weak_logits, weak_updates = model.apply({"params": params, "batch_stats": state.batch_stats}, weak_images,
                                              train=True, mutable=["batch_stats"])
      strong_logits, updates = model.apply({"params": params, "batch_stats": weak_updates["batch_stats"]},
                                           strong_images, train=True, mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      variables = {"params": params, "batch_stats": state.batch_stats}
      weak_logits, strong_logits = model.apply(variables, weak_images), model.apply(variables, strong_images)
      batch_stats = state.batch_stats
    loss, metrics = selflabel_loss(jax.lax.stop_gradient(weak_logits[head]), strong_logits[head], threshold, mask)
    return loss, (metrics, batch_stats)

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), batch_stats=batch_stats, opt_state=opt_state)
  # Without a confident sample there is nothing to learn from: keep everything as it was (weight
  # decay and BatchNorm statistics of strong views would otherwise still move the model).
  keep = metrics["confident"] > 0
  new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
  return new.replace(step=state.step + 1), {"loss": loss, **metrics}


def predict(model: nn.Module, variables, images, head: int = 0):
  """Cluster of each image under head ``head`` (eval-mode BatchNorm) and its confidence."""
  probs = jax.nn.softmax(model.apply(variables, images, train=False)[head], axis=-1)
  return jnp.argmax(probs, axis=-1), jnp.max(probs, axis=-1)
