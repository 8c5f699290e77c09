"""What the online clustering methods share: SwAV and DeepCluster-v2 score a network's embeddings of
multi-crop views against K prototypes, and report clusters from them.

Each method hands its network to these functions as a :class:`Scorer`, functions of its state; nothing
here knows a method by name. Shared are: the optimizer (:func:`optimizer`), the settings that depend on
the data and the mesh (:func:`check`), the record of an epoch (:func:`epoch_record`: the clusters every
``eval_every`` epochs and the collapse monitor of :mod:`jaxclust.collapse`), and the readout of a run
and predict (:func:`labels`, :func:`readout`, :func:`assign`).

Vector rows (the vectors recipe, ``backbone="mlp"``) take ``views.count`` vector views
(:mod:`jaxclust.data.augment_vectors`) instead of multi-crop, on the devices (:func:`vector_views`).

A row's cluster is its prototype (the highest score) when there are as many clusters as prototypes.
With fewer (over-clustering, as the DeepCluster papers train), ``readout`` says how the prototypes'
clusters are grouped (:func:`jaxclust.readout.over_cluster`): by spherical k-means of the embeddings
("kmeans", which saves ``centroids.npy``) or by the nearest neighbours of each cluster's members ("knn",
which saves ``groups.npy``); predict assigns new images with that file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxclust import collapse, configs, engine, epochs, parallel, readout as readouts
from jaxclust import metrics as cluster_metrics
from jaxclust import workdir as workdirs
from jaxclust.data import augment_vectors, stream
from jaxclust.methods import networks
from jaxclust.models import mlp
from jaxclust.validation import check_count

FILES = ("centroids", "groups")  # what predict reads, one per over-clustering readout


def config() -> ml_collections.ConfigDict:
  """The settings SwAV and DeepCluster-v2 share: the SwAV paper's ImageNet recipe.

  2x224 + 6x96 crops, 3000 prototypes, temperature 0.1, batch 4096 with LARS (base learning rate 4.8, final
  0.0048, weight decay 1e-6, 10 warm-up epochs, cosine), 800 epochs."""
  c = configs.shared()
  c.backbone, c.stem, c.dtype, c.cnn_channels = "resnet50", "imagenet", "float32", (32, 64, 128)
  c.crops = ((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14)))
  c.prototypes, c.temperature, c.batch_size, c.epochs = 3000, 0.1, 4096, 800
  # Clusters reported (n_clusters): 0 = one per prototype; fewer than the prototypes = over-clustering,
  # the clusters then read out as `readout` says: "kmeans" (spherical k-means of the embeddings) or "knn"
  # (the prototypes grouped by the `readout_neighbors` nearest neighbours of their members in the
  # embedding, 20 as SCAN mines; not in the papers; jaxclust/readout.py). Both only read the trained
  # network: changing them never changes training.
  c.readout, c.readout_neighbors = "kmeans", 20
  # Epochs between the readouts logged while over-clustering (the prototype usage is logged every epoch,
  # the last epoch is always read out). Changing it never changes training or the result.
  c.eval_every = 1
  c.optimizer, c.learning_rate, c.final_lr_fraction, c.weight_decay, c.warmup_epochs = "lars", 4.8, 0.001, 1e-6, 10
  c.head_hidden, c.head_out = 2048, 128
  c.flip_p = 0.5  # horizontal flips of every crop
  # input="tf.data": streamed and multi-cropped on the host, for datasets that do not fit, such as
  # ImageNet ("tfds:imagenet2012").
  return c


def image_recipe(c, n, shape) -> None:
  """The paper's ImageNet recipe; the crops scaled to images smaller than 224 pixels a side (2 of the side and
  6 of 96/224 of it); lengths: 800 epochs of ImageNet's 1,281,167 images."""
  if shape is not None and max(shape[:2]) < 224:
    side = max(shape[:2])
    (large, _, large_scale), (small, _, small_scale) = c.crops
    c.crops = ((large, side, large_scale), (small, max(8, round(side * 96 / 224)), small_scale))
  lengths(c, 1_281_167, n)


def small_image_recipe(c, n, shape, *, reference: int | None = 70_000) -> None:
  """The small CNN chosen on MNIST (experiments/RESULTS.md): 2 crops of the image side and 4 of 16/28 of it,
  batch 256, Adam 1e-3, one warm-up epoch; each method then sets its own lengths (in epochs of
  ``reference`` rows; None: as given)."""
  c.backbone = "small_cnn"
  c.flip_p = 0.0  # a mirrored digit is another symbol or none
  side = 28 if shape is None else max(shape[:2])
  c.crops = ((2, side, (0.3, 1.0)), (4, max(4, round(side * 16 / 28)), (0.1, 0.3)))
  c.batch_size = 256
  c.optimizer, c.learning_rate, c.weight_decay, c.warmup_epochs = "adam", 1e-3, 1e-6, 1
  c.head_hidden, c.head_out = 128, 64
  if reference is not None:
    lengths(c, reference, n)


