"""Contrastive Clustering (Li, Hu, Liu, Peng, Zhou & Peng, AAAI 2021): instance- and cluster-level contrast.

One stage, one network: a shared backbone, an instance head (a two-layer MLP to ``instance_dim``) and a
cluster head (a two-layer MLP to ``K`` logits, softmax). Each image gives two augmented views ``a`` and
``b``. The instance head's outputs are contrasted over the ``2N`` rows of the two views (NT-Xent,
:func:`jaxclust.methods.simclr.nt_xent`, temperature ``instance_temperature``, 0.5 in the paper). The cluster
head's soft assignments ``Y^a, Y^b`` ``[N, K]`` are contrasted over their columns: cluster ``i`` of view ``a``
is pulled toward cluster ``i`` of view ``b`` and pushed from the other ``2K - 2`` columns (NT-Xent over the
``2K`` columns, cosine similarity, temperature ``cluster_temperature``, 1.0 in the paper), minus the entropy of
the clusters' sizes in each view, ``H(Y) = -sum_i [P(y_i^a) log P(y_i^a) + P(y_i^b) log P(y_i^b)]`` with
``P(y_i^k) = sum_t Y^k_ti / ||Y^k||_1``, against every image falling in one cluster (eqs. 2-9). The loss is
the sum of the two. An image's cluster is the argmax of the cluster head on the image itself.

Padding rows (``mask`` False) are left out of both losses: they are neither instances nor part of a
cluster's column. With the batch sharded over a mesh the columns span the global batch (under ``jit``), as
the rows of the instance loss do.

With ``input="tf.data"`` the two views are made on the host (:func:`jaxclust.data.stream.source_view_batches`)
and the passes over the dataset (clusters, features) read the stream in order; vector rows (the MLP backbone)
train on :mod:`jaxclust.data.augment_vectors`' views on the devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from jaxclust import configs, engine, epochs, parallel
from jaxclust import metrics as cluster_metrics
from jaxclust.data import augment, augment_tf, augment_vectors, stream
from jaxclust.methods import networks
from jaxclust.methods.simclr import nt_xent
from jaxclust.models import heads
from jaxclust.validation import check_count


def size_entropy(p, mask=None):
  """``-sum_i P_i log P_i`` of the clusters' share of the soft assignments ``p`` ``[N, K]`` (rows ``mask``)."""
  if mask is not None:
    p = p * mask[:, None].astype(p.dtype)
  share = jnp.sum(p, axis=0) / jnp.maximum(jnp.sum(p), 1e-12)
  return jnp.sum(jax.scipy.special.entr(share))


def cluster_loss(p_a, p_b, temperature: float = 1.0, mask=None):
  """The cluster-level loss (eqs. 6-9): NT-Xent over the ``2K`` columns of the soft assignments ``p_a, p_b``
  ``[N, K]`` of two views, minus the size entropy of each view. Returns ``(loss, entropy)``."""
  if mask is not None:
    keep = mask[:, None].astype(p_a.dtype)
    p_a, p_b = p_a * keep, p_b * keep
  entropy = size_entropy(p_a) + size_entropy(p_b)
  return nt_xent(p_a.T, p_b.T, temperature) - entropy, entropy


def cc_loss(z_a, z_b, p_a, p_b, *, instance_temperature: float = 0.5, cluster_temperature: float = 1.0, mask=None):
  """The whole objective (eq. 10): the instance loss plus the cluster loss; ``(loss, parts)``."""
  instance = nt_xent(z_a, z_b, instance_temperature, mask)
  cluster, entropy = cluster_loss(p_a, p_b, cluster_temperature, mask)
  return instance + cluster, {"instance_loss": instance, "cluster_loss": cluster, "entropy": entropy}


class Network(nn.Module):
  """Backbone, instance head (``[B, instance_dim]``) and cluster head (``[B, k]`` logits)."""
  backbone: nn.Module
  k: int
  hidden: int = 512
  instance_dim: int = 128

  def setup(self):
    self.instance_head = heads.ProjectionHead(self.hidden, self.instance_dim)
    self.cluster_hidden = nn.Dense(self.hidden)
    self.cluster_out = nn.Dense(self.k)

  def __call__(self, x, train: bool = False):
    h = self.backbone(x, train)
    return self.instance_head(h), self.cluster_logits(h)

  def features(self, x, train: bool = False):
    return self.backbone(x, train)

  def cluster_logits(self, h):
    return self.cluster_out(nn.relu(self.cluster_hidden(h)))

  def predict(self, x):
    """``(features [B, d], cluster probabilities [B, k])`` in evaluation mode."""
    h = self.backbone(x, False)
    return h, jax.nn.softmax(self.cluster_logits(h).astype(jnp.float32), axis=-1)


