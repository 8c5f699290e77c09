"""Training driver for SCAN: pretext -> neighbour mining -> SCAN -> self-labeling, checkpointed per stage.

The pretext is SimCLR (``pretext.method="simclr"``, SCAN's CIFAR/STL recipe) or MoCo v2 ("moco").

Like :mod:`jaxclust.train`: every save records the stage and its progress, so ``fit`` on the same
workdir resumes a killed run where it stopped, with the same result; finished, foreign-config and
corrupt workdirs are refused. The dataset lives on the devices as a row-sharded global array, each
epoch gathers and augments its batches on device (one compiled ``lax.scan`` on accelerators, see
:func:`jaxclust.runs.epoch_runner`). With ``input="tf.data"`` the views are made instead by a host tf.data pipeline
(:func:`jaxclust.data.stream.view_batches`, same semantics) and fed to one compiled step per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxclust import metrics as cluster_metrics
from jaxclust import parallel, runs, scan_epochs
from jaxclust.data import sources, stream
from jaxclust.kernels.knn import knn
from jaxclust.methods import moco, scan, simclr
from jaxclust.models import heads
from jaxclust.validation import check_count, check_settings

STAGES = ("pretext", "mine", "scan", "selflabel")
_DONE = "done"


def fit(config, workdir, *, log=print, mesh=None, stage: str | None = None) -> dict:
  """Runs (or resumes) SCAN on ``config.dataset``; with ``stage``, stops once that stage is done."""
  if stage is not None and stage not in STAGES:
    raise ValueError(f"stage={stage!r} must be one of {', '.join(STAGES)}")
  check_settings(config)  # before anything is loaded or written
  workdir, log, finished = runs.open_workdir(workdir, log)
  if finished is not None:
    return finished
  lead = jax.process_index() == 0
  start = time.perf_counter()
  data = sources.load(config.dataset, data_dir=config.data_dir or None)
  if data.x.ndim != 4:
    raise ValueError(f"SCAN needs images [n, H, W, C]; {config.dataset!r} has rows of shape {data.x.shape[1:]}")
  n = data.x.shape[0]
  k = config.n_clusters or (len(np.unique(data.y)) if data.y is not None else 0)
  if k == 0:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=1, high=n, high_name="n_samples")
  check_count(config.mine.neighbors, "mine.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  check_count(config.pretext.get("warmup_epochs", 0), "pretext.warmup_epochs", low=0, high=config.pretext.epochs,
              high_name="pretext.epochs")
  if config.mine.features not in ("projection", "backbone"):
    raise ValueError(f"mine.features={config.mine.features!r} must be 'projection' or 'backbone'")
  if config.input not in ("device", "tf.data"):
    raise ValueError(f"input={config.input!r} must be 'device' or 'tf.data'")
  mesh = mesh or parallel.make_mesh()
  for name in ("pretext", "scan", "selflabel"):
    if config[name].batch_size % mesh.size:
      raise ValueError(f"{name}.batch_size={config[name].batch_size} is not divisible by the {mesh.size} devices")
  _pretext_options(config)  # an unknown pretext or a queue that batches do not fill fails here
  _view_options(config)  # so do bad strong-view settings
  _models(config, k)
  if config.pretext.get("init_from") and not (workdir / "checkpoints").exists():
    _pretext_source(config)[0].close()  # a source without a finished pretext fails before the workdir exists
  runs.claim_workdir(workdir, config)
  log(f"scan on {config.dataset}: n={n} images {data.x.shape[1:]} k={k} on {mesh.size} device(s), workdir {workdir}")
  run = _Run.open(config, workdir, data, k, mesh, runs.Logger(workdir, log, start, enabled=lead), log, lead)
  for name, train_stage in (("pretext", _pretext), ("mine", _mine), ("scan", _scan)):
    if run.meta["stage"] == name:
      train_stage(run)
    if stage == name:  # also when the run was already past it: nothing later is trained
      run.manager.wait_until_finished()
      run.logger.close()
      log(f"stage {name} done; run again without --stage to continue")
      return {"stage": name}
  if run.meta["stage"] == "selflabel":
    _selflabel(run)
  return _finish(run, start)


@dataclasses.dataclass
class _Run:
  """What the stages of one run share. ``meta`` is the latest save's (stage, progress, ...), ``saves``
  its step; ``save`` advances both."""
  config: ml_collections.ConfigDict
  workdir: Path
  data: sources.Dataset
  x: jax.Array  # the images, row-sharded over the mesh
  k: int
  mesh: jax.sharding.Mesh
  logger: runs.Logger
  log: Callable[[str], None]
  lead: bool
  manager: ocp.CheckpointManager
  stage_ends: _StageEnds
  saves: int
  meta: dict

  @classmethod
  def open(cls, config, workdir, data, k, mesh, logger, log, lead):
    # The latest keep_checkpoints saves, and the last of every finished stage whatever their number (so
    # the pretext's is not rotated out by the SCAN epochs: a later stage can be run again from it).
    stage_ends = _StageEnds(set())
    manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(config.keep_checkpoints), stage_ends])))
    for step in manager.all_steps():
      if _ends_a_stage(runs.restore(manager, step, meta_only=True)["meta"]):
        stage_ends.steps.add(step)
    saves = manager.latest_step() or 0
    meta = runs.restore(manager, saves, meta_only=True)["meta"] if saves else {"stage": "pretext", "progress": 0}
    x, _ = parallel.global_rows(np.asarray(data.x, np.float32), mesh)
    return cls(config, workdir, data, x, k, mesh, logger, log, lead, manager, stage_ends, saves, meta)

  @property
  def n(self) -> int:
    return self.data.x.shape[0]

  @property
  def image_shape(self) -> tuple:
    return tuple(self.data.x.shape[1:])

  @property
  def example(self) -> jax.Array:
    return jnp.zeros((2, *self.image_shape))

  @property
  def key(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  @property
  def host(self) -> bool:  # views made by tf.data on the host instead of on the devices
    return self.config.input == "tf.data"

  @functools.cached_property
  def models(self) -> dict:
    return _models(self.config, self.k)

  @functools.cached_property
  def cluster_templates(self) -> dict:
    return _cluster_template(self.models["cluster"], self.example, self.config, self.n, self.mesh)

  def save(self, state, stage, progress, **extra):
    self.saves += 1
    if _ends_a_stage({"stage": stage, "progress": progress}):
      self.stage_ends.steps.add(self.saves)
    self.meta = {"stage": stage, "progress": progress, **extra}
    self.manager.save(self.saves, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(self.meta)))

  def restore(self, template):
    """The latest save's state, shaped and placed as ``template``."""
    return runs.restore(self.manager, self.saves, template)["state"]


