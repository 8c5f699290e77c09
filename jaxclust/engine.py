"""The training engine: one loop that runs every method, and everything a run guarantees.

A method (a module under :mod:`jaxclust.methods`, found through :func:`jaxclust.methods.get`) states
what is particular to it, and nothing else:

- ``prepare(config, data, mesh) -> Prepared``: refuses settings that do not fit the data or the mesh
  (ValueError naming the value) and gives the number of clusters and the host rows it trains on (or,
  for a dataset streamed without being loaded, its :class:`jaxclust.data.stream.Source`);
- ``stages(run) -> (Stage, ...)``: its stages in order, each with its state, epoch and checkpoints;
- ``readout(run, state) -> Readout``: the clusters of the training data at the end;
- ``assign(run, state, x) -> labels``: the clusters of new rows under a finished run.

The engine owns the rest, the same for every method: opening, locking and claiming the workdir
(:mod:`jaxclust.workdir`), the configuration check, placing the data on the mesh, the epoch loop with
progress, metrics.jsonl and TensorBoard, checkpoints keyed by (stage, progress) and resume, the
numerical health of every epoch, the final readout, summary.json, labels, the report and predict.

Every save records the stage and how far it got, so a run killed at any point (SIGKILL included)
continues from its last checkpoint when ``fit`` is called again on its workdir; randomness comes from
``config.seed`` folded with the stage and epoch, so the resumed run ends where an uninterrupted one
would. Every stage's first save (the end of the previous stage) is kept besides the latest
``keep_checkpoints``, so a long first stage is never rotated out by the later ones.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxclust import epochs, methods, parallel, report, reporting, seeding
from jaxclust import metrics as cluster_metrics
from jaxclust import workdir as workdirs
from jaxclust.data import sources
from jaxclust.validation import Diverged, check_settings

DONE = "done"  # the stage of the final save: training has ended, the readout may not have
_STANDARDIZATION = "standardization.npz"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a method.

  Attributes:
    name: its name in the logs and checkpoints.
    epochs: how many epochs (or refresh intervals) it runs at most.
    init: ``(run, previous) -> state``: the stage's first state from the previous stage's last one
      (None for the first stage).
    template: ``run -> state`` with the stage's structure, dtypes and shardings, to restore into.
    epoch: ``(run, state, epoch) -> (state, record)`` trains epoch ``epoch`` (from 0). ``record`` is
      logged (with ``loss`` when it trained); ``record["stop"]`` ends the stage early (DEC's tol).
    end: ``(run, state) -> None`` after its last epoch: files that other runs or stages read.
  """
  name: str
  epochs: int
  init: Callable[[Any, Any], Any]
  template: Callable[[Any], Any]
  epoch: Callable[[Any, Any, int], tuple[Any, dict]] | None = None
  end: Callable[[Any, Any], None] | None = None


class Prepared(NamedTuple):
  """What a method trains on: ``k`` clusters reported; ``rows`` ``[n, ...]`` on the host, placed on the
  devices by the engine; or, streamed (``input="tf.data"`` on a dataset never loaded whole), ``rows``
  None and ``source`` the stream, with its ``n`` and the ``shape`` of what the network sees."""
  k: int
  rows: np.ndarray | None
  source: Any = None
  n: int | None = None
  shape: tuple | None = None


class Readout(NamedTuple):
  """The end of a run: ``labels [n]``; ``confidence [n]`` (ranks the exemplars; None: the report ranks them by
  their distance to the cluster's center in ``embedding``);
  ``files``, arrays saved as ``NAME.npy`` for predict (None: that file removed, so that predict cannot
  read one another readout left); ``summary``, fields added to summary.json; ``images`` and ``y``, the
  images the first labels belong to and the true labels, where the engine holds none (a streamed dataset);
  ``embedding`` ``[m, e]``, the space the method clusters in, of the first ``m`` rows (all of them, or a
  streamed run's sample; None: the report falls back on the input rows)."""
  labels: np.ndarray
  confidence: np.ndarray | None = None
  files: dict = {}
  summary: dict = {}
  images: np.ndarray | None = None
  y: np.ndarray | None = None
  embedding: np.ndarray | None = None