class CCState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@functools.partial(jax.jit, static_argnames=("model", "tx"))
def init(model: nn.Module, rng, example, tx) -> CCState:
  variables = model.init(rng, example, train=False)
  return CCState(step=jnp.int32(0), params=variables["params"], batch_stats=variables.get("batch_stats", {}),
                 opt_state=tx.init(variables["params"]))


def train_step(state: CCState, batch, rng, *, model: nn.Module, tx, augment: Callable,
               instance_temperature: float = 0.5, cluster_temperature: float = 1.0):
  """One step on ``{"image": [B, ...], "mask": [B]}``: two views from ``augment(rng, images)``, both through the
  network together (BatchNorm over both), :func:`cc_loss`. With ``{"views": (a, b)}`` (host-made views)
  ``augment`` is not used."""
  rng = jax.random.fold_in(rng, state.step)
  if "views" in batch:
    views = jnp.concatenate(batch["views"])
  else:
    images = batch["image"]
    views = jnp.concatenate([augment(jax.random.fold_in(rng, 1), images), augment(jax.random.fold_in(rng, 2), images)])
  mask = batch.get("mask")

  def loss_fn(params):
    (z, logits), updates = model.apply({"params": params, "batch_stats": state.batch_stats}, views, train=True,
                                       mutable=["batch_stats"])
    z_a, z_b = jnp.split(z, 2)
    p_a, p_b = jnp.split(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), 2)
    loss, parts = cc_loss(z_a, z_b, p_a, p_b, instance_temperature=instance_temperature,
                          cluster_temperature=cluster_temperature, mask=mask)
    return loss, (updates["batch_stats"], parts)

  (loss, (batch_stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state), {"loss": loss, **parts}


# -- The run: what the engine (jaxclust.engine) calls.


def network(config, k: int) -> Network:
  return Network(networks.backbone(config), k=k, hidden=config.head_hidden, instance_dim=config.instance_dim)


def optimizer(config):
  """Adam (the paper: learning rate 3e-4), with decoupled weight decay when ``weight_decay`` > 0."""
  return epochs.same(optax.adamw, config.learning_rate, weight_decay=config.weight_decay)


def view_options(config) -> tuple:
  """The two views' settings, hashable: SimCLR's crop, flip, colour jitter and grayscale for images
  (``augment.*``), :mod:`jaxclust.data.augment_vectors`' for vector rows."""
  if networks.vectors(config):
    return ("vectors", *augment_vectors.options(config))
  return (tuple(config.augment.crop_scale), float(config.augment.flip_p))


def prepare(config, data, mesh) -> engine.Prepared:
  """The images (or vector rows) on the devices, or streamed (``input="tf.data"``); bad settings refused
  before the workdir is claimed."""
  source, shape, n, classes = networks.training_rows(config, data)
  k = config.n_clusters or classes
  if not k:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=2, high=n, high_name="n_samples")
  check_count(config.epochs, "epochs", low=1)
  check_count(config.batch_size, "batch_size", low=2)
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
  for name in ("instance_temperature", "cluster_temperature"):
    if not config[name] > 0:
      raise ValueError(f"{name}={config[name]} must be > 0")
  if networks.vectors(config):
    check_count(config.views.neighbors, "views.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  if source is not None:
    return engine.Prepared(k, None, source, n, tuple(shape))
  return engine.Prepared(k, np.asarray(data.x, np.float32))


def stages(run):
  """One stage of ``epochs`` epochs."""
  config = run.config
  model, tx = network(config, run.k), optimizer(config)
  example = jnp.zeros((2, *run.shape))
  view, sharding = view_options(config), epochs.shard(run.mesh)
  temperatures = (float(config.instance_temperature), float(config.cluster_temperature))
  cache = {}

  def start(run, previous):
    return parallel.put(init(model, jax.random.fold_in(run.key, 0), example, tx), run.mesh)

  def template(run):
    return parallel.put(init(model, jax.random.key(0), example, tx), run.mesh)

  def epoch(run, state, epoch):
    rng = jax.random.fold_in(run.key, 1_000_000 + epoch)
    if run.source is not None:
      first = _host_view(run.shape, *view)
      step = epochs.host_step(train_step, model=model, tx=tx, augment=None, instance_temperature=temperatures[0],
                              cluster_temperature=temperatures[1])
      state, m = epochs.host_epoch(step, state, rng, stream.source_view_batches(
          run.source, views=(first, first), batch_size=config.batch_size, seed=config.seed, epoch=epoch, mesh=run.mesh))
    elif view[0] == "vectors":
      if "views" not in cache:
        cache["views"] = augment_vectors.placed_context(run.x, run.n, config.views.neighbors, run.mesh)
      state, m = _epoch(model, tx, config.batch_size, run.n, run.shape, view, temperatures, sharding)(
          state, run.x, cache["views"], rng)
    else:
      state, m = _epoch(model, tx, config.batch_size, run.n, run.shape, view, temperatures, sharding)(state, run.x, rng)
    record = {key: float(value) for key, value in m.items()}
    if run.source is None:  # the clusters every epoch: a collapse guard (a streamed run reads them at the end)
      labels, _, _ = _over_rows(run, model, state)
      record.update(engine.warn_collapse(labels, run.k))
      if run.y is not None:
        record.update(cluster_metrics.evaluate(run.y, labels))
    return state, record

  return (engine.Stage("cc", config.epochs, start, template, epoch),)


def readout(run, state) -> engine.Readout:
  """Each row's most probable cluster of the cluster head (evaluation mode); the backbone's features are
  the embedding the report measures."""
  labels, confidence, features = _over_rows(run, network(run.config, run.k), state)
  return engine.Readout(labels, confidence, embedding=features, y=None if run.source is None else run.y)


def assign(run, state, x) -> engine.Assignment:
  x = jnp.asarray(x)
  features, p = _predict(network(run.config, run.k), _variables(state), x, len(x), run.config.chunk_size)
  p = np.asarray(parallel.fetch(p))
  labels = np.argmax(p, -1)
  return engine.Assignment(labels, p[np.arange(len(labels)), labels], np.asarray(parallel.fetch(features)))


def _over_rows(run, model, state):
  """``(labels [n], confidence [n], features [n, d])`` of every row, in order, on the host."""
  chunk = run.config.chunk_size
  if run.source is None:
    features, p = _predict(model, _variables(state), run.x, run.n, chunk)
  else:
    size = -(-chunk // run.mesh.size) * run.mesh.size
    (features, p), y, _ = stream.predict_in_order(
        lambda b: _predict(model, _variables(state), b, size, size), run.source, size=None, batch_size=size,
        mesh=run.mesh)
    if run.y is None and y is not None:
      run.y = y
  p, features = np.asarray(parallel.fetch(p)), np.asarray(parallel.fetch(features))
  labels = np.argmax(p, -1)
  return labels, p[np.arange(len(labels)), labels], features


def _variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _predict(model, variables, x, n, chunk):
  return epochs.chunked(lambda b: model.apply(variables, b, method=model.predict), x, n, chunk)


def _views(image_shape, view):
  """The on-device view: ``(rng, images) -> views`` (``(rng, Rows) -> [B, ...]`` for vector rows)."""
  if view[0] == "vectors":
    return augment_vectors.batch_view(view[1:])
  crop_scale, flip_p = view
  return augment.batch(augment.simclr_view, size=image_shape[:2], scale=crop_scale, flip_p=flip_p)


@epochs.compiled
def _host_view(image_shape, crop_scale, flip_p):
  """The same view made by tf.data on the host (``input="tf.data"``): ``(image, seed) -> view``."""
  return functools.partial(augment_tf.simclr_view, size=tuple(image_shape[:2]), scale=crop_scale, flip_p=flip_p)


@epochs.compiled
def _epoch(model, tx, batch_size, n, image_shape, view, temperatures, sharding):
  """``epoch(state, x, rng)``; for vector rows ``epoch(state, x, context, rng)``."""
  step = functools.partial(train_step, model=model, tx=tx, augment=_views(image_shape, view),
                           instance_temperature=temperatures[0], cluster_temperature=temperatures[1])
  if view[0] == "vectors":
    return epochs.vector_epoch(step, batch_size, n, sharding)
  return epochs.batch_epoch(step, batch_size, n, sharding)


def step_flops(config, shape, k: int) -> dict:
  """Model FLOPs per training image (``jaxclust bench steps``): two views, forward and backward (3 forward passes
  each), both heads included."""
  from jaxclust.models import flops
  model = network(config, k)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))
  return {"cc": 6 * flops.forward_flops(model, variables, (1, *shape), train=False)}