def _pretext(run: _Run):
  """1. The pretext (SimCLR or MoCo), or another run's finished pretext (``pretext.init_from``): one
  pretext, many SCAN runs."""
  config, model, n = run.config, run.models["pretext"], run.n
  if config.pretext.get("init_from"):
    source, end = _pretext_source(config)
    restored = runs.restore(source, end, _pretext_template(model, run.example, run.mesh, config, n))
    source.close()
    epochs = restored["meta"]["progress"]
    run.log(f"pretext from {config.pretext.init_from} ({epochs} epochs); pretext skipped")
    run.save(restored["state"], "mine", epochs, pretext_from=str(Path(config.pretext.init_from).absolute()))
    return
  tx = _pretext_tx(config, n)
  state = parallel.put(_pretext_init(config, model, jax.random.fold_in(run.key, 0), run.example, tx), run.mesh)
  if run.saves:
    state = run.restore(state)
  epoch_fn = scan_epochs.pretext_epoch(model, tx, config.pretext.batch_size, n, run.image_shape,
                                       _pretext_options(config), _view_options(config), runs.shard(run.mesh))
  run.logger.stage("pretext", config.pretext.epochs, run.meta["progress"])
  for epoch in range(run.meta["progress"], config.pretext.epochs):
    tick = time.perf_counter()
    rng = jax.random.fold_in(run.key, 1_000_000 + epoch)
    if run.host:
      weak, _ = scan_epochs.host_views(run.image_shape, *_view_options(config))
      step = scan_epochs.host_step(_pretext_options(config)[0], model=model, tx=tx, augment=None,
                                   **dict(_pretext_options(config)[1]))
      state, m = scan_epochs.host_epoch(step, state, rng, stream.view_batches(
          run.data.x, views=(weak, weak), batch_size=config.pretext.batch_size, seed=config.seed, epoch=epoch,
          mesh=run.mesh))
    else:
      state, m = epoch_fn(state, run.x, rng)
    run.logger.record(1, stage="pretext", epoch=epoch + 1, of=config.pretext.epochs, loss=float(m["loss"]),
                      seconds=time.perf_counter() - tick)
    if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.pretext.epochs:
      run.save(state, "pretext" if epoch + 1 < config.pretext.epochs else "mine", epoch + 1)
  if config.pretext.epochs == 0:
    run.save(state, "mine", 0)