class Assignment(NamedTuple):
  """New rows under a finished run (a method's ``assign``): ``labels [m]``; ``confidence [m]`` in [0, 1], the
  method's own probability of the row's cluster; ``embedding [m, e]``, the rows in the space the method
  clusters in (the Python API's ``transform``)."""
  labels: np.ndarray
  confidence: np.ndarray
  embedding: np.ndarray
  outlier: np.ndarray | None = None  # [m] in [0, 1], from predict: see outlier_scores
  neighbors: np.ndarray | None = None  # [m, K] from predict(neighbors=K): the nearest training rows' indices,
  neighbor_distances: np.ndarray | None = None  # [m, K] their Euclidean distances in the embedding,
  neighbor_labels: np.ndarray | None = None  # [m, K] and their clusters (labels.npy)


@dataclasses.dataclass
class Run:
  """What a method's stages see of a run. ``x`` (the rows on the devices, padded to ``rows``) and
  ``mask`` (False on the padding) are None when predicting and when streamed; a streamed run reads
  ``source`` instead (``input="tf.data"``: :meth:`batches`, :meth:`in_order`)."""
  config: ml_collections.ConfigDict
  workdir: Any  # etils.epath.Path
  mesh: jax.sharding.Mesh
  k: int
  n: int
  shape: tuple
  rows: int
  y: np.ndarray | None = None
  x: jax.Array | None = None
  mask: jax.Array | None = None
  source: Any = None  # the stream of a streamed dataset (jaxclust.data.stream.Source)
  seeds: seeding.Seeds | None = None  # labelled rows (config.seed_labels): jaxclust.seeding
  data_info: dict = dataclasses.field(default_factory=dict)  # how the rows were read (Dataset.info): summary.json
  meta: dict = dataclasses.field(default_factory=dict)
  summary: dict = dataclasses.field(default_factory=dict)  # a finished run's, when predicting
  log: Callable[[str], None] = print
  logger: reporting.Logger | None = None

  @property
  def key(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  @property
  def lead(self) -> bool:
    return jax.process_index() == 0

  def record(self, stage: str, **fields):
    """A line in the logs outside the epochs (mining's neighbour accuracy, an initialization's figures)."""
    if self.logger is not None:
      self.logger.record(stage=stage, **fields)

  def batches(self, batch_size: int, epoch: int, steps: int | None = None):
    """Shuffled batches ``{"x", "index", "mask"}`` of the streamed rows (``input="tf.data"``): one pass, or
    ``steps`` batches; the order depends only on (seed, ``epoch``). Each process reads its own share."""
    from jaxclust.data import stream  # imports TensorFlow: only streamed runs need it
    return stream.row_batches(self.source, batch_size=batch_size, seed=self.config.seed, epoch=epoch,
                              mesh=self.mesh, steps=steps)

  def in_order(self, fn, batch_size: int):
    """``fn(rows)`` (a tuple of ``[B, ...]`` arrays) over every streamed row in dataset order, as numpy
    arrays on every process: the whole-dataset passes (targets, embeddings, predictions) of a streamed
    run, which hold ``[n, small]`` outputs, never the rows."""
    from jaxclust.data import stream
    outputs, _, _ = stream.predict_in_order(fn, self.source, size=None, batch_size=batch_size, mesh=self.mesh)
    return outputs


def fit(config, workdir, *, log=print, mesh=None, stop_after: str | None = None, data=None) -> dict:
  """Runs (or resumes) ``config.method`` on ``config.dataset`` in ``workdir``; returns the summary.

  ``data``: a :class:`jaxclust.data.sources.Dataset` (:func:`jaxclust.data.sources.from_arrays`) to train on
  instead of loading ``config.dataset`` (the Python API's arrays; ``config.dataset`` then only names it).

  Data parallel over ``mesh`` (default: every device of every process, one "data" axis). In a
  multi-host job every process calls ``fit`` with the same arguments; each contributes its own block
  of rows, all run the same steps, and only process 0 writes. With ``stop_after`` the run stops once
  that stage is done (``{"stage": name}`` is returned); running again continues.
  """
  check_settings(config)  # before anything is loaded or written
  method = methods.get(config.method)
  if config.get("input", "device") not in ("device", "tf.data"):
    raise ValueError(f"input={config.input!r} must be 'device' or 'tf.data'")
  lead = jax.process_index() == 0
  log = log if lead else (lambda _: None)
  path = workdirs.path(workdir)
  finished = workdirs.open(path)
  if finished is not None:
    log(f"{path} holds a finished run; not training again (use another --workdir for a new run)")
    return finished
  start = time.perf_counter()
  data = _data(config, data)
  if config.get("standardize") and not hasattr(data, "x"):
    raise ValueError(f"standardize=True needs the rows in memory, but {config.dataset!r} is streamed "
                     "(input='tf.data'): set standardize=False or input='device'")
  stats = _standardization(data.x) if config.get("standardize") else None
  if stats is not None:
    data = data._replace(x=((data.x - stats["mean"]) / stats["std"]).astype(np.float32))
  if config.get("n_clusters") == -1:
    config.n_clusters = _auto_k(config, data, log)
  mesh = mesh or parallel.make_mesh()
  prepared = method.prepare(config, data, mesh)
  y = getattr(data, "y", None)
  if prepared.rows is None:  # streamed: per-row device arrays are padded as the rows would be
    x = mask = None
    n, shape, rows = prepared.n, tuple(prepared.shape), -(-prepared.n // mesh.size) * mesh.size
  else:
    x, mask = parallel.global_rows(np.asarray(prepared.rows, np.float32), mesh)
    n, shape, rows = data.x.shape[0], tuple(data.x.shape[1:]), x.shape[0]
  seeds = None
  if config.get("seed_labels"):
    seeds = seeding.resolve(*seeding.read(config.seed_labels), n=n, k=prepared.k,
                            what=f"seed labels file {config.seed_labels}")
  run = Run(config, path, mesh, prepared.k, n, shape, rows, y=y, x=x, mask=mask,
            source=prepared.source, seeds=seeds, log=log, data_info=dict(data.info))
  stages = method.stages(run)
  if stop_after is not None and stop_after not in [stage.name for stage in stages]:
    raise ValueError(f"--stage {stop_after!r} must be one of {config.method}'s stages: "
                     f"{', '.join(stage.name for stage in stages)}")
  with workdirs.Lock(path, lead=lead, log=log):
    workdirs.claim(path, config, lead=lead)  # only now, with data and settings known valid
    if stats is not None and lead:
      workdirs.save_npz(path / _STANDARDIZATION, **stats)
    if seeds is not None and lead and not (path / seeding.FILE).exists():  # the run's own copy
      seeding.write(path / seeding.FILE, seeds.index, [seeds.names[c] for c in seeds.cluster])
    run.logger = reporting.Logger(path, log, start, workdirs.append_line, enabled=lead)
    log(f"{config.method} on {config.dataset}: n={run.n} rows {run.shape} k={run.k} on {mesh.size} device(s), "
        f"workdir {path}")
    log(f"data: {sources.reading_line(data.info)}")
    try:
      state, stopped = _train(stages, run, stop_after)
    finally:  # a run that diverges or fails still closes its TensorBoard writer and its thread
      run.logger.close()
    if stopped:
      log(f"stage {stop_after} done; run again without --stage to continue")
      return {"stage": stop_after}
    summary = _finish(method, run, state, getattr(data, "x", None), start)
  line = "final: " + reporting.format_fields(summary)
  if summary["collapsed"]:
    line += (" WARNING: collapsed (cluster-size entropy below 0.1 or fewer than half of the clusters used); "
             "try a lower learning rate or another seed")
  log(line)
  return summary


def _data(config, data):
  """The rows ``config`` names, or ``data``, with the labels of ``config.labels`` when set: a
  :class:`jaxclust.data.sources.Dataset`, or streamed (``input="tf.data"``) from a tfds dataset or an image
  folder, a :class:`jaxclust.data.stream.Source` that never holds them whole."""
  reading = {"image_size": config.get("image_size", 0), "skip_bad_files": config.get("skip_bad_files", False)}
  if data is None and config.get("input", "device") == "tf.data" and (
      str(config.dataset).startswith("tfds:") or sources.is_folder(config.dataset)):
    from jaxclust.data import stream
    data = stream.open_source(config.dataset, data_dir=config.data_dir or None, **reading)
  elif data is None:
    data = sources.load(config.dataset, data_dir=config.data_dir or None, **reading)
  if config.get("labels"):
    return sources.with_labels(data, config.labels, what=f"dataset {config.dataset}")
  return data


def _auto_k(config, data, log) -> int:
  """``n_clusters=auto``: k by :func:`jaxclust.choose_k` on the input rows (at most 10,000 of them), k = 2..30."""
  from jaxclust import k_choice
  if not hasattr(data, "x"):
    raise ValueError(f"n_clusters=auto chooses k on the rows in memory, but {config.dataset!r} is streamed "
                     "(input='tf.data'): run `jaxclust choose-k` and set n_clusters")
  n = len(data.x)
  if n < 4:
    raise ValueError(f"n_clusters=auto needs at least 4 rows, got {n}")
  choice = k_choice.choose_k(data.x, range(2, min(30, n - 1) + 1), seed=config.seed)
  log(f"n_clusters=auto: k={choice.k} on the input rows ({choice.rows} of them; {k_choice.RULE})")
  return choice.k


def _train(stages, run: Run, stop_after):
  """The ``stages`` from the latest save to the end; ``(state, stopped at stop_after)``."""
  names = [stage.name for stage in stages]
  policy = _StageStarts(set())
  manager = ocp.CheckpointManager(run.workdir / "checkpoints", options=ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
          [ocp.checkpoint_managers.LatestN(run.config.keep_checkpoints), policy])))
  saves = manager.latest_step() or 0
  for step in manager.all_steps():
    if step != saves and not readable(manager, step):
      # Orbax deletes old checkpoints file by file in the background: a run killed meanwhile leaves one half
      # deleted (seen in CI). Never the latest (saves are renamed into place whole), never a stage start (kept).
      run.log(f"checkpoint {step} is incomplete (a deletion cut short by the end of a run); ignored")
    elif _meta(manager, step, run)["progress"] == 0:
      policy.steps.add(step)
  run.meta = _meta(manager, saves, run) if saves else {"stage": names[0], "progress": 0, "rows": run.rows}
  if run.meta.get("rows", run.rows) != run.rows:
    raise ValueError(f"{run.workdir} was trained with the data padded to {run.meta['rows']} rows, for another "
                     f"number of devices; this mesh has {run.mesh.size} devices ({run.rows} rows): resume it on "
                     "as many devices")
  first = len(stages) if run.meta["stage"] == DONE else names.index(run.meta["stage"])
  if stop_after is not None and names.index(stop_after) < first:  # already past it: nothing later is trained
    return None, True
  if saves:
    state = _restore(manager, saves, stages[min(first, len(stages) - 1)].template(run), run)
    at = run.meta["stage"] if first < len(stages) else "the end of training"
    run.log(f"resuming from checkpoint {saves}: {at}, {run.meta['progress']} of "
            f"{stages[min(first, len(stages) - 1)].epochs} epochs done")
  else:
    state = stages[0].init(run, None)

  def save(state, stage, progress, **extra):
    nonlocal saves
    saves += 1
    if progress == 0:
      policy.steps.add(saves)
    run.meta = {"stage": stage, "progress": progress, "rows": run.rows, **extra}
    manager.save(saves, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(run.meta)))

  def healthy(state, stage, where, loss=None):
    if (loss is None or math.isfinite(loss)) and bool(epochs.all_finite(state)):
      return
    manager.wait_until_finished()
    last = manager.latest_step()
    kept = (f"the last good checkpoint is {run.workdir / 'checkpoints' / str(last)} (kept)" if last
            else "no checkpoint was saved")
    what = "non-finite parameters" if loss is None or math.isfinite(loss) else f"loss {loss}"
    raise Diverged(f"stage {stage} diverged at {where}: {what}; {kept}; usual causes: a learning rate too high, "
                   "or data on a large scale (try standardize=True)")

  for index in range(first, len(stages)):
    stage = stages[index]
    done = run.meta["progress"] if index == first else 0
    if index > first or not saves:
      if index > first:
        state = stage.init(run, state)
      healthy(state, stage.name, "its start")
      if index > first:
        save(state, stage.name, 0)  # a stage boundary is always saved
    run.logger.stage(stage.name, stage.epochs, done)
    every = run.config.get("checkpoint_every", 1)
    for epoch in range(done, stage.epochs):
      tick = time.perf_counter()
      state, record = stage.epoch(run, state, epoch)
      loss = record.get("loss")
      healthy(state, stage.name, f"epoch {epoch + 1}", None if loss is None else float(loss))
      position = {} if "step" in record else {"epoch": epoch + 1, "of": stage.epochs}
      run.logger.record(1, stage=stage.name, **position, **record, seconds=time.perf_counter() - tick)
      if "stop" in record:
        break
      if (epoch + 1) % every == 0 and epoch + 1 < stage.epochs:
        save(state, stage.name, epoch + 1)
    if stage.end is not None:
      stage.end(run, state)
    if stop_after == stage.name:
      if run.meta != {"stage": stage.name, "progress": stage.epochs, "rows": run.rows}:
        save(state, stage.name, stage.epochs)  # the stage's end: a rerun goes on from here
      manager.wait_until_finished()
      return state, True
  if run.meta["stage"] != DONE:
    save(state, DONE, 0)  # the final state, for predict
  manager.wait_until_finished()
  return state, False