# Settings and recipes.


def config() -> ml_collections.ConfigDict:
  """The paper's CIFAR-10 settings: ResNet-34, batch 256, Adam 3e-4, 1000 epochs, temperatures 0.5 and 1.0,
  heads of 512 hidden units, a 128-d instance space."""
  c = configs.shared()
  c.backbone, c.stem, c.dtype, c.cnn_channels = "resnet34", "cifar", "float32", (32, 64, 128)
  # SimCLR's views (crop, flip, colour jitter, grayscale), the paper's augmentations for CIFAR.
  c.augment = ml_collections.ConfigDict({"crop_scale": (0.2, 1.0), "flip_p": 0.5})
  c.epochs, c.batch_size, c.learning_rate, c.weight_decay = 1000, 256, 3e-4, 0.0
  c.instance_temperature, c.cluster_temperature = 0.5, 1.0
  c.head_hidden, c.instance_dim = 512, 128
  c.chunk_size = 1024  # images per chunk of a pass over the dataset (the clusters of every row)
  return c


def _images(c, n, shape):
  """The paper's CIFAR recipe (50M images seen); above 64 pixels a side the ImageNet stem."""
  if shape is not None and max(shape[:2]) > configs.SMALL:
    c.stem = "imagenet"
  c.epochs = configs.epochs_for(c.epochs, 50_000, n)