def _mine(run: _Run):
  """2. Neighbour mining on the pretext features; the clustering model starts from the pretext backbone."""
  config, model, n = run.config, run.models["pretext"], run.n
  pretext_state = run.restore(_pretext_template(model, run.example, run.mesh, config, n))
  variables = {"params": pretext_state.params, "batch_stats": pretext_state.batch_stats}
  mined_on = scan_epochs.projections if config.mine.features == "projection" else scan_epochs.features
  features = mined_on(model, variables, run.x, n, config.mine.chunk_size)
  out = knn(features, config.mine.neighbors + 1, metric="cosine")  # column 0 is the image itself
  neighbors = parallel.fetch(out.indices).astype(np.int32)
  if run.lead:
    np.save(run.workdir / "neighbors.npy", neighbors)
  record = {"stage": "mine", "neighbors": config.mine.neighbors, "features": config.mine.features}
  y = run.data.y
  if y is not None:  # SCAN's diagnostic: how often a neighbour shares the image's class
    record["neighbor_accuracy"] = float(np.mean(y[neighbors[:, 1:]] == y[:, None]))
    kmeans_labels = _kmeans_baseline(features, run.k, run.key)
    record.update({f"kmeans_{m}": v for m, v in cluster_metrics.evaluate(y, kmeans_labels).items()})
  run.logger.record(**record)
  cluster_state = _cluster_init(run.models["cluster"], pretext_state, run.example, config, n, run.mesh, run.key)
  run.save(cluster_state, "scan", 0, backbone_from_pretext=True)


def _scan(run: _Run):
  """3. SCAN: every head trained on the mined neighbours; the next stage takes the head of lowest loss."""
  config, model, n, k = run.config, run.models["cluster"], run.n, run.k
  host_neighbors = np.load(run.workdir / "neighbors.npy")  # [n, neighbors + 1], column 0: self
  neighbors = parallel.put(host_neighbors, run.mesh)
  state = run.restore(run.cluster_templates["scan"])
  tx = _scan_tx(config)
  features = None
  if _frozen_features(config):  # the frozen backbone's features, once: an epoch gathers rows of them
    features = scan_epochs.features(model, {"params": state.params, "batch_stats": state.batch_stats}, run.x, n,
                                    config.mine.chunk_size)
    epoch_fn = scan_epochs.scan_feature_epoch(model, tx, config.scan.batch_size, n, config.scan.entropy_weight,
                                              runs.shard(run.mesh))
  else:
    epoch_fn = scan_epochs.scan_epoch(model, tx, config.scan.batch_size, n, run.image_shape,
                                      config.scan.entropy_weight, config.scan.update_backbone, config.scan.augment,
                                      _view_options(config), runs.shard(run.mesh))
  run.logger.stage("scan", config.scan.epochs, run.meta["progress"])
  head_loss = np.asarray(run.meta.get("head_loss", [0.0] * config.scan.heads))
  for epoch in range(run.meta["progress"], config.scan.epochs):
    tick = time.perf_counter()
    rng = jax.random.fold_in(run.key, 2_000_000 + epoch)
    if features is not None:
      state, m = epoch_fn(state, features, neighbors, rng)
    elif run.host:
      weak = (scan_epochs.host_views(run.image_shape, *_view_options(config))[0] if config.scan.augment
              else scan_epochs.host_identity)
      step = scan_epochs.host_step(scan.scan_step, model=model, tx=tx, augment=None,
                                   entropy_weight=config.scan.entropy_weight,
                                   update_backbone=config.scan.update_backbone)
      state, m = scan_epochs.host_epoch(step, state, rng, stream.view_batches(
          run.data.x, views=(weak, weak), batch_size=config.scan.batch_size, seed=config.seed,
          epoch=100_000 + epoch, mesh=run.mesh, neighbors=host_neighbors))
    else:
      state, m = epoch_fn(state, run.x, neighbors, rng)
    head_loss = np.asarray(m["head_loss"])
    best = int(np.argmin(head_loss))
    record = {"stage": "scan", "epoch": epoch + 1, "of": config.scan.epochs, "loss": float(head_loss[best]),
              "best_head": best, "consistency": float(m["consistency"][best]),
              "entropy": float(m["entropy"][best]), "seconds": time.perf_counter() - tick}
    record.update(_usage(model, state, run.x, n, k, best, run.data.y, config, run.log, features))
    run.logger.record(1, **record)
    if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.scan.epochs:
      done = epoch + 1 == config.scan.epochs
      run.save(state, "selflabel" if done else "scan", 0 if done else epoch + 1, head_loss=head_loss.tolist(),
               best_head=best)
  if config.scan.epochs == 0:
    run.save(state, "selflabel", 0, head_loss=head_loss.tolist(), best_head=0)


