"""Training driver for the online clustering methods, SwAV and DeepCluster-v2.

One stage of epochs, checkpointed every ``checkpoint_every`` epochs with the whole state (the SwAV
queue, the DeepCluster memory bank, prototypes and assignments included), so a killed run resumes
to the same result. The dataset lives on the devices as a row-sharded global array; each epoch
gathers and augments its batches on device (one compiled ``lax.scan`` on accelerators:
:func:`jaxclust.runs.epoch_runner`). Clusters are the
prototype of highest score (SwAV) or the nearest centroid (DeepCluster-v2); with fewer clusters than
prototypes, ``readout`` says how they are grouped (k-means of the embeddings, or by the nearest
neighbours of each cluster's members: :mod:`jaxclust.readout`).

With ``input="tf.data"`` (SwAV), images are instead streamed: read (a prepared tfds dataset such as
ImageNet is never loaded whole), multi-cropped on the host and batched by
:mod:`jaxclust.data.stream`, one compiled step per batch; the clusters are predicted in a final pass
with the evaluation transform.

Collapse monitor (:mod:`jaxclust.collapse`): the usage entropy of the prototypes is logged every epoch
with the distance of the loss from ln K (the loss of uniform predictions, for both methods); a warning
fires when the run sits at that plateau or prototypes go unused.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxclust import metrics as cluster_metrics
from jaxclust import collapse, parallel, readout, runs
from jaxclust.data import augment, sources, stream
from jaxclust.kernels.kmeans import kmeans
from jaxclust.kernels.knn import knn
from jaxclust.methods import deepcluster, swav
from jaxclust.models import heads
from jaxclust.validation import check_count, check_settings

METHODS = ("swav", "deepcluster")


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the epochs and the final readout of one run share."""
  config: ml_collections.ConfigDict
  model: nn.Module
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  data: sources.Dataset | None  # None for a tfds dataset streamed without being loaded (ImageNet)
  source: stream.Source | None  # the streamed images (input="tf.data"), else None
  x: jax.Array | None  # the images, row-sharded over the mesh (input="device"), else None
  mask: jax.Array | None  # which of x's rows are images, not padding
  n: int  # images
  rows: int  # n, or x's padded row count
  k: int  # prototypes
  clusters: int  # clusters reported (k, or fewer when over-clustering)
  eval_every: int

  @property
  def streaming(self) -> bool:
    return self.config.input == "tf.data"


def fit(config, workdir, *, log=print, mesh=None) -> dict:
  """Runs (or resumes) ``config.method`` (swav or deepcluster) on ``config.dataset`` in ``workdir``."""
  if config.method not in METHODS:
    raise ValueError(f"method={config.method!r} must be one of {', '.join(METHODS)}")
  check_settings(config)  # before anything is loaded or written
  workdir, log, finished = runs.open_workdir(workdir, log)
  if finished is not None:
    return finished
  lead = jax.process_index() == 0
  start = time.perf_counter()
  data, source, n, image_shape = _open(config)
  mesh = mesh or parallel.make_mesh()
  k, clusters, eval_every = _check_settings(config, n, mesh)
  runs.claim_workdir(workdir, config)
  x, mask = (None, None) if source is not None else parallel.global_rows(np.asarray(data.x, np.float32), mesh)
  run = _Run(config, _model(config, k), _tx(config, n), mesh, data, source, x, mask, n,
             n if x is None else x.shape[0], k, clusters, eval_every)
  key = jax.random.key(config.seed)
  log(f"{config.method} on {config.dataset}: n={n} images {image_shape} K={k} on {mesh.size} device(s), "
      f"input {config.input}, workdir {workdir}")
  logger = runs.Logger(workdir, log, start, enabled=lead)
  manager = ocp.CheckpointManager(workdir / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints))
  saves = manager.latest_step() or 0
  state = parallel.put(_init(config, run.model, jax.random.fold_in(key, 0), jnp.zeros((2, *image_shape)), run.tx,
                             run.rows, k), mesh)
  done = 0
  if saves:
    restored = runs.restore(manager, saves, state)
    state, done = restored["state"], restored["meta"]["progress"]
  elif config.method == "deepcluster":  # the first targets: k-means of the initial network's embeddings
    state = _fill_bank(state, _embed_jit(config.method, run.model, state, x, run.rows), mesh)
  logger.stage(config.method, config.epochs, done)
  for epoch in range(done, config.epochs):
    state, record = _epoch(run, state, epoch, jax.random.fold_in(key, 1_000_000 + epoch))
    logger.record(1, **record)
    if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
      manager.save(epoch + 1, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave({"progress": epoch + 1})))
  manager.wait_until_finished()
  logger.close()
  summary = _finish(run, state, workdir, lead, image_shape, start)
  log("final: " + runs.format_fields(summary))
  return summary