def _finish(method, run: Run, state, images, start) -> dict:
  """The readout of a trained run: labels, the method's files, the label-free scores, the report's data,
  summary.json, then report.html (written by the lead process); returns the summary."""
  out = method.readout(run, state)
  labels = np.asarray(out.labels)
  y = run.y if out.y is None else out.y
  images = images if out.images is None else out.images
  summary = {"method": run.config.method, "dataset": run.config.dataset, "n": run.n, "d": math.prod(run.shape),
             "shape": list(run.shape), "k": run.k, "seed": run.config.seed, "devices": run.mesh.size,
             "processes": jax.process_count(), **run.data_info, **out.summary, "wall_seconds": time.perf_counter() - start,
             "train_seconds": workdirs.train_seconds(run.workdir)}
  seeded = None
  if run.seeds is not None:  # clusters numbered and named after the labelled classes
    labels, order = seeding.name_clusters(labels, run.seeds, run.k)
    seeded = {"order": order.tolist(), "names": list(run.seeds.names)}
    summary.update(seed_labels=len(run.seeds.index), seed_classes=sum(v is not None for v in run.seeds.names))
  if y is not None:
    summary.update(cluster_metrics.evaluate(y, labels))
    if run.seeds is not None:  # the scores of the rows nobody labelled, and how often a row's cluster is its class
      free = np.ones(len(labels), bool)
      free[run.seeds.index] = False
      summary.update({f"unlabelled_{name}": value for name, value in cluster_metrics.evaluate(
          np.asarray(y)[free], labels[free]).items()})
      if all(name is None or name == str(c) for c, name in enumerate(run.seeds.names)):
        summary["named_accuracy"] = float(np.mean(labels[free] == np.asarray(y)[free]))
  sizes = np.bincount(labels, minlength=run.k)
  summary["size_entropy"] = float(cluster_metrics.cluster_balance(jnp.asarray(labels), k=run.k)["normalized_entropy"])
  summary["collapsed"] = bool(summary["size_entropy"] < 0.1 or np.sum(sizes > 0) < run.k / 2)
  tick = time.perf_counter()
  space, points = report.space(out.embedding, images)
  if points is not None:  # silhouette, Davies-Bouldin, Calinski-Harabasz where the clusters live
    summary["quality_space"] = space
    summary.update(cluster_metrics.label_free(points, labels[:len(points)], k=run.k,
                                              rng=jax.random.fold_in(run.key, 7)))
  if run.lead:
    workdirs.save_npy(run.workdir / "labels.npy", labels)
    if seeded is not None:
      workdirs.write_json(run.workdir / seeding.SAVED, seeded)
    if y is not None:  # eval reads them instead of loading the dataset again
      workdirs.save_npy(run.workdir / "true_labels.npy", np.asarray(y))
    for name, array in out.files.items():
      if array is None:  # a file this readout does not make: another run's must never reach predict
        (run.workdir / f"{name}.npy").unlink(missing_ok=True)
      else:
        workdirs.save_npy(run.workdir / f"{name}.npy", array)
    drawn = run.config.get("report", True)
    if drawn:
      _reporting_part(run, "report data", lambda: report.save(  # exemplars.png of image data among it
          run.workdir, labels=labels, k=run.k, seed=run.config.seed, y=y, rows=images, embedding=out.embedding,
          confidence=out.confidence))
    if out.embedding is not None:  # what predict's outlier scores compare new rows with
      workdirs.save_npz(run.workdir / OUTLIERS, **outlier_reference(out.embedding, labels, run.k))
    workdirs.write_json(run.workdir / "summary.json", summary)
    page = _reporting_part(run, "report", lambda: report.render(run.workdir)) if drawn else None
    if page is not None:
      run.log(f"report: {page} ({time.perf_counter() - tick:.1f} s)")
  return summary