def _selflabel(run: _Run):
  """4. Self-labeling of the head of lowest SCAN loss on its confident predictions."""
  config, model, n = run.config, run.models["cluster"], run.n
  best = int(run.meta.get("best_head", 0))
  state = run.restore(run.cluster_templates["selflabel" if run.meta["progress"] else "scan"])
  tx = _selflabel_tx(config)
  if run.meta["progress"] == 0:  # a fresh optimizer for the new stage
    state = parallel.put(jax.tree.map(np.asarray, state.replace(opt_state=tx.init(state.params))), run.mesh)
  epoch_fn = scan_epochs.selflabel_epoch(model, tx, config.selflabel.batch_size, n, run.image_shape, best,
                                         config.selflabel.threshold, config.scan.update_backbone,
                                         _view_options(config), runs.shard(run.mesh))
  run.logger.stage("selflabel", config.selflabel.epochs, run.meta["progress"])
  for epoch in range(run.meta["progress"], config.selflabel.epochs):
    tick = time.perf_counter()
    rng = jax.random.fold_in(run.key, 3_000_000 + epoch)
    if run.host:
      _, strong = scan_epochs.host_views(run.image_shape, *_view_options(config))
      step = scan_epochs.host_step(scan.selflabel_step, model=model, tx=tx, weak=None, strong=None, head=best,
                                   threshold=config.selflabel.threshold,
                                   batchnorm_train=config.scan.update_backbone)
      state, m = scan_epochs.host_epoch(step, state, rng, stream.view_batches(
          run.data.x, views=(scan_epochs.host_identity, strong), batch_size=config.selflabel.batch_size,
          seed=config.seed, epoch=200_000 + epoch, mesh=run.mesh))
    else:
      state, m = epoch_fn(state, run.x, rng)
    confident = float(m["confident"])
    record = {"stage": "selflabel", "epoch": epoch + 1, "of": config.selflabel.epochs, "loss": float(m["loss"]),
              "confident": confident, "seconds": time.perf_counter() - tick}
    if confident == 0.0:
      message = (f"self-labeling epoch {epoch + 1}: no image passed the confidence threshold "
                 f"{config.selflabel.threshold}, so nothing was updated; train SCAN longer or lower "
                 "selflabel.threshold")
      warnings.warn(message)
      record["warning"] = "no confident samples"
    record.update(_usage(model, state, run.x, n, run.k, best, run.data.y, config, run.log))
    run.logger.record(1, **record)
    if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.selflabel.epochs:
      done = epoch + 1 == config.selflabel.epochs
      run.save(state, _DONE if done else "selflabel", epoch + 1, best_head=best)
  if config.selflabel.epochs == 0:
    run.save(state, _DONE, 0, best_head=best)


def _finish(run: _Run, start: float) -> dict:
  """The final state's labels, exemplars and summary (also when resuming a run killed after its last save)."""
  best = int(run.meta.get("best_head", 0))
  state = run.restore(run.cluster_templates["selflabel"])
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  labels, confidence = scan_epochs.predict(run.models["cluster"], variables, run.x, run.n, best,
                                           run.config.mine.chunk_size)
  run.manager.wait_until_finished()
  run.logger.close()
  config, data, k = run.config, run.data, run.k
  summary = {"method": "scan", "dataset": config.dataset, "n": run.n, "shape": list(run.image_shape), "k": k,
             "seed": config.seed, "best_head": best, "devices": run.mesh.size,
             "wall_seconds": time.perf_counter() - start,
             "train_seconds": runs.train_seconds(run.workdir)}
  if data.y is not None:
    summary.update(cluster_metrics.evaluate(data.y, labels))
  summary["size_entropy"] = float(cluster_metrics.cluster_balance(jnp.asarray(labels), k=k)["normalized_entropy"])
  if run.lead:
    np.save(run.workdir / "labels.npy", labels)
    runs.write_exemplars(run.workdir / "exemplars.png", np.asarray(data.x), labels, confidence, k)
    runs.write_atomic(run.workdir / "summary.json", json.dumps(summary, indent=2))
  run.log("final: " + runs.format_fields(summary))
  return summary