def _open(config):
  """The dataset, or its stream: ``(data, source, n, image_shape)``; ``data`` is None for a streamed
  tfds dataset (never loaded whole), ``source`` None unless ``input="tf.data"``."""
  if config.input not in ("device", "tf.data"):
    raise ValueError(f"input={config.input!r} must be 'device' or 'tf.data'")
  streaming = config.input == "tf.data"
  if streaming and config.method != "swav":
    raise ValueError(f"input='tf.data' streams SwAV only: {config.method} keeps a memory-bank row per image, "
                     "which needs the images on the devices (input='device')")
  if streaming and str(config.dataset).startswith("tfds:"):  # never loaded whole (ImageNet)
    data, source = None, stream.open_source(config.dataset, data_dir=config.data_dir or None)
  else:
    data = sources.load(config.dataset, data_dir=config.data_dir or None)
    if data.x.ndim != 4:
      raise ValueError(f"{config.method} needs images [n, H, W, C]; {config.dataset!r} has rows of shape "
                       f"{data.x.shape[1:]}")
    source = stream.open_source(data) if streaming else None
  if streaming:  # the model sees the large crops
    size = int(config.crops[0][1])
    return data, source, source.n, (size, size, source.channels)
  return data, source, data.x.shape[0], tuple(data.x.shape[1:])


def _epoch(run, state, epoch, rng):
  """Trains one epoch; returns the state and the epoch's record (loss, seconds, collapse monitor and,
  when this epoch reads out, the clustering metrics)."""
  config, model, n, x = run.config, run.model, run.n, run.x
  tick = time.perf_counter()
  if run.streaming:
    state, m = _swav_stream_epoch(config, model, run.tx, state, run.source, epoch, rng, run.mesh)
  elif config.method == "deepcluster":  # k-means of last epoch's bank gives this epoch's targets
    previous = parallel.fetch(state.assignments[0])[:n] if epoch else None  # epoch 0: no targets yet
    # Epoch 0's prototypes are placeholders: its k-means always starts with k-means++.
    warm = config.get("kmeans_warm_start", False) and epoch > 0
    state = _recluster(state, jax.random.fold_in(rng, 7), run.mask, warm)
    targets = collapse.target_stability(parallel.fetch(state.assignments[0])[:n], previous, run.data.y)
    state, m = _deepcluster_epoch(model, run.tx, config.batch_size, n, _crops(config), config.temperature,
                                  config.flip_p, runs.shard(run.mesh))(state, x, rng)
  else:
    state, m = _swav_epoch(model, run.tx, config.batch_size, n, _crops(config), config.flip_p, config.temperature,
                           config.sinkhorn_epsilon, config.freeze_prototypes_steps, epoch >= config.queue_start_epoch,
                           runs.shard(run.mesh), run.mesh if run.mesh.size > 1 else None)(state, x, rng)
  z = None  # the trained network's embeddings of the clean images, when this epoch computes them
  if config.method == "deepcluster" and config.get("bank_source", "training") == "epoch_end":
    z = _embed_jit(config.method, model, state, x, run.rows)
    state = _fill_bank(state, z, run.mesh)
  loss = float(m["loss"])
  record = {"stage": config.method, "epoch": epoch + 1, "of": config.epochs, "loss": loss,
            "seconds": time.perf_counter() - tick}
  if config.method == "deepcluster":
    record.update(targets)
  # SwAV's steps measure the spread of their batches' embeddings: every epoch, streamed too.
  geometry = {"batch_spread": float(m["batch_spread"])} if "batch_spread" in m else {}
  if run.streaming:  # a pass over a streamed dataset per epoch would cost as much as the epoch: the steps' figures
    record.update(collapse.monitor(None, None, run.clusters, run.k, loss, config.method, geometry))
    return state, record
  if z is None and run.clusters != run.k:  # over-clustering: the readout and the prototype usage both need them
    z = _embed_jit(config.method, model, state, x, run.rows)
  # With one cluster per prototype the readout is the prototypes, as cheap as their usage: every
  # epoch. Over-clustering reads out (k-means or kNN of the embeddings) every `eval_every` epochs.
  labels = None
  if run.clusters == run.k or (epoch + 1) % run.eval_every == 0 or epoch + 1 == config.epochs:
    labels, _ = _labels(config, model, state, x, n, run.clusters, None if z is None else z[:n])
  codes = labels if run.clusters == run.k else parallel.fetch(
      _nearest_prototype(z, _unit_prototypes(config.method, state)))[:n]
  if z is not None:
    geometry.update({key: float(value) for key, value in collapse.geometry(
        z, _unit_prototypes(config.method, state), n, config.method == "swav").items()})
  record.update(collapse.monitor(labels, codes, run.clusters, run.k, loss, config.method, geometry))
  if run.data.y is not None and labels is not None:
    record.update(cluster_metrics.evaluate(run.data.y, labels))
  return state, record