def _reporting_part(run: Run, what: str, fn):
  """``fn()``, a part of the report, or None when it fails: a figure that cannot be drawn must not fail a
  trained run. The traceback goes to error.log; ``jaxclust report`` draws the page again."""
  try:
    return fn()
  except Exception as e:  # pylint: disable=broad-except
    workdirs.append_line(run.workdir / "error.log", "".join(traceback.format_exception(e)))
    run.log(f"WARNING: the {what} could not be written ({type(e).__name__}: {e}); details in "
            f"{run.workdir / 'error.log'}; try `jaxclust report --workdir {run.workdir}`")
    return None


def predict(workdir, x, *, neighbors: int = 0, training=None, version: int | None = None) -> Assignment:
  """New rows ``x`` (``[m, ...]``, shaped and scaled as the training data) under a finished run: their
  clusters, confidence, embedding and outlier score (:func:`outlier_scores`; None for a run finished before
  fit saved its reference). ``neighbors=K`` adds each row's K nearest training rows in the method's embedding
  (exact, Euclidean: :func:`jaxclust.knn`) with their clusters; the training rows are ``training`` or, by
  default, the run's dataset read again, and are embedded anew for each call. ``version``: which update
  (:mod:`jaxclust.updating`) to predict with; None: the latest, 0: the run as trained."""
  method, run, state = restore(workdir, version=version)
  out = _assign(method, run, state, x, "input")
  out = out._replace(labels=seeded_order(run.workdir, run.k)[out.labels])  # a seeded run's numbers
  reference = run.workdir / OUTLIERS
  if reference.exists():
    out = out._replace(outlier=outlier_scores(out.embedding, workdirs.load_npz(reference)))
  if neighbors:
    out = _neighbors(method, run, state, out, neighbors, training)
  return out


