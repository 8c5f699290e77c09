"""What SCAN's stages (:mod:`jaxclust.methods.scan`) are built from and compile: the networks and
optimizers a configuration names, another run's pretext to start from (``pretext.init_from``), each
stage's epoch, the views it trains on (on device, or made by tf.data on the host for
``input="tf.data"``), and the passes over the whole dataset (backbone features, projections,
predictions): chunked over the images on the devices, or streamed in dataset order (:func:`over_images`).

Epoch factories are cached on their (hashable) settings, so a stage resumed in the same process reuses
its compiled epoch.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from jaxclust import engine, epochs, parallel
from jaxclust import workdir as workdirs
from jaxclust.data import augment, augment_tf, augment_vectors, stream
from jaxclust.methods import moco, networks, scan, simclr
from jaxclust.models import heads


def models(config, k):
  """``{"pretext": backbone + projection head, "cluster": backbone + config.scan.heads heads of k}``."""
  backbone = networks.backbone(config)
  return {"pretext": heads.Pretext(backbone, heads.ProjectionHead(config.pretext.head_hidden, config.pretext.head_out)),
          "cluster": heads.Clusterer(backbone, k=k, heads=config.scan.heads)}


def pretext_peer(config, shape) -> dict:
  """The pretext step as its PyTorch peer runs it (``jaxclust bench steps --peers``, ``jaxclust/bench_torch.py``)."""
  c = config.pretext
  return {"step": c.method, "backbone": networks.peer_backbone(config, shape), "hidden": c.head_hidden,
          "out": c.head_out, "temperature": c.temperature, "queue": c.get("queue_size", 0)}


def pretext_tx(config, n):
  """The pretext's optimizer for ``n`` images: SGD or LARS on a cosine schedule (after a warm-up)."""
  c = config.pretext
  per_epoch = -(-n // c.batch_size)
  steps = max(1, c.epochs * per_epoch)
  warmup = c.get("warmup_epochs", 0)
  if warmup:  # SimCLR (Chen et al. 2020): a linear warm-up, then the cosine decay
    schedule = epochs.same(optax.warmup_cosine_decay_schedule, 0.0, c.learning_rate, warmup * per_epoch, steps)
  else:
    schedule = epochs.same(optax.cosine_decay_schedule, c.learning_rate, steps)
  if c.optimizer == "lars":  # SimCLR's optimizer (You et al. 2017), from optax
    return epochs.same(optax.lars, schedule, weight_decay=c.weight_decay, momentum=0.9)
  if c.optimizer != "sgd":
    raise ValueError(f"pretext.optimizer={c.optimizer!r} must be 'sgd' or 'lars'")
  return epochs.same(optax.chain, epochs.same(optax.add_decayed_weights, c.weight_decay),
                     epochs.same(optax.sgd, schedule, momentum=0.9))


def scan_tx(config):
  """AdamW of the SCAN stage (official), on the heads alone when the backbone is frozen."""
  tx = epochs.same(optax.adamw, config.scan.learning_rate, weight_decay=config.scan.weight_decay)
  return tx if config.scan.update_backbone else epochs.same(scan.head_only, tx)


def selflabel_tx(config):
  """AdamW of self-labeling, a fresh optimizer state at the stage's start."""
  return epochs.same(optax.adamw, config.selflabel.learning_rate, weight_decay=config.selflabel.weight_decay)


VECTORS = "vectors"  # view options' first entry for vector rows (the MLP backbone)


def view_options(config):
  """(crop scale, flip probability, strong ops, Cutout fraction) of the weak and strong views, hashable; for
  vector rows ``("vectors", *views' settings)`` (:func:`jaxclust.data.augment_vectors.options`)."""
  if networks.vectors(config):
    return (VECTORS, *augment_vectors.options(config))
  return (tuple(config.augment.crop_scale), config.augment.flip_p, config.selflabel.strong_ops,
          float(config.selflabel.cutout))


def pretext_init(config, model, rng, example, tx):
  """The pretext state (SimCLR, or MoCo with its key encoder and queue) for ``example`` images."""
  if config.pretext.method == "moco":
    return moco.init(model, rng, example, tx, queue_size=config.pretext.queue_size)
  if config.pretext.method != "simclr":
    raise ValueError(f"pretext.method={config.pretext.method!r} must be 'simclr' or 'moco'")
  return simclr.init(model, rng, example, tx)


def pretext_options(config):
  """The pretext train step and its settings, hashable (the compiled epoch is cached on them)."""
  c = config.pretext
  if c.method not in ("simclr", "moco"):
    raise ValueError(f"pretext.method={c.method!r} must be 'simclr' or 'moco'")
  if c.method == "moco":
    if c.queue_size % c.batch_size:
      raise ValueError(f"pretext.queue_size={c.queue_size} must be a multiple of pretext.batch_size={c.batch_size}")
    return (moco.train_step, (("momentum", c.momentum), ("temperature", c.temperature)))
  return (simclr.train_step, (("temperature", c.temperature),))


def _views(image_shape, *view):
  """The weak (SimCLR) and strong (RandAugment + Cutout) views of :func:`view_options` ``view``, on device:
  ``(rng, images) -> views``. Vector rows have one view, both weak and strong: ``(rng, Rows) -> [B, ...]``."""
  if view[0] == VECTORS:
    vector_view = augment_vectors.batch_view(view[1:])
    return vector_view, vector_view
  crop_scale, flip_p, strong_ops, cutout = view
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


@epochs.compiled
def host_views(image_shape, crop_scale, flip_p, strong_ops, cutout):
  """The weak and strong views of :func:`_views` in tf.data (``input="tf.data"``): ``(image, seed) -> view``."""
  size = tuple(image_shape[:2])
  return (functools.partial(augment_tf.simclr_view, size=size, scale=crop_scale, flip_p=flip_p),
          functools.partial(augment_tf.strong_view, size=size, flip_p=flip_p, n_ops=strong_ops,
                            cutout_size=round(cutout * size[0])))


@epochs.compiled
def pretext_epoch(model, tx, batch_size, n, image_shape, options, view, sharding):
  """``epoch(state, x, rng)``; for vector rows ``epoch(state, x, context, rng)`` (:func:`epochs.vector_epoch`)."""
  weak, _ = _views(image_shape, *view)
  train_step, settings = options
  step = functools.partial(train_step, model=model, tx=tx, augment=weak, **dict(settings))
  if view[0] == VECTORS:
    return epochs.vector_epoch(step, batch_size, n, sharding)
  return epochs.batch_epoch(step, batch_size, n, sharding)


def _with_neighbors(x, neighbors, index, mask, rng, sharding):
  """Rows ``index`` of ``x``, the rows of one uniformly sampled mined neighbour each (never the image
  itself, column 0), and the mask."""
  column = jax.random.randint(jax.random.fold_in(rng, 0), index.shape, 1, neighbors.shape[1])
  rows, _, mask = epochs.gather(x, index, mask, sharding)
  neighbor_rows, _, _ = epochs.gather(x, neighbors[index, column], mask, sharding)
  return rows, neighbor_rows, mask


@epochs.compiled
def scan_epoch(model, tx, batch_size, n, image_shape, entropy_weight, update_backbone, augmented, view, sharding):
  """``epoch(state, x, neighbors, rng)``; for vector rows ``epoch(state, x, (neighbors, context), rng)``."""
  vectors = view[0] == VECTORS
  weak = _views(image_shape, *view)[0] if augmented else (augment_vectors.unaugmented if vectors else _unaugmented)
  step = functools.partial(scan.scan_step, model=model, tx=tx, augment=weak, entropy_weight=entropy_weight,
                           update_backbone=update_backbone)

  def vector_one(state, x, aux, index, mask, rng):
    """The rows and a mined neighbour each, both as :class:`jaxclust.data.augment_vectors.Rows` (their own
    partners to move toward)."""
    neighbors, context = aux
    k_column, k_rows, k_neighbors, rng = jax.random.split(rng, 4)
    column = jax.random.randint(k_column, index.shape, 1, neighbors.shape[1])
    rows = augment_vectors.take(x, context, index, k_rows)
    neighbor_rows = augment_vectors.take(x, context, neighbors[index, column], k_neighbors)
    if sharding is not None:
      a, b, c, d, mask = jax.lax.with_sharding_constraint(
          (rows.x, rows.partner, neighbor_rows.x, neighbor_rows.partner, mask), sharding)
      rows, neighbor_rows = rows._replace(x=a, partner=b), neighbor_rows._replace(x=c, partner=d)
    return step(state, {"image": rows, "neighbor": neighbor_rows, "mask": mask}, rng)

  if vectors:
    return epochs.epoch_runner(vector_one, batch_size, n, loop=False)

  def one(state, x, neighbors, index, mask, rng):
    images, neighbor_images, mask = _with_neighbors(x, neighbors, index, mask, rng, sharding)
    return step(state, {"image": images, "neighbor": neighbor_images, "mask": mask}, rng)

  return epochs.epoch_runner(one, batch_size, n)


@epochs.compiled
def scan_feature_epoch(model, tx, batch_size, n, entropy_weight, sharding):
  """SCAN for the heads alone on precomputed backbone features ``[n, d]``: ``epoch(state, features,
  neighbors, rng)``, the same batches and sampled neighbours as :func:`scan_epoch`. A compiled
  ``lax.scan`` on every backend: without convolutions XLA's CPU backend runs it as fast as a loop."""
  step = functools.partial(scan.scan_step, model=model, tx=tx, augment=None, entropy_weight=entropy_weight,
                           update_backbone=False)

  def one(state, features, neighbors, index, mask, rng):
    rows, neighbor_rows, mask = _with_neighbors(features, neighbors, index, mask, rng, sharding)
    return step(state, {"features": jnp.concatenate([rows, neighbor_rows]), "mask": mask}, rng)

  return epochs.epoch_runner(one, batch_size, n, loop=False)


@epochs.compiled
def selflabel_epoch(model, tx, batch_size, n, image_shape, head, threshold, batchnorm_train, view, sharding):
  """``epoch(state, x, rng)``; for vector rows ``epoch(state, x, context, rng)``, the rows themselves the weak
  view and a vector view the strong one."""
  _, strong = _views(image_shape, *view)
  vectors = view[0] == VECTORS
  step = functools.partial(scan.selflabel_step, model=model, tx=tx,
                           weak=augment_vectors.unaugmented if vectors else _unaugmented, strong=strong, head=head,
                           threshold=threshold, batchnorm_train=batchnorm_train)
  if vectors:
    return epochs.vector_epoch(step, batch_size, n, sharding)
  return epochs.batch_epoch(step, batch_size, n, sharding)


def pretext_stage(run, model, example, view, context) -> engine.Stage:
  """The pretext stage (SimCLR or MoCo, ``config.pretext``) of SCAN and of the two-step methods
  (:mod:`jaxclust.methods.contrastive`), or another run's finished pretext (``pretext.init_from``, no epochs).
  ``view``: :func:`view_options`' hashable views (only the weak one is used); ``context()``: the vector views'
  context, or None for images."""
  config, c = run.config, run.config.pretext
  tx = pretext_tx(config, run.n)
  options = pretext_options(config)

  def template(run):
    return parallel.put(pretext_init(config, model, jax.random.key(0), example, tx), run.mesh)

  def start(run, previous):
    if c.get("init_from"):
      manager, step = pretext_source(config)
      try:
        state = restore(manager, step, template(run), f"pretext.init_from={c.init_from!r}")
      finally:
        manager.close()
      run.log(f"pretext from {c.init_from} (its checkpoint {step}); pretext skipped")
      return state
    return parallel.put(pretext_init(config, model, jax.random.fold_in(run.key, 0), example, tx), run.mesh)

  def epoch(run, state, epoch):
    rng = jax.random.fold_in(run.key, 1_000_000 + epoch)
    if run.source is None:
      fn = pretext_epoch(model, tx, c.batch_size, run.n, run.shape, options, view, epochs.shard(run.mesh))
      vector_context = context()
      state, m = fn(state, run.x, rng) if vector_context is None else fn(state, run.x, vector_context, rng)
    else:
      weak, _ = host_views(run.shape, *view)
      step = epochs.host_step(options[0], model=model, tx=tx, augment=None, **dict(options[1]))
      state, m = epochs.host_epoch(step, state, rng, stream.source_view_batches(
          run.source, views=(weak, weak), batch_size=c.batch_size, seed=config.seed, epoch=epoch, mesh=run.mesh))
    return state, {"loss": float(m["loss"])}

  return engine.Stage("pretext", 0 if c.get("init_from") else c.epochs, start, template, epoch)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def features(model, variables, x, n, chunk):
  """The backbone's features of the first ``n`` rows of ``x``, ``chunk`` rows at a time."""
  return epochs.chunked(lambda b: model.apply(variables, b, method=model.features), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def projections(model, variables, x, n, chunk):
  """The pretext network's projection output (un-normalized: the cosine kNN normalizes it)."""
  return epochs.chunked(lambda b: model.apply(variables, b), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _predict_jit(model, variables, x, n, head, chunk):
  return epochs.chunked(lambda b: scan.predict(model, variables, b, head), x, n, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))
def classify(model, params, features, head):
  return jnp.argmax(model.apply({"params": params}, features, method=model.classify)[head], axis=-1)


def predict(model, variables, x, n, head, chunk):
  labels, confidence = _predict_jit(model, variables, x, n, head, chunk)
  return parallel.fetch(labels), parallel.fetch(confidence)


def chunk_size(config) -> int:
  """Images per chunk of a pass over the dataset: SCAN's ``mine.chunk_size``, the two-step methods'
  ``readout.chunk_size``."""
  return (config.mine if "mine" in config else config.readout).chunk_size


def over_images(run, what: str, model, variables, head: int = 0):
  """``what`` the network gives every image of the run, in dataset order: ``"features"`` (the backbone's)
  or ``"projections"`` ``[n, d]`` on the devices, or ``"predict"`` ``(labels [n], confidence [n], images)``
  on the host, ``images`` those of the first streamed batch (None on device: the engine holds them).

  On-device runs compute it in chunks of ``mine.chunk_size`` images. Streamed runs (``run.source``) read
  the stream once in dataset order, in global batches of about as many images, each process its share
  (:func:`jaxclust.data.stream.predict_in_order`); the ``[n, d]`` features are then replicated on the
  devices, where the kNN and the SCAN epochs read rows of them at random. A tfds stream's true labels
  are known only once it is read: such a pass sets ``run.y``, which mining and the epochs' figures score.
  """
  chunk = chunk_size(run.config)
  if run.source is None:
    if what == "predict":
      return (*predict(model, variables, run.x, run.n, head, chunk), None)
    return {"features": features, "projections": projections}[what](model, variables, run.x, run.n, chunk)
  size = -(-chunk // run.mesh.size) * run.mesh.size  # every device takes an equal share of a batch
  fn = {"features": lambda b: (features(model, variables, b, size, size),),
        "projections": lambda b: (projections(model, variables, b, size, size),),
        "predict": lambda b: _predict_jit(model, variables, b, size, head, size)}[what]
  outputs, y, first = stream.predict_in_order(fn, run.source, size=None, batch_size=size, mesh=run.mesh)
  if run.y is None and y is not None:
    run.y = y
  if what == "predict":
    return (*outputs, first)
  return parallel.put(outputs[0], run.mesh)


# The settings that shape the pretext network and its checkpointed state: a run may start from another
# run's pretext (pretext.init_from) only if they agree.
PRETEXT_METHODS = ("scan", "simclr", "moco")  # the methods whose runs hold a pretext (jaxclust.methods.contrastive)
PRETEXT_SHAPE = ("backbone", "stem", "cnn_channels", "mlp_widths", "pretext.method", "pretext.optimizer",
                 "pretext.head_hidden", "pretext.head_out", "pretext.queue_size")


def pretext_source(config):
  """``(manager, step)``: the read-only checkpoints of the run in ``pretext.init_from`` and the step that
  holds the end of its pretext (the first save of its mining stage)."""
  source = workdirs.path(config.pretext.init_from)
  name = f"pretext.init_from={config.pretext.init_from!r}"
  if not (source / "config.json").exists() or not (source / "checkpoints").is_dir():
    raise ValueError(f"{name}: {source} is not a SCAN, SimCLR or MoCo workdir (no config.json and checkpoints)")
  theirs = workdirs.read_json(source / "config.json")
  get = lambda c, key: functools.reduce(lambda d, part: d.get(part) if isinstance(d, dict) else None,
                                        key.split("."), c)
  ours = json.loads(config.to_json())
  differ = [key for key in PRETEXT_SHAPE if get(theirs, key) != get(ours, key)]
  if theirs.get("method") not in PRETEXT_METHODS or differ:
    raise ValueError(f"{name}: that run's pretext network differs from this one's in {differ or ['method']}")
  manager = ocp.CheckpointManager(source / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  trained = theirs["pretext"]["epochs"]
  # SCAN's mining stage starts from the pretext's end; a two-step run's pretext is its only stage, so its final
  # save (the engine's DONE) holds it too.
  ended = lambda meta: meta["stage"] in ("mine", engine.DONE) or (meta["stage"] == "pretext"
                                                                   and meta["progress"] == trained)
  latest = manager.latest_step()
  # A step other than the latest may be half deleted (orbax deletes old checkpoints in the background and a run
  # killed meanwhile leaves one so, as the engine knows): skipped, never the latest (saves land whole).
  ends = [step for step in manager.all_steps()
          if (step == latest or engine.readable(manager, step)) and ended(restore(manager, step, None, name))]
  if not ends:
    manager.close()
    raise ValueError(f"{name}: {source} has no finished pretext; run it to the end of its pretext first "
                     "(`jaxclust fit scan --stage pretext`)")
  return manager, ends[0]


def restore(manager, step, template, name):
  """Checkpoint ``step`` of another run: its state shaped as ``template``, or its meta (``template`` None)."""
  try:
    if template is None:
      return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  except Exception as e:  # orbax raises many types for unreadable checkpoints
    raise ValueError(f"{name}: checkpoint {step} in {manager.directory} cannot be restored "
                     f"({type(e).__name__}: {e})") from e