VECTOR_REFERENCE = 10_000  # rows: the vectors recipes state their lengths in epochs of this many rows


def vector_recipe(c, n) -> None:
  """The MLP backbone on z-scored features and vector views instead of crops (chosen on scikit-learn's
  digits as vectors: experiments/vectors.md): batch 256 (or the largest multiple of 8 under ``n``), Adam
  1e-3 after one warm-up epoch; each method then sets its own lengths (:data:`VECTOR_REFERENCE`)."""
  c.backbone, c.mlp_widths, c.standardize = "mlp", mlp.WIDTHS, True
  del c["crops"], c["flip_p"]
  # Every vector view costs a full forward pass (a small crop of an image costs a fraction of a large
  # one), so multi-crop's 2 + 6 becomes 2 + 2: the first two views get codes (SwAV) or fill the bank
  # (DeepCluster-v2), the other two only predict them.
  c.views = ml_collections.ConfigDict({"count": 4, "noise": 0.1, "mask": 0.2, "mix": 0.5, "neighbors": 5})
  c.batch_size = vector_batch(256, n)
  c.optimizer, c.learning_rate, c.weight_decay, c.warmup_epochs = "adam", 1e-3, 1e-6, 1
  c.head_hidden, c.head_out = 256, 64


def vector_lengths(c, n) -> None:
  """The vectors recipes' lengths (:func:`lengths`) for ``n`` rows, a checkpoint every twentieth of the epochs
  (an epoch of a few steps takes less time than its save)."""
  lengths(c, VECTOR_REFERENCE, n)
  c.checkpoint_every = max(1, c.epochs // 20)


def vector_batch(batch_size: int, n: int | None) -> int:
  """``batch_size``, or for fewer rows the largest multiple of 8 under ``n`` (a batch larger than the data
  would repeat its padding row in every BatchNorm statistic; 8 divides the batch over 1, 2, 4 or 8 devices)."""
  if n is None or n >= batch_size:
    return batch_size
  return max(8, n // 8 * 8)


def measured_on_mnist(c, n) -> None:
  """The lengths of a recipe chosen on MNIST, for ``n`` rows; at the reference (``n`` None) MNIST's 10 classes,
  elsewhere ``n_clusters`` as given (0: one cluster per prototype)."""
  if n is None:
    c.n_clusters = 10
  lengths(c, 70_000, n)


def digits_recipe(c, shape) -> None:
  """1,797 8x8 images: a quick demonstration (lengths in epochs)."""
  small_image_recipe(c, None, shape, reference=None)
  c.crops = ((2, 8, (0.5, 1.0)), (2, 6, (0.3, 0.6)))
  c.prototypes, c.batch_size, c.epochs = 10, 128, 20


def lengths(c, reference: int, n) -> None:
  """Every setting counted in epochs, as epochs of ``n`` rows for the images seen in those of ``reference``."""
  for name in ("epochs", "warmup_epochs", "eval_every", "queue_start_epoch"):
    if name in c:
      c[name] = configs.epochs_for(c[name], reference, n)


class Scorer(NamedTuple):
  """A method's network as the shared readout sees it.

  Attributes:
    embed: ``(state, x, n) -> [n, e]`` unit embeddings of the first ``n`` rows of images ``x`` (jitted).
    code: ``(state, x, n) -> [n]`` int each of those rows' prototype, the highest score (jitted).
    prototypes: ``state -> [K, e]`` the unit prototypes.
    span: whether the collapse monitor measures how much of the embeddings the prototypes span (a
      method whose prototypes are learnt, not centroids of the embeddings).
    name, advice: the method's name and what to try, in the warning of a loss stuck at ln K.
  """
  embed: Callable[[Any, jax.Array, int], jax.Array]
  code: Callable[[Any, jax.Array, int], jax.Array]
  prototypes: Callable[[Any], jax.Array]
  span: bool
  name: str
  advice: str


def optimizer(config, n: int) -> optax.GradientTransformation:
  """Linear warm-up for ``warmup_epochs``, then cosine decay to ``final_lr_fraction`` of the learning rate
  over ``epochs`` of ``n`` images; LARS (SwAV's optimizer, You et al. 2017) or AdamW."""
  steps = max(1, config.epochs * -(-n // config.batch_size))
  warmup = min(steps - 1, config.warmup_epochs * -(-n // config.batch_size))
  schedule = epochs.same(optax.warmup_cosine_decay_schedule, 0.0, config.learning_rate, warmup, steps,
                                                end_value=config.learning_rate * config.final_lr_fraction)
  if config.optimizer == "lars":
    return epochs.same(optax.lars, schedule, weight_decay=config.weight_decay, momentum=0.9)
  if config.optimizer == "adam":
    return epochs.same(optax.adamw, schedule, weight_decay=config.weight_decay)
  raise ValueError(f"optimizer={config.optimizer!r} must be 'lars' or 'adam'")


def crops(config) -> tuple:
  """``config.crops`` as the hashable ``((count, size, (low, high)), ...)`` that multi-crop takes."""
  return tuple((int(c), int(s), tuple(scale)) for c, s, scale in config.crops)


def images(config, data) -> np.ndarray:
  """The images ``[n, H, W, C]`` of a loaded dataset; rows of another shape are refused."""
  if data.x.ndim != 4:
    raise ValueError(f"{config.method} needs images [n, H, W, C]; {config.dataset!r} has rows of shape "
                     f"{data.x.shape[1:]}")
  return data.x


def prepare(config, data, mesh) -> engine.Prepared:
  """Images on the devices (``input="device"``), or streamed (``input="tf.data"``): from ``data``, a
  loaded dataset or the :class:`jaxclust.data.stream.Source` of a tfds dataset never loaded whole. The
  network of a streamed run sees the large crops. Vector rows (the MLP backbone) sit on the devices."""
  if networks.vectors(config):
    return _prepare_vectors(config, data, mesh)
  if isinstance(data, stream.Source):
    source = data
  else:
    networks.check_rows(config, data.x.shape[1:])
    images(config, data)
    source = stream.open_source(data) if config.input == "tf.data" else None
  n = data.x.shape[0] if source is None else source.n
  _, clusters = check(config, n, mesh)
  if source is None:
    return engine.Prepared(clusters, data.x)
  size = int(config.crops[0][1])
  return engine.Prepared(clusters, None, source, n, (size, size, source.channels))


def _prepare_vectors(config, data, mesh) -> engine.Prepared:
  networks.check_rows(config, data.x.shape[1:])
  n = data.x.shape[0]
  _, clusters = check(config, n, mesh)
  check_count(config.views.count, "views.count", low=2)  # two views get codes (SwAV) or fill the bank
  check_count(config.views.neighbors, "views.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  return engine.Prepared(clusters, data.x)


def vector_views(config):
  """The ``augment`` of a step on vector rows: ``(rng, rows) -> views.count`` views
  (:func:`jaxclust.data.augment_vectors.views`); the same object for the same settings, so the compiled
  epochs cached on it are found again."""
  return _vector_views(int(config.views.count), augment_vectors.options(config))


@epochs.compiled
def _vector_views(count: int, options: tuple):
  return functools.partial(augment_vectors.views, count=count, **dict(options))


def vector_context(run, cache: dict):
  """The views' neighbours and feature statistics of the run's rows, computed once per process (the data
  alone decides them: a resumed run computes the same)."""
  if "context" not in cache:
    cache["context"] = augment_vectors.placed_context(run.x, run.n, run.config.views.neighbors, run.mesh)
  return cache["context"]


def check(config, n: int, mesh) -> tuple[int, int]:
  """Refuses settings that do not fit ``n`` images or the mesh (a ValueError naming the value; the shared
  ranges were checked by :func:`jaxclust.validation.check_settings`); returns the number of prototypes
  and of the clusters reported."""
  k = check_count(config.prototypes, "prototypes", low=2, high=n, high_name="n_samples")
  check_count(config.epochs, "epochs", low=1)  # one stage: no epochs would report an untrained network
  clusters = check_count(config.n_clusters or k, "n_clusters", low=2, high=n, high_name="n_samples")
  if config.get("readout", "kmeans") not in readouts.READOUTS:
    raise ValueError(f"readout={config.readout!r} must be 'kmeans' or 'knn'")
  if config.get("readout", "kmeans") == "knn":
    check_count(config.readout_neighbors, "readout_neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
  return k, clusters


def epoch_record(run, state, epoch: int, loss: float, scorer: Scorer, *, z=None, figures=None) -> dict:
  """The record of an epoch on images held on the devices: the collapse monitor and, when this epoch
  reads out, the clusters' sizes and scores against the true labels.

  With one cluster per prototype the readout is the prototypes, as cheap as their usage: every epoch.
  Over-clustering reads out (k-means or kNN of the embeddings) every ``eval_every`` epochs and at the
  last. ``z``: the embeddings of the ``run.rows`` rows when the epoch computed them already.
  """
  config, n, k = run.config, run.n, run.config.prototypes
  figures = dict(figures or {})
  if z is None and run.k != k:  # over-clustering: the readout and the prototype usage both need them
    z = scorer.embed(state, run.x, run.rows)
  clusters = None
  if run.k == k or (epoch + 1) % config.get("eval_every", 1) == 0 or epoch + 1 == config.epochs:
    clusters, _ = labels(config, scorer, state, run.x, n, run.k, None if z is None else z[:n])
  prototypes = scorer.prototypes(state)
  codes = clusters if run.k == k else parallel.fetch(_nearest_prototype(z, prototypes))[:n]
  if z is not None:
    figures.update({key: float(value) for key, value in collapse.geometry(z, prototypes, n, scorer.span).items()})
  record = collapse.monitor(clusters, codes, run.k, k, loss, figures, name=scorer.name, advice=scorer.advice)
  if run.y is not None and clusters is not None:
    record.update(cluster_metrics.evaluate(run.y, clusters))
  return record


def labels(config, scorer: Scorer, state, x, n: int, clusters: int, z=None) -> tuple[np.ndarray, dict]:
  """The clusters of the first ``n`` rows of ``x`` and what assigns new images to them (``{}``, or as
  :func:`group`). ``z``, when given, holds their embeddings already."""
  if clusters == config.prototypes:
    return parallel.fetch(scorer.code(state, x, n)), {}
  if z is None:
    z = scorer.embed(state, x, n)
  codes = scorer.code(state, x, n) if config.get("readout", "kmeans") == "knn" else None
  return group(config, clusters, z, codes, scorer.prototypes(state))


def group(config, clusters: int, z, codes, prototypes) -> tuple[np.ndarray, dict]:
  """:func:`jaxclust.readout.over_cluster` of the embeddings ``z`` (and, for readout "knn", the prototypes
  ``codes`` of the rows) as ``config`` says: fewer ``clusters`` than prototypes."""
  return readouts.over_cluster(z, clusters, readout=config.get("readout", "kmeans"), rng=jax.random.key(config.seed),
                               codes=codes, neighbors=config.get("readout_neighbors", 0), prototypes=prototypes)


def readout(run, state, scorer: Scorer, summary: dict) -> engine.Readout:
  """The clusters of the images on the devices, and their embeddings (the scores are not probabilities:
  the report ranks members by their distance to the cluster's center)."""
  z = scorer.embed(state, run.x, run.n)
  clusters, found = labels(run.config, scorer, state, run.x, run.n, run.k, z)
  return engine.Readout(clusters, files=files(found), summary=summary, embedding=parallel.fetch(z))


def files(found: dict) -> dict:
  """:class:`jaxclust.engine.Readout`'s ``files``: the readout's file, and None for the other one, which
  is removed: a file left by another run in the workdir must never reach predict."""
  return {name: found.get(name) for name in FILES}


def assign(run, state, x, scorer: Scorer) -> engine.Assignment:
  """New images ``x`` under a finished run: their prototype, its group (readout "knn") or the nearest centroid
  (readout "kmeans"), as the run's settings read out; the confidence is the softmax of the scores at the
  training temperature, summed over a group's prototypes; the embedding is the unit ``z``."""
  x = jnp.asarray(x)
  z = scorer.embed(state, x, len(x))
  if run.k != run.config.prototypes and run.config.get("readout", "kmeans") == "kmeans":
    p = jax.nn.softmax(z @ jnp.asarray(workdirs.load_npy(run.workdir / "centroids.npy")).T / run.config.temperature)
    p = np.asarray(p)
    return engine.Assignment(np.argmax(p, -1), np.max(p, -1), parallel.fetch(z))
  codes = parallel.fetch(scorer.code(state, x, len(x)))
  p = np.asarray(jax.nn.softmax(z @ scorer.prototypes(state).T / run.config.temperature))
  if run.k == run.config.prototypes:
    return engine.Assignment(codes, p[np.arange(len(codes)), codes], parallel.fetch(z))
  groups = workdirs.load_npy(run.workdir / "groups.npy")
  labels = groups[codes]
  grouped = np.stack([p[:, groups == g].sum(-1) for g in range(run.k)], -1)
  return engine.Assignment(labels, grouped[np.arange(len(labels)), labels], parallel.fetch(z))


def crop_flops(model, config, shape) -> float:
  """Model FLOPs per training image of a multi-crop step (``jaxclust bench steps``): every crop forward and
  backward (3 forward passes) at its size; vector rows ``views.count`` views of ``shape``."""
  from jaxclust.models import flops
  sizes = [(int(config.views.count), tuple(shape))] if networks.vectors(config) else [
      (count, (size, size, shape[-1])) for count, size, _ in crops(config)]
  total = 0.0
  for count, crop in sizes:
    variables = jax.eval_shape(lambda crop=crop: model.init(jax.random.key(0), jnp.zeros((1, *crop)), train=False))
    total += 3 * count * flops.forward_flops(model, variables, (1, *crop), train=False)
  return total


@jax.jit
def _nearest_prototype(z, prototypes):
  """Each unit row of ``z``'s most similar unit prototype (what ``Scorer.code`` gives from the images)."""
  return jnp.argmax(z @ prototypes.T, -1)