def _assign(method, run, state, x, what: str) -> Assignment:
  x = np.asarray(x, np.float32)
  shape = run.shape
  if x.ndim < 2 or math.prod(x.shape[1:]) != math.prod(shape):
    raise ValueError(f"{what} has rows of shape {tuple(x.shape[1:])} but the run {run.workdir} was trained on {shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what} has NaN or Inf values")
  x = x.reshape(len(x), *shape)
  if run.config.get("standardize"):  # the training data's statistics, saved by fit
    stats = workdirs.load_npz(run.workdir / _STANDARDIZATION)
    x = ((x - stats["mean"]) / stats["std"]).astype(np.float32)
  return method.assign(run, state, x)


def seeded_order(workdir, k: int) -> np.ndarray:
  """``[k]``: the number a seeded run gave each of its method's clusters (:mod:`jaxclust.seeding`); 0..k-1
  for a run fitted without seed labels."""
  saved = workdirs.path(workdir) / seeding.SAVED
  return np.asarray(workdirs.read_json(saved)["order"]) if saved.exists() else np.arange(k)


def cluster_names(workdir) -> list | None:
  """The name of each cluster of the finished run in ``workdir`` (None for a cluster no seed label named), or
  None for a run fitted without seed labels."""
  saved = workdirs.path(workdir) / seeding.SAVED
  return workdirs.read_json(saved)["names"] if saved.exists() else None