def _small_images(c, n, shape):
  """The small CNN of the small-image recipes (16/32/64, no flips), SCAN's pretext length on MNIST: 50 epochs of
  70,000 images (3.5M seen). Not tuned on any dataset."""
  del shape
  c.backbone, c.cnn_channels, c.augment.flip_p = "small_cnn", (16, 32, 64), 0.0
  c.head_hidden, c.instance_dim, c.epochs = 128, 64, 50
  c.epochs = configs.epochs_for(c.epochs, 70_000, n)


def _digits(c, n, shape):
  """1,797 8x8 images: a quick demonstration (lengths in epochs)."""
  del n, shape
  c.backbone, c.augment.flip_p = "small_cnn", 0.0
  c.head_hidden, c.instance_dim, c.epochs, c.batch_size = 128, 64, 30, 128


def _vectors(c, n, shape):
  """The MLP on z-scored features with vector views (noise, masking, neighbour mixing), 100 epochs of 10,000 rows
  (1M seen), as SCAN's vectors pretext. Not tuned on any dataset."""
  del shape
  from jaxclust.models import mlp
  c.backbone, c.mlp_widths, c.standardize = "mlp", mlp.WIDTHS, True
  del c["augment"]
  c.views = ml_collections.ConfigDict({"noise": 0.1, "mask": 0.2, "mix": 0.5, "neighbors": 5})
  c.batch_size = min(256, max(8, (n or 256) // 8 * 8))  # not above the data: padding rows would enter BatchNorm
  c.head_hidden, c.instance_dim = 256, 64
  c.epochs = configs.epochs_for(100, 10_000, n)
  c.checkpoint_every = max(1, c.epochs // 20)


RECIPES = {
    "vectors": configs.Recipe("the MLP on z-scored features with vector views, 1M rows seen (not tuned)", _vectors),
    "small_images": configs.Recipe("a small CNN, 3.5M images seen (not tuned)", _small_images),
    "images": configs.Recipe("the paper's CIFAR-10 recipe: ResNet-34, 50M images seen", _images),
    "digits": configs.Recipe("a quick demonstration on the 1,797 8x8 digits", _digits),
}