@dataclasses.dataclass
class _StageEnds(ocp.checkpoint_managers.PreservationPolicy):
  """Keeps the checkpoints whose steps are in ``steps`` (the driver adds each stage's last save)."""
  steps: set

  def should_preserve(self, checkpoints, *, context):
    return [c.step in self.steps for c in checkpoints]


def _ends_a_stage(meta) -> bool:
  """A save that ends a stage: the pretext's last ("mine" next) or the first of the next stage."""
  return meta["stage"] == "mine" or meta["progress"] == 0


def predict(workdir, images) -> np.ndarray:
  """Clusters of new images ``[m, H, W, C]`` (in [0, 1]) under a finished SCAN run."""
  workdir, summary, config, images = runs.finished_run(workdir, images)
  model = _models(config, summary["k"])["cluster"]
  mesh = parallel.make_mesh(1)
  template = _cluster_template(model, jnp.zeros((2, *images.shape[1:])), config, summary["n"], mesh)["selflabel"]
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  state = runs.restore(manager, manager.latest_step(), template)["state"]
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  labels, _ = scan_epochs.predict(model, variables, jnp.asarray(images), len(images), summary["best_head"],
                                  config.mine.chunk_size)
  return labels


def _models(config, k):
  backbone = runs.backbone(config)
  return {"pretext": heads.Pretext(backbone, heads.ProjectionHead(config.pretext.head_hidden, config.pretext.head_out)),
          "cluster": heads.Clusterer(backbone, k=k, heads=config.scan.heads)}


def _pretext_tx(config, n):
  c = config.pretext
  per_epoch = -(-n // c.batch_size)
  steps = max(1, c.epochs * per_epoch)
  warmup = c.get("warmup_epochs", 0)
  if warmup:  # SimCLR (Chen et al. 2020): a linear warm-up, then the cosine decay
    schedule = optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, warmup * per_epoch, steps)
  else:
    schedule = optax.cosine_decay_schedule(c.learning_rate, steps)
  if c.optimizer == "lars":  # SimCLR's optimizer (You et al. 2017), from optax
    return optax.lars(schedule, weight_decay=c.weight_decay, momentum=0.9)
  if c.optimizer != "sgd":
    raise ValueError(f"pretext.optimizer={c.optimizer!r} must be 'sgd' or 'lars'")
  return optax.chain(optax.add_decayed_weights(c.weight_decay), optax.sgd(schedule, momentum=0.9))


def _scan_tx(config):
  tx = optax.adamw(config.scan.learning_rate, weight_decay=config.scan.weight_decay)
  return tx if config.scan.update_backbone else scan.head_only(tx)


def _selflabel_tx(config):
  return optax.adamw(config.selflabel.learning_rate, weight_decay=config.selflabel.weight_decay)


def _view_options(config):
  """(crop scale, flip probability, strong ops, Cutout fraction) of the weak and strong views, hashable."""
  return (tuple(config.augment.crop_scale), config.augment.flip_p, config.selflabel.strong_ops,
          float(config.selflabel.cutout))


def _frozen_features(config) -> bool:
  """Whether the SCAN stage trains the heads on precomputed features (frozen backbone, no augmentation)."""
  return not config.scan.update_backbone and not config.scan.augment


def _pretext_init(config, model, rng, example, tx):
  if config.pretext.method == "moco":
    return moco.init(model, rng, example, tx, queue_size=config.pretext.queue_size)
  if config.pretext.method != "simclr":
    raise ValueError(f"pretext.method={config.pretext.method!r} must be 'simclr' or 'moco'")
  return simclr.init(model, rng, example, tx)


def _pretext_options(config):
  """The pretext train step and its settings, hashable (the compiled epoch is cached on them)."""
  c = config.pretext
  if c.method not in ("simclr", "moco"):
    raise ValueError(f"pretext.method={c.method!r} must be 'simclr' or 'moco'")
  if c.method == "moco":
    if c.queue_size % c.batch_size:
      raise ValueError(f"pretext.queue_size={c.queue_size} must be a multiple of pretext.batch_size={c.batch_size}")
    return (moco.train_step, (("momentum", c.momentum), ("temperature", c.temperature)))
  return (simclr.train_step, (("temperature", c.temperature),))