def training_rows(workdir, training=None) -> np.ndarray:
  """The rows the finished run in ``workdir`` was trained on: ``training`` checked against the run, or its
  dataset read again (in memory, whatever the run's ``input``)."""
  path = workdirs.path(workdir)
  config = ml_collections.ConfigDict(workdirs.read_json(path / "config.json"))
  if training is None:
    if config.dataset == "array":
      raise ValueError(f"the run {path} was fitted on arrays in memory: pass its training rows (training=X)")
    training = _data(ml_collections.ConfigDict({**config.to_dict(), "input": "device"}), None).x
  n = len(workdirs.load_npy(path / "labels.npy"))
  if len(training) != n:
    raise ValueError(f"the training rows number {len(training)}, but the run {path} clustered {n}")
  return training


def _neighbors(method, run, state, out: Assignment, k: int, training) -> Assignment:
  from jaxclust.kernels.knn import knn
  training = training_rows(run.workdir, training)
  labels = workdirs.load_npy(run.workdir / "labels.npy")
  k = int(k)
  if not 1 <= k <= len(labels):
    raise ValueError(f"neighbors={k} must be in [1, {len(labels)}] (the training rows)")
  reference = _assign(method, run, state, training, "the training data").embedding
  found = knn(np.asarray(reference, np.float32).reshape(len(reference), -1), k,
              query=np.asarray(out.embedding, np.float32).reshape(len(out.embedding), -1), metric="euclidean")
  index = np.asarray(found.indices)
  return out._replace(neighbors=index, neighbor_distances=np.asarray(found.values), neighbor_labels=labels[index])


