"""The compiled pieces of the SCAN driver (:mod:`jaxclust.scan_train`): each stage's epoch, the views
it trains on (on device, or made by tf.data on the host for ``input="tf.data"``), and the chunked
passes over the dataset (backbone features, projections, predictions).

Epoch factories are cached on their (hashable) settings, so a stage resumed in the same process reuses
its compiled epoch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxclust import parallel, runs
from jaxclust.data import augment, augment_tf
from jaxclust.methods import scan


def _views(image_shape, crop_scale, flip_p, strong_ops, cutout):
  """The weak (SimCLR) and strong (RandAugment + Cutout) views, on device: ``(rng, images) -> views``."""
  size = image_shape[:2]
  weak = augment.batch(augment.simclr_view, size=size, scale=crop_scale, flip_p=flip_p)
  strong = augment.batch(augment.strong_view, size=size, flip_p=flip_p, n_ops=strong_ops,
                         cutout_size=round(cutout * size[0]))
  return weak, strong


def host_identity(image, seed):
  """The unaugmented image, as a host view (tf.data)."""
  del seed
  return image


def _unaugmented(rng, images):
  """Self-labeling's targets come from the images themselves (the official code's validation transform)."""
  del rng
  return images.astype(jnp.float32) / 255.0 if jnp.issubdtype(images.dtype, jnp.integer) else images


@functools.lru_cache(maxsize=None)
def host_views(image_shape, crop_scale, flip_p, strong_ops, cutout):
  """The weak and strong views of :func:`_views` in tf.data (``input="tf.data"``): ``(image, seed) -> view``."""
  size = tuple(image_shape[:2])
  return (functools.partial(augment_tf.simclr_view, size=size, scale=crop_scale, flip_p=flip_p),
          functools.partial(augment_tf.strong_view, size=size, flip_p=flip_p, n_ops=strong_ops,
                            cutout_size=round(cutout * size[0])))


def host_step(train_step, **options):
  """``train_step`` with ``options``, compiled once per distinct setting (it takes host-made ``views``)."""
  return _host_step_cached(train_step, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _host_step_cached(train_step, options):
  return jax.jit(functools.partial(train_step, **dict(options)), donate_argnums=0)


def host_epoch(step, state, rng, batches):
  """``step`` over host-made batches, one compiled call each; the metrics' means."""
  history = []
  for i, batch in enumerate(batches):
    state, m = step(state, batch, jax.random.fold_in(rng, i))
    history.append(m)
  return state, jax.tree.map(lambda *a: jnp.mean(jnp.stack(a), axis=0), *history)


@functools.lru_cache(maxsize=None)
def pretext_epoch(model, tx, batch_size, n, image_shape, options, view, sharding):
  weak, _ = _views(image_shape, *view)
  train_step, settings = options
  return runs.batch_epoch(functools.partial(train_step, model=model, tx=tx, augment=weak, **dict(settings)),
                          batch_size, n, sharding)


def _with_neighbors(x, neighbors, index, mask, rng, sharding):
  """Rows ``index`` of ``x``, the rows of one uniformly sampled mined neighbour each (never the image
  itself, column 0), and the mask."""
  column = jax.random.randint(jax.random.fold_in(rng, 0), index.shape, 1, neighbors.shape[1])
  rows, _, mask = runs.gather(x, index, mask, sharding)
  neighbor_rows, _, _ = runs.gather(x, neighbors[index, column], mask, sharding)
  return rows, neighbor_rows, mask


@functools.lru_cache(maxsize=None)
def scan_epoch(model, tx, batch_size, n, image_shape, entropy_weight, update_backbone, augmented, view, sharding):
  weak = _views(image_shape, *view)[0] if augmented else _unaugmented
  step = functools.partial(scan.scan_step, model=model, tx=tx, augment=weak, entropy_weight=entropy_weight,
                           update_backbone=update_backbone)

  def one(state, x, neighbors, index, mask, rng):
    images, neighbor_images, mask = _with_neighbors(x, neighbors, index, mask, rng, sharding)
    return step(state, {"image": images, "neighbor": neighbor_images, "mask": mask}, rng)

  return runs.epoch_runner(one, batch_size, n)


@functools.lru_cache(maxsize=None)
def scan_feature_epoch(model, tx, batch_size, n, entropy_weight, sharding):
  """SCAN for the heads alone on precomputed backbone features ``[n, d]``: ``epoch(state, features,
  neighbors, rng)``, the same batches and sampled neighbours as :func:`scan_epoch`. A compiled
  ``lax.scan`` on every backend: without convolutions XLA's CPU backend runs it as fast as a loop."""
  step = functools.partial(scan.scan_step, model=model, tx=tx, augment=None, entropy_weight=entropy_weight,
                           update_backbone=False)

  def one(state, features, neighbors, index, mask, rng):
    rows, neighbor_rows, mask = _with_neighbors(features, neighbors, index, mask, rng, sharding)
    return step(state, {"features": jnp.concatenate([rows, neighbor_rows]), "mask": mask}, rng)

  return runs.epoch_runner(one, batch_size, n, loop=False)


@functools.lru_cache(maxsize=None)
def selflabel_epoch(model, tx, batch_size, n, image_shape, head, threshold, batchnorm_train, view, sharding):
  _, strong = _views(image_shape, *view)
  step = functools.partial(scan.selflabel_step, model=model, tx=tx, weak=_unaugmented, strong=strong, head=head,
                           threshold=threshold, batchnorm_train=batchnorm_train)
  return runs.batch_epoch(step, batch_size, n, sharding)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def features(model, variables, x, n, chunk):
  """The backbone's features of the first ``n`` rows of ``x``, ``chunk`` rows at a time."""
  return runs.chunked(lambda b: model.apply(variables, b, method=model.features), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def projections(model, variables, x, n, chunk):
  """The pretext network's projection output (un-normalized: the cosine kNN normalizes it)."""
  return runs.chunked(lambda b: model.apply(variables, b), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _predict_jit(model, variables, x, n, head, chunk):
  return runs.chunked(lambda b: scan.predict(model, variables, b, head), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))
def classify(model, params, features, head):
  return jnp.argmax(model.apply({"params": params}, features, method=model.classify)[head], axis=-1)


def predict(model, variables, x, n, head, chunk):
  labels, confidence = _predict_jit(model, variables, x, n, head, chunk)
  return parallel.fetch(labels), parallel.fetch(confidence)
