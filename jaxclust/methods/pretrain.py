"""Autoencoder pretraining shared by DEC, IDEC and VaDE: minimize reconstruction error.

The papers pretrain the ``d-500-500-2000-10`` autoencoder on the whole dataset. DEC uses greedy
layer-wise denoising pretraining; its Keras re-implementations and IDEC train end to end with
Adam, batch 256, 200 epochs, which is what is offered here. An epoch can run as one compiled
``lax.scan`` over on-device batches (:func:`train_epoch`): with the dataset already on device,
no Python runs per step.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec as P

import ml_collections

from jaxclust import configs, engine, epochs, parallel
from jaxclust import workdir as workdirs
from jaxclust.methods import networks
from jaxclust.models.autoencoder import reconstruction_loss
from jaxclust.validation import check_count

# The setting that starts a run from another finished run's earlier stage (reruns reuse it: jaxclust stability).
REUSE = "pretrain.init_from"
PRETRAINED = "pretrained_autoencoder"  # the folder of a run's pretrained autoencoder (pretrain.init_from)


def config() -> ml_collections.ConfigDict:
  """The settings DEC, IDEC and VaDE share (each module changes its own): the papers' MNIST recipe."""
  c = configs.shared()
  # Z-score every feature with the training data's mean and standard deviation (tabular data and
  # embeddings); the images of the papers are only scaled to [0, 1], as the sources load them.
  c.standardize = False
  # "mlp": the papers' d-500-500-2000-10 network (DEC, IDEC, VaDE). "conv" (DEC/IDEC, image data):
  # a small convolutional autoencoder with `conv_channels` stride-2 3x3 convolutions.
  c.model = "mlp"
  c.hidden = (500, 500, 2000)
  c.conv_channels = (32, 64)
  c.latent = 10
  # End-to-end autoencoder pretraining (IDEC / DEC-keras): Adam, batch 256; init_from: a workdir whose
  # pretrained autoencoder to start from.
  c.pretrain = ml_collections.ConfigDict({"epochs": 200, "batch_size": 256, "learning_rate": 1e-3,
                                          "loss": "mse", "init_from": ""})
  # DEC / IDEC clustering stage (DEC official code): SGD 0.01 momentum 0.9, batch 256, target P
  # refreshed every 140 steps on MNIST, stop when fewer than 0.1% of labels change.
  c.cluster = ml_collections.ConfigDict({
      "batch_size": 256, "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "update_interval": 140, "tol": 0.001,
      "max_steps": 20_000, "kmeans_n_init": 20, "gamma": 0.0})
  # VaDE (official code, MNIST): Adam on the negative ELBO, batch 100, 300 epochs, learning rate
  # 0.002 times 0.9 every 10 epochs, floored at 0.0002; mixture initialized by a diagonal GMM on the
  # pretrained embeddings.
  c.vade = ml_collections.ConfigDict({"epochs": 300, "batch_size": 100, "learning_rate": 2e-3, "lr_decay": 0.9,
                                      "lr_decay_epochs": 10, "min_learning_rate": 2e-4})
  return c


_REFERENCE = 70_000  # MNIST's rows: the papers' lengths are its epochs


def _pixels(c, n, shape):
  """The papers' recipe: the MLP on the pixels in [0, 1]; pretraining 200 and VaDE 300 epochs of 70,000
  images (14M and 21M images seen); the clustering stage counts SGD steps (at most 20,000)."""
  del shape
  c.pretrain.epochs = configs.epochs_for(c.pretrain.epochs, _REFERENCE, n)
  c.vade.epochs = configs.epochs_for(c.vade.epochs, _REFERENCE, n)
  c.vade.lr_decay_epochs = configs.epochs_for(c.vade.lr_decay_epochs, _REFERENCE, n)


def _vectors(c, n, shape):
  """The papers' recipe on features z-scored column by column."""
  _pixels(c, n, shape)
  c.standardize = True


def _digits(c, n, shape):
  """1,797 8x8 images: the README's few-minute demonstration on 2 CPU cores (lengths in epochs)."""
  del n, shape
  c.pretrain.epochs, c.pretrain.batch_size = 60, 64
  c.cluster.update({"batch_size": 64, "update_interval": 28, "max_steps": 2_000})
  c.vade.epochs = 60


RECIPES = {
    "vectors": configs.Recipe("the papers' MLP autoencoder on z-scored features; lengths of 70,000 rows", _vectors),
    "small_images": configs.Recipe("the papers' MNIST recipe: the MLP on pixels in [0, 1], 200 pretraining "
                                   "epochs of 70,000 images", _pixels),
    "images": configs.Recipe("as small_images (the papers cluster larger images through the same MLP)", _pixels),
    "digits": configs.Recipe("a few-minute demonstration on the 1,797 8x8 digits", _digits),
}


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


epoch_batches = epochs.epoch_batches


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