def restore(workdir, version: int | None = 0):
  """``(method module, Run, final state)`` of the finished run in ``workdir``, on one device; with the centers
  of update ``version`` (None: the latest) for a method whose clusters are centers (``with_centers``)."""
  path = workdirs.path(workdir)
  summary = workdirs.open(path)
  if summary is None:
    raise ValueError(f"{path} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  from jaxclust import updating
  done = updating.versions(path)
  if version is None:
    version = done[-1] if done else 0
  if version and version not in done:
    raise ValueError(f"version={version}: {path} has {'updates ' + ', '.join(map(str, done)) if done else 'no updates'}")
  tuned = updating.finetuned(path, version)
  if tuned is not None:  # an update that fine-tuned: its own run holds the model
    return restore(tuned, version=0)
  config = ml_collections.ConfigDict(workdirs.read_json(path / "config.json"))
  method = methods.get(config.method)
  absl = logging.getLogger("absl")  # orbax warns that a read-only manager's folder is read-only
  level, _ = absl.level, absl.setLevel(logging.ERROR)
  try:
    manager = ocp.CheckpointManager(path / "checkpoints", options=ocp.CheckpointManagerOptions(
        read_only=True, save_interval_steps=0, create=False))
    step = manager.latest_step()
    run = Run(config, path, parallel.make_mesh(1), summary["k"], summary["n"], tuple(summary["shape"]), 0,
              summary=summary, log=lambda _: None)
    run.meta = _meta(manager, step, run)
    run.rows = run.meta["rows"]
    state = _restore(manager, step, method.stages(run)[-1].template(run), run)
    manager.close()
  finally:
    absl.setLevel(level)
  centers = updating.version_folder(path, version) / "centers.npy"
  if version and hasattr(method, "with_centers") and centers.exists():
    state = method.with_centers(run, state, workdirs.load_npy(centers))
  return method, run, state


OUTLIERS = "outliers.npz"  # the training rows' distances to their nearest cluster mean, for predict
_LEVELS = np.linspace(0.0, 1.0, 1001)


def outlier_reference(embedding, labels, k: int) -> dict:
  """The cluster means of the training ``embedding`` and the quantiles of each row's distance to the nearest
  one (what :func:`outlier_scores` compares new rows with)."""
  z = np.asarray(embedding, np.float64).reshape(len(embedding), -1)
  labels = np.asarray(labels)[:len(z)]
  means = np.stack([z[labels == c].mean(0) if np.any(labels == c) else np.full(z.shape[1], np.inf)
                    for c in range(k)])
  return {"means": means.astype(np.float32), "quantiles": np.quantile(_nearest(z, means), _LEVELS).astype(np.float32)}


def outlier_scores(embedding, reference: dict) -> np.ndarray:
  """Per row, the share of training rows nearer to their nearest cluster mean than this row is to its own
  (0: as central as the most central; above 0.99: farther out than 99% of the training data)."""
  d = _nearest(np.asarray(embedding, np.float64).reshape(len(embedding), -1), np.asarray(reference["means"], np.float64))
  return np.interp(d, reference["quantiles"], _LEVELS, left=0.0, right=1.0).astype(np.float32)


def _nearest(z, means):
  finite = np.all(np.isfinite(means), axis=1)  # an empty cluster has no mean
  d2 = (z * z).sum(1, keepdims=True) - 2 * z @ means[finite].T + (means[finite] ** 2).sum(1)
  return np.sqrt(np.maximum(d2.min(1), 0.0))


def readable(manager, step) -> bool:
  """Whether checkpoint ``step``'s meta can be read (a step orbax was deleting when a run was killed cannot)."""
  try:
    manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return True
  except Exception:  # orbax raises many types
    return False


def _meta(manager, step, run) -> dict:
  return _restore(manager, step, None, run)


def _restore(manager, step, template, run):
  """Checkpoint ``step``'s state shaped and placed as ``template`` (its meta when ``template`` is None). A
  checkpoint that cannot be restored stops the run with one line; the details go to error.log."""
  try:
    if template is None:
      return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  except Exception as e:  # orbax raises many types; a corrupt run must stop, never be overwritten
    folder = run.workdir / "checkpoints" / str(step)
    if run.lead:
      workdirs.append_line(run.workdir / "error.log", "".join(traceback.format_exception(e)))
    earlier = [s for s in manager.all_steps() if s < step]
    then = (f"remove that folder to resume from checkpoint {max(earlier)}" if earlier
            else "remove the workdir to start again")
    raise ValueError(f"checkpoint {folder} cannot be restored ({type(e).__name__}); {then} "
                     f"(details in {run.workdir / 'error.log'})") from e


@dataclasses.dataclass
class _StageStarts(ocp.checkpoint_managers.PreservationPolicy):
  """Keeps the checkpoints in ``steps``: every stage's first save, which is the end of the previous one."""
  steps: set

  def should_preserve(self, checkpoints, *, context):
    return [c.step in self.steps for c in checkpoints]


def _standardization(x) -> dict:
  """Per-feature mean and standard deviation of the rows of ``x``; a feature with zero variance is an error."""
  rows = x.reshape(len(x), -1)
  mean, std = rows.mean(axis=0, dtype=np.float64), rows.std(axis=0, dtype=np.float64)
  constant = np.flatnonzero(std <= 1e-12 * np.maximum(np.abs(mean), 1.0))
  if constant.size:
    shown = ", ".join(map(str, constant[:10])) + (", ..." if constant.size > 10 else "")
    raise ValueError(f"standardize=True, but {constant.size} feature(s) have zero variance (columns {shown}): "
                     "drop them from the data or set standardize=False")
  return {"mean": mean.astype(np.float32).reshape(x.shape[1:]), "std": std.astype(np.float32).reshape(x.shape[1:])}


def warn_collapse(labels, k: int, what: str = "clusters") -> dict:
  """Size entropy and empty count of ``k`` clusters, with a warning when they collapse (a method's epochs
  log it)."""
  sizes = np.bincount(labels, minlength=k)
  p = sizes[sizes > 0] / sizes.sum()
  out = {"size_entropy": float(-np.sum(p * np.log(p)) / math.log(k)), "empty_clusters": int(np.sum(sizes == 0))}
  if out["size_entropy"] < 0.5 or out["empty_clusters"]:
    warnings.warn(f"{what} are collapsing: normalized size entropy {out['size_entropy']:.3f}, "
                  f"{out['empty_clusters']} of {k} empty")
  return out