def _kmeans_baseline(features, k, key):
  from jaxclust.kernels.kmeans import kmeans
  return parallel.fetch(kmeans(features, k, rng=jax.random.fold_in(key, 5), n_init=10, spherical=True).labels)


def _usage(model, state, x, n, k, head, y, config, log, features=None):
  """Cluster usage of ``head`` over the dataset: a collapse guard (and ACC/NMI/ARI when labelled).
  With ``features`` (a frozen backbone's, of ``x``) the heads run on them instead of the images."""
  if features is not None:
    labels = parallel.fetch(scan_epochs.classify(model, state.params, features, head))
  else:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    labels, _ = scan_epochs.predict(model, variables, x, n, head, config.mine.chunk_size)
  balance = cluster_metrics.cluster_balance(jnp.asarray(labels), k=k)
  out = {"size_entropy": float(balance["normalized_entropy"]), "empty_clusters": int(np.sum(np.bincount(
      labels, minlength=k) == 0))}
  if out["size_entropy"] < 0.5 or out["empty_clusters"]:
    warnings.warn(f"clusters are collapsing: normalized size entropy {out['size_entropy']:.3f}, "
                  f"{out['empty_clusters']} of {k} clusters empty")
  if y is not None:
    out.update(cluster_metrics.evaluate(y, labels))
  return out


# The settings that shape the pretext network and its checkpointed state: a run may start from another
# run's pretext (pretext.init_from) only if they agree.
_PRETEXT_SHAPE = ("backbone", "stem", "cnn_channels", "pretext.method", "pretext.optimizer", "pretext.head_hidden",
                  "pretext.head_out", "pretext.queue_size")


def _pretext_source(config):
  """``(manager, step)``: the read-only checkpoints of the run in ``pretext.init_from`` and the step that
  ends its pretext."""
  source = Path(config.pretext.init_from).absolute()
  name = f"pretext.init_from={config.pretext.init_from!r}"
  if not (source / "config.json").exists() or not (source / "checkpoints").is_dir():
    raise ValueError(f"{name}: {source} is not a SCAN workdir (no config.json and checkpoints)")
  theirs = json.loads((source / "config.json").read_text())
  get = lambda c, key: functools.reduce(lambda d, part: d.get(part) if isinstance(d, dict) else None,
                                        key.split("."), c)
  ours = json.loads(config.to_json())
  differ = [key for key in _PRETEXT_SHAPE if get(theirs, key) != get(ours, key)]
  if theirs.get("method") != "scan" or differ:
    raise ValueError(f"{name}: that run's pretext network differs from this one's in {differ or ['method']}")
  manager = ocp.CheckpointManager(source / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  # The pretext's last save is the only one that names mining as the next stage.
  ends = [step for step in manager.all_steps()
          if runs.restore(manager, step, meta_only=True)["meta"]["stage"] == "mine"]
  if not ends:
    raise ValueError(f"{name}: {source} has no finished pretext; run it to the end of its pretext first "
                     "(`jaxclust fit scan --stage pretext`)")
  return manager, ends[0]


def _pretext_template(model, example, mesh, config, n):
  return parallel.put(_pretext_init(config, model, jax.random.key(0), example, _pretext_tx(config, n)), mesh)


def _cluster_init(model, pretext_state, example, config, n, mesh, key):
  """Clustering model with the pretext backbone (params and BatchNorm statistics) and fresh heads."""
  fresh = scan.init(model, jax.random.fold_in(key, 4), example, _scan_tx(config))
  params = {**fresh.params, "backbone": pretext_state.params["backbone"]}
  batch_stats = {**fresh.batch_stats, "backbone": pretext_state.batch_stats["backbone"]}
  state = scan.ClusterState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                            opt_state=_scan_tx(config).init(params))
  return parallel.put(jax.tree.map(np.asarray, state), mesh)


def _cluster_template(model, example, config, n, mesh):
  base = scan.init(model, jax.random.key(0), example, _scan_tx(config))
  return {"scan": parallel.put(base, mesh),
          "selflabel": parallel.put(base.replace(opt_state=_selflabel_tx(config).init(base.params)), mesh)}