def _finish(run, state, workdir, lead, image_shape, start) -> dict:
  """The final clusters of all images: writes labels, the readout's files, exemplars and
  ``summary.json`` (on the lead process); returns the summary."""
  config, clusters = run.config, run.clusters
  if run.streaming:
    labels, grouping, y, images = _stream_labels(config, run.model, state, run.source, clusters, run.mesh)
  else:
    (labels, grouping), y = _labels(config, run.model, state, run.x, run.n, clusters), run.data.y
    images = np.asarray(run.data.x)
  summary = {"method": config.method, "dataset": config.dataset, "n": run.n, "shape": list(image_shape),
             "k": clusters, "prototypes": run.k, "seed": config.seed, "devices": run.mesh.size,
             "wall_seconds": time.perf_counter() - start,
             "train_seconds": runs.train_seconds(workdir)}
  if config.method == "deepcluster":
    summary["prototype_sets"] = config.get("prototype_sets", 1)
  if y is not None:
    summary.update(cluster_metrics.evaluate(y, labels))
  balance = cluster_metrics.cluster_balance(jnp.asarray(labels), k=clusters)
  summary["size_entropy"] = float(balance["normalized_entropy"])
  if lead:
    np.save(workdir / "labels.npy", labels)
    for name in ("centroids", "groups"):  # over-clustering: predict assigns new images with these
      if name in grouping:
        np.save(workdir / f"{name}.npy", grouping[name])
      else:  # another readout's file, from an earlier run in this workdir: predict must not use it
        (workdir / f"{name}.npy").unlink(missing_ok=True)
    confidence = np.ones(len(labels), np.float32)  # exemplars: any members (the scores are not probabilities)
    runs.write_exemplars(workdir / "exemplars.png", images, labels[:len(images)], confidence, min(clusters, 20))
    runs.write_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
  return summary