def prepare(config, data, *, mesh, batch_sizes, conv: bool = True) -> engine.Prepared:
  """The autoencoder methods' checks before a workdir is claimed, and their rows ``[n, d]`` float32; streamed
  (``input="tf.data"``), their :class:`jaxclust.data.stream.Source` instead, and nothing on the devices.

  ``batch_sizes`` names the settings whose batches are split over the mesh's devices."""
  unloaded = not hasattr(data, "x")  # a tfds dataset or image folder streamed without being loaded
  if unloaded:
    from jaxclust.data import stream
    n, shape, y = data.n, stream._row_shape(data), data.labels  # pylint: disable=protected-access
  else:
    n, shape, y = data.x.shape[0], data.x.shape[1:], data.y
  k = config.n_clusters or (len(np.unique(y)) if y is not None else 0)
  if k == 0:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=1, high=n, high_name="n_samples")
  networks.autoencoder(config, shape, conv=conv)  # an unknown model, or conv on tabular data
  if config.pretrain.init_from and not (workdirs.path(config.pretrain.init_from) / PRETRAINED).exists():
    raise ValueError(f"pretrain.init_from={config.pretrain.init_from!r}: no {PRETRAINED} in it "
                     "(it is written when a run finishes pretraining)")
  for name in batch_sizes:
    size = config[name.split(".")[0]][name.split(".")[1]]
    if size % mesh.size:
      raise ValueError(f"{name}={size} is not divisible by the {mesh.size} devices of the mesh: every device "
                       "takes an equal share of each batch")
  if unloaded:
    return engine.Prepared(k, None, data, n, tuple(shape))
  x = np.asarray(data.x.reshape(n, -1), np.float32)
  if config.input == "tf.data":  # each process streams its share of the rows; nothing sits on the devices
    from jaxclust.data import sources, stream
    return engine.Prepared(k, None, stream.open_source(sources.Dataset(x, y, data.name)), n, tuple(shape))
  return engine.Prepared(k, x)


def embed(run, model, params, batch_size: int = 1024):
  """The embeddings ``[n, latent]`` of every row, replicated on every device: [n, latent] is small, and
  k-means or EM on it give the same result on every device count and host layout."""
  replicated = NamedSharding(run.mesh, P())
  if run.source is None:
    return _embed_valid(model, params, run.x, run.n, replicated)
  z, = run.in_order(lambda rows: (_encode(model, params, rows),), batch_size)
  return jax.device_put(jnp.asarray(z), replicated)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _embed_valid(model, params, x, n, sharding):
  return jax.lax.with_sharding_constraint(model.apply({"params": params}, x[:n], method=model.encode), sharding)


@functools.partial(jax.jit, static_argnums=0)
def _encode(model, params, x):
  return model.apply({"params": params}, x, method=model.encode)


def stage(run, model) -> engine.Stage:
  """Autoencoder pretraining (Adam on the reconstruction error), or another run's pretrained autoencoder
  (``pretrain.init_from``, then no epochs). Its end saves the autoencoder apart from the rotating
  checkpoints, so that other runs can start from it."""
  c = run.config.pretrain
  tx = epochs.same(optax.adam, c.learning_rate)
  example = jnp.zeros((2, math.prod(run.shape)))

  def template(run):
    return parallel.put(init(model, jax.random.key(0), example, tx), run.mesh)

  def start(run, previous):
    state = parallel.put(init(model, jax.random.fold_in(run.key, 0), example, tx), run.mesh)
    if c.init_from:
      run.log(f"autoencoder from {c.init_from}; pretraining skipped")
      return state.replace(params=load_pretrained(c.init_from, state.params))
    return state

  def epoch(run, state, epoch):
    if run.source is None:
      state, m = train_epoch(state, run.x, jax.random.fold_in(run.key, 1_000_000 + epoch), model=model, tx=tx,
                             batch_size=c.batch_size, loss=c.loss, n=run.n, batch_sharding=epochs.shard(run.mesh))
    else:
      step = epochs.host_step(train_step, model=model, tx=tx, loss=c.loss)
      state, m = epochs.host_epoch(step, state, None, run.batches(c.batch_size, 1_000_000 + epoch))
    return state, {"loss": float(m["loss"])}

  def end(run, state):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(run.workdir / PRETRAINED, state.params, force=True)
    checkpointer.wait_until_finished()

  return engine.Stage("pretrain", 0 if c.init_from else c.epochs, start, template, epoch, end)


def autoencoder_flops(model, shape) -> tuple[float, float]:
  """``(whole forward, encoder forward)`` model FLOPs of one row of ``shape`` (``jaxclust bench steps``)."""
  from jaxclust.models import flops
  import jax.numpy as jnp
  x = (1, *shape) if len(shape) == 3 else (1, int(np.prod(shape)))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x)))
  return (flops.forward_flops(model, variables, x),
          flops.forward_flops(model, variables, x, method=model.encode))


def load_pretrained(source, template):
  """The pretrained autoencoder parameters saved by a run in workdir ``source``.

  ``template`` (parameters of the model to fill) fixes the expected shapes: an autoencoder of
  another architecture, or a run whose pretraining has not finished, is an error.
  """
  path = workdirs.path(source) / PRETRAINED
  if not path.exists():
    raise ValueError(f"pretrain.init_from={str(source)!r}: no {PRETRAINED} in it "
                     "(it is written when a run finishes pretraining)")
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = jax.tree.map(lambda a: tuple(a.shape), dict(checkpointer.metadata(path).item_metadata.tree))
  except Exception as e:  # orbax raises many types for unreadable checkpoints
    raise ValueError(f"pretrain.init_from={str(source)!r}: {path} cannot be read ({type(e).__name__}: {e})") from e
  wanted = jax.tree.map(lambda a: tuple(a.shape), template)
  if stored != wanted:
    raise ValueError(f"pretrain.init_from={str(source)!r} holds an autoencoder that does not fit this "
                     f"configuration: stored shapes {stored}, wanted {wanted}")
  return checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, template))