def _check_settings(config, n, mesh) -> tuple[int, int, int]:
  """Refuses settings that depend on the data or the mesh (ValueError naming the value; the shared
  ranges were checked by ``check_settings``) before the workdir is claimed; returns the prototype
  count, the reported cluster count and ``eval_every``."""
  k = check_count(config.prototypes, "prototypes", low=2, high=n, high_name="n_samples")
  check_count(config.epochs, "epochs", low=1)  # one stage: no epochs would report an untrained network
  if config.method == "deepcluster":
    check_count(config.get("bank_crops", 1), "bank_crops", low=1, high=int(config.crops[0][0]),
                high_name="crops[0][0], the large crops")
    if config.get("bank_source", "training") not in ("training", "epoch_end"):
      raise ValueError(f"bank_source={config.bank_source!r} must be 'training' or 'epoch_end'")
  clusters = check_count(config.n_clusters or k, "n_clusters", low=2, high=n, high_name="n_samples")
  if config.get("readout", "kmeans") not in ("kmeans", "knn"):
    raise ValueError(f"readout={config.readout!r} must be 'kmeans' or 'knn'")
  if config.get("readout", "kmeans") == "knn":
    check_count(config.readout_neighbors, "readout_neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  eval_every = config.get("eval_every", 1)  # like prototype_sets and kmeans_warm_start, checked by check_settings
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
  if config.method == "swav" and config.queue_length % mesh.size:
    raise ValueError(f"queue_length={config.queue_length} is not divisible by the {mesh.size} devices")
  return k, clusters, eval_every


def predict(workdir, images) -> np.ndarray:
  """Clusters of new images ``[m, H, W, C]`` (scaled as the training data) under a finished run."""
  workdir, summary, config, images = runs.finished_run(workdir, images)
  k, n = summary.get("prototypes", summary["k"]), summary["n"]
  model = _model(config, k)
  rows = -(-n // summary["devices"]) * summary["devices"]  # the training run's padded row count
  template = _init(config, model, jax.random.key(0), jnp.zeros((2, *images.shape[1:])), _tx(config, n), rows, k)
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  state = runs.restore(manager, manager.latest_step(), template)["state"]
  if (workdir / "groups.npy").exists():  # readout="knn": the group of each image's prototype
    codes = _labels_jit(config.method, model, state, jnp.asarray(images), len(images))
    return np.load(workdir / "groups.npy")[np.asarray(codes)]
  if (workdir / "centroids.npy").exists():
    z = _embed_jit(config.method, model, state, jnp.asarray(images), len(images))
    return np.asarray(jnp.argmax(z @ jnp.asarray(np.load(workdir / "centroids.npy")).T, -1))
  return np.asarray(_labels_jit(config.method, model, state, jnp.asarray(images), len(images)))


def _model(config, k):
  backbone = runs.backbone(config)
  if config.method == "swav":
    return swav.SwAVModel(backbone, hidden=config.head_hidden, out=config.head_out, prototypes=k)
  return heads.Pretext(backbone, heads.ProjectionHead(config.head_hidden, config.head_out))


def _tx(config, n):
  steps = max(1, config.epochs * -(-n // config.batch_size))
  warmup = min(steps - 1, config.warmup_epochs * -(-n // config.batch_size))
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, steps,
                                                end_value=config.learning_rate * config.final_lr_fraction)
  if config.optimizer == "lars":  # SwAV's optimizer (You et al. 2017), from optax
    return optax.lars(schedule, weight_decay=config.weight_decay, momentum=0.9)
  if config.optimizer == "adam":
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  raise ValueError(f"optimizer={config.optimizer!r} must be 'lars' or 'adam'")


def _init(config, model, rng, example, tx, rows, k):
  if config.method == "swav":
    return swav.init(model, rng, example, tx, n_assign=2, queue_length=config.queue_length)
  sets = config.get("prototype_sets", 1)  # workdirs written before prototype sets had one
  return deepcluster.init(model, rng, example, tx, n=rows, k=k, dim=config.head_out, sets=sets,
                          banks=config.get("bank_crops", 1))


def _fill_bank(state, z, mesh):
  """:func:`deepcluster.fill_bank`, the state kept replicated as :func:`parallel.put` placed it."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(deepcluster.fill_bank, out_shardings=replicated)(state, z)


def _crops(config):
  return tuple((int(c), int(s), tuple(scale)) for c, s, scale in config.crops)


@functools.partial(jax.jit, donate_argnums=0, static_argnums=3)
def _recluster(state, rng, mask, warm_start):
  return deepcluster.recluster(state, rng, mask=mask, warm_start=warm_start)


@functools.lru_cache(maxsize=None)
def _swav_epoch(model, tx, batch_size, n, crops, flip_p, temperature, epsilon, freeze, update_queue, sharding, mesh):
  augment_fn = functools.partial(augment.multi_crop, crops=crops, flip_p=flip_p)
  step = functools.partial(swav.train_step, model=model, tx=tx, augment=augment_fn, temperature=temperature,
                           epsilon=epsilon, freeze_prototypes=freeze, update_queue=update_queue, mesh=mesh)
  return runs.batch_epoch(step, batch_size, n, sharding)


@functools.lru_cache(maxsize=None)
def _deepcluster_epoch(model, tx, batch_size, n, crops, temperature, flip_p, sharding):
  augment_fn = functools.partial(augment.multi_crop, crops=crops, flip_p=flip_p)
  step = functools.partial(deepcluster.train_step, model=model, tx=tx, augment=augment_fn, temperature=temperature)
  return runs.batch_epoch(step, batch_size, n, sharding)


def _given_crops(rng, crops):
  """The ``augment`` of a streamed SwAV step: the host already made the crops."""
  return list(crops)


@functools.lru_cache(maxsize=None)
def _swav_stream_step(model, tx, temperature, epsilon, freeze, update_queue, mesh):
  step = functools.partial(swav.train_step, model=model, tx=tx, augment=_given_crops, temperature=temperature,
                           epsilon=epsilon, freeze_prototypes=freeze, update_queue=update_queue, mesh=mesh)
  return jax.jit(step, donate_argnums=0)


def _swav_stream_epoch(config, model, tx, state, source, epoch, rng, mesh):
  """One SwAV epoch on host-made multi-crop batches (``input="tf.data"``): one compiled step per batch."""
  step = _swav_stream_step(model, tx, config.temperature, config.sinkhorn_epsilon, config.freeze_prototypes_steps,
                           epoch >= config.queue_start_epoch, mesh if mesh.size > 1 else None)
  history = []
  for i, crops in enumerate(stream.multi_crop_batches(source, crops=_crops(config), batch_size=config.batch_size,
                                                      seed=config.seed, epoch=epoch, mesh=mesh,
                                                      flip_p=config.flip_p)):
    state, m = step(state, {"image": tuple(crops)}, jax.random.fold_in(rng, i))
    history.append(m)
  return state, jax.tree.map(lambda *a: jnp.mean(jnp.stack(a)), *history)


@functools.partial(jax.jit, static_argnums=(0,))
def _swav_embed_and_score(model, state, images):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  params = dict(state.params)
  params["prototypes"] = {"kernel": swav.normalize(params["prototypes"]["kernel"], axis=0)}
  z, scores = model.apply({**variables, "params": params}, images)
  return z, jnp.argmax(scores, -1)


def _stream_labels(config, model, state, source, clusters, mesh):
  """Labels of every streamed image (evaluation transform) in dataset order, what assigns new images
  to them (as :func:`_labels`), the true labels (None without), and the first batch's images for the
  exemplar grid."""
  (z, codes), y, images = stream.predict_in_order(lambda batch: _swav_embed_and_score(model, state, batch), source,
                                                  size=int(config.crops[0][1]), batch_size=config.batch_size,
                                                  mesh=mesh)
  if clusters == config.prototypes:
    return codes, {}, y, images
  if config.get("readout", "kmeans") == "knn":
    groups = _neighbor_groups(jnp.asarray(z), jnp.asarray(codes), config.readout_neighbors, clusters,
                              _unit_prototypes(config.method, state))
    return groups[np.asarray(codes)], {"groups": groups}, y, images
  out = kmeans(jnp.asarray(z), clusters, rng=jax.random.key(config.seed), n_init=10, spherical=True)
  return np.asarray(out.labels), {"centroids": np.asarray(swav.normalize(out.centers))}, y, images


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _labels_jit(method, model, state, x, n):
  return runs.chunked(_coder(method, model, state), x, n, 1024)


def _coder(method, model, state):
  """``images -> prototype`` of each image: highest score (SwAV), nearest centroid of the first prototype
  set (DeepCluster-v2)."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if method == "swav":
    params = dict(state.params)
    params["prototypes"] = {"kernel": swav.normalize(params["prototypes"]["kernel"], axis=0)}
    return lambda b: jnp.argmax(model.apply({**variables, "params": params}, b)[1], -1)
  first = state.prototypes[0]
  return lambda b: jnp.argmax(swav.normalize(model.apply(variables, b)) @ first.T, -1)


def _unit_prototypes(method, state):
  """``[K, e]`` unit prototypes (SwAV's are the columns of its last layer)."""
  if method == "swav":
    return swav.normalize(state.params["prototypes"]["kernel"], axis=0).T
  return state.prototypes[0]


def _neighbor_groups(z, codes, neighbors, clusters, prototypes):
  """:func:`readout.group_clusters` of the prototype clusters ``codes`` by :func:`_neighbor_transitions`."""
  transitions = _neighbor_transitions(z, codes, neighbors, prototypes.shape[0])
  return readout.group_clusters(parallel.fetch(transitions), clusters, parallel.fetch(prototypes))


def _neighbor_transitions(z, codes, neighbors, k):
  """:func:`readout.cluster_transitions` from each row's cluster to those of its ``neighbors`` nearest
  neighbours in ``z`` (cosine, the row itself left out)."""
  nearest = knn(z, neighbors + 1).indices[:, 1:]  # column 0: the row itself (or an exact duplicate of it)
  return _transitions_jit(codes, nearest, k)


@jax.jit
def _nearest_prototype(z, prototypes):
  """Each unit row of ``z``'s most similar unit prototype (what :func:`_coder` gives from the images)."""
  return jnp.argmax(z @ prototypes.T, -1)


@functools.partial(jax.jit, static_argnums=2)
def _transitions_jit(codes, nearest, k):
  return readout.cluster_transitions(codes, codes[nearest], k)


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _embed_jit(method, model, state, x, n):
  """Normalized embeddings of the first ``n`` rows (SwAV's projection, DeepCluster's output)."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  if method == "swav":
    return runs.chunked(lambda b: model.apply(variables, b)[0], x, n, 1024)
  return runs.chunked(lambda b: swav.normalize(model.apply(variables, b)), x, n, 1024)


def _labels(config, model, state, x, n, clusters, z=None):
  """Cluster labels of the first ``n`` rows, and what assigns new images to them (``{}``, ``{"centroids"}``
  or ``{"groups"}``).

  With ``clusters`` equal to the number of prototypes, a row's cluster is its prototype (SwAV: highest
  score; DeepCluster-v2: nearest centroid). With fewer (over-clustering, as the DeepCluster papers
  train), ``config.readout`` says how: "kmeans" groups the normalized embeddings into ``clusters`` by
  spherical k-means; "knn" groups the prototypes by the ``readout_neighbors`` nearest neighbours of their
  members in the embedding (:mod:`jaxclust.readout`), and a row's cluster is its prototype's group.
  ``z``, when given, holds the embeddings already (``_embed_jit`` of the same state).
  """
  if clusters == config.prototypes:
    return parallel.fetch(_labels_jit(config.method, model, state, x, n)), {}
  if z is None:
    z = _embed_jit(config.method, model, state, x, n)
  if config.get("readout", "kmeans") == "knn":
    codes = _labels_jit(config.method, model, state, x, n)
    groups = _neighbor_groups(z, codes, config.readout_neighbors, clusters, _unit_prototypes(config.method, state))
    return groups[parallel.fetch(codes)], {"groups": groups}
  out = kmeans(z, clusters, rng=jax.random.key(config.seed), n_init=10, spherical=True)
  return parallel.fetch(out.labels), {"centroids": np.asarray(parallel.fetch(swav.normalize(out.centers)))}
