"""What the training drivers (:mod:`jaxclust.train`, :mod:`jaxclust.scan_train`,
:mod:`jaxclust.online_train`) share: restoring checkpoints, refusing a workdir made with another
configuration, logging, atomic writes, the backbone named by a config, and the on-device epoch loop.

Every function here is used by at least two drivers; what only one driver needs stays in it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxclust.methods import pretrain
from jaxclust.metric_writer import ScalarWriter
from jaxclust.models import resnet


def restore(manager, step, template=None, meta_only=False):
  """``{"state", "meta"}`` of checkpoint ``step`` (``{"meta"}`` with ``meta_only``), the state restored
  with the shapes, dtypes and shardings of ``template``; a checkpoint that cannot be restored raises a
  ValueError naming it."""
  try:
    if meta_only:
      return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types; a corrupt run must stop, never be overwritten
    raise ValueError(f"checkpoint {step} in {manager.directory} cannot be restored ({type(e).__name__}: {e}); "
                     "move the workdir away or choose another --workdir") from e


def _flat(tree: dict, prefix: str = "") -> dict:
  """``{"cluster": {"tol": 0.1}}`` -> ``{"cluster.tol": 0.1}``: the ``--set`` names of a JSON config."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


RESUMABLE_CHANGES = ("data_dir", "eval_every")  # see check_same_config
# Settings a method's configs carried without the method ever reading them, since removed: a run whose
# config.json holds them trained as without them, so it resumes.
RETIRED = {"deepcluster": ("freeze_prototypes_steps", "queue_length", "queue_start_epoch")}  # 2026-12-02


def open_workdir(workdir, log):
  """The drivers' start: the absolute ``workdir``, ``log`` (silenced off process 0), and the summary of
  the run already finished there, or None (then the driver trains)."""
  workdir = Path(workdir).absolute()
  log = log if jax.process_index() == 0 else (lambda _: None)
  if (workdir / "summary.json").exists():
    log(f"{workdir} holds a finished run; not training again (use another --workdir for a new run)")
    return workdir, log, json.loads((workdir / "summary.json").read_text())
  return workdir, log, None


def claim_workdir(workdir: Path, config):
  """Creates ``workdir`` (process 0) and writes or checks its config.json. The drivers call it once the
  data and the settings are known valid, so that a refused run leaves no directory behind."""
  lead = jax.process_index() == 0
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
  check_same_config(workdir, config, write=lead)


def check_same_config(workdir: Path, config, write: bool = True):
  """Refuses a ``workdir`` whose ``config.json`` differs from ``config`` (ValueError naming the settings);
  writes it when absent (``write``: only the lead process writes)."""
  path = workdir / "config.json"
  current = json.loads(config.to_json())
  if not path.exists():
    if write:
      write_atomic(path, json.dumps(current, indent=2, sort_keys=True))
    return
  saved, now = _flat(json.loads(path.read_text())), _flat(current)
  # A setting that jaxclust gained after the run started is missing from its config.json. The run
  # trained as that setting's default does (new settings default to the old behaviour), so it may
  # resume with the setting at its default: upgrading the library does not cost a run.
  added = set()
  if set(now) - set(saved):
    from jaxclust import configs
    defaults = _flat(json.loads(configs.get_config(config.method, config.dataset).to_json()))
    added = {k for k in set(now) - set(saved) if k in defaults and now[k] == defaults[k]}
  # Settings that change neither training nor its result may differ: data_dir says where the files
  # are (moved data may resume), eval_every how often the readout is logged.
  absent = "(absent)"
  changed = {k for k in set(saved) | set(now) if (k in saved, saved.get(k)) != (k in now, now.get(k))}
  retired = {k for k in set(saved) - set(now) if k in RETIRED.get(config.method, ())}
  differ = sorted(changed - added - retired - set(RESUMABLE_CHANGES))
  if differ:
    shown = ", ".join(f"{k}: {saved.get(k, absent)!r} -> {now.get(k, absent)!r}" for k in differ)
    raise ValueError(f"{workdir} holds a run with another configuration (differs in {shown}); "
                     "resume it with the same settings or choose another --workdir")
  if changed and write:  # record the settings the run now resumes with
    write_atomic(path, json.dumps(current, indent=2, sort_keys=True))


class Logger:
  """One place for run output: console lines, metrics.jsonl, TensorBoard scalars, a progress bar."""

  def __init__(self, workdir: Path, log, start: float, enabled: bool = True):
    self.workdir, self.log, self.start, self.enabled = workdir, log, start, enabled
    self.writer = ScalarWriter(workdir / "tensorboard") if enabled else None
    self.bar = None

  def stage(self, name: str, total: int, done: int):
    """A progress bar with ETA on a terminal (tqdm hides it when stderr is not a TTY)."""
    if self.bar is not None:
      self.bar.close()
    if not self.enabled:
      return
    self.bar = tqdm.tqdm(total=total, initial=done, desc=name, file=sys.stderr, disable=None, leave=False)

  def record(self, advance: int = 0, **fields):
    if not self.enabled:
      return
    fields["elapsed"] = time.perf_counter() - self.start  # seconds since this fit call started
    with open(self.workdir / "metrics.jsonl", "a") as f:
      f.write(json.dumps(fields) + "\n")
    position = fields.get("epoch", fields.get("step", 0))
    self.writer.write(position, {f"{fields['stage']}/{k}": v for k, v in fields.items()
                                 if isinstance(v, (int, float)) and k not in ("epoch", "step", "of")})
    line = format_fields(fields)
    if self.bar is not None and not self.bar.disable:
      self.bar.write(line)
      self.bar.update(advance)
    else:
      self.log(line)

  def close(self):
    if self.bar is not None:
      self.bar.close()
    if self.writer is not None:
      self.writer.close()


def format_fields(fields: dict) -> str:
  """``name=value ...``, floats to 4 decimals: a log line for a record or a summary."""
  return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def train_seconds(workdir: Path) -> float:
  """Seconds spent in the epochs (or DEC's step intervals) that made the run, summed over every process
  that worked on it: the ``seconds`` of metrics.jsonl's last record of each (stage, epoch or step), so an
  epoch redone after a kill counts once. 0.0 where the workdir has no metrics.jsonl (a non-lead process)."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return 0.0
  last = {}
  for line in path.read_text().splitlines():
    record = json.loads(line)
    if "seconds" in record:
      last[(record["stage"], record.get("epoch"), record.get("step"))] = record["seconds"]
  return float(sum(last.values()))


def write_atomic(path: Path, text: str):
  """Writes ``text`` to ``path`` through a temporary file, so a killed process never leaves half a file."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def finished_run(workdir, images):
  """``(workdir, summary, config, images)`` of a finished image run, the images checked against it."""
  workdir = Path(workdir).absolute()
  if not (workdir / "summary.json").exists():
    raise ValueError(f"{workdir} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  import ml_collections
  summary = json.loads((workdir / "summary.json").read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  images = np.asarray(images, np.float32)
  if images.shape[1:] != tuple(summary["shape"]):
    raise ValueError(f"images have shape {images.shape[1:]} but the run {workdir} was trained on "
                     f"{tuple(summary['shape'])}")
  if not np.all(np.isfinite(images)):
    raise ValueError("images have NaN or Inf values")
  return workdir, summary, config, images


def backbone(config):
  """The configured backbone (``backbone``, ``stem``, ``dtype``, ``cnn_channels``)."""
  kind = config.backbone
  if kind not in resnet.BACKBONES:
    raise ValueError(f"backbone={kind!r} must be one of {', '.join(resnet.BACKBONES)}")
  if config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype={config.dtype!r} must be 'float32' or 'bfloat16'")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
  make = resnet.BACKBONES[kind]
  if kind == "small_cnn":
    return make(channels=tuple(config.cnn_channels), dtype=dtype)
  return make(stem=config.stem, dtype=dtype)


def shard(mesh):
  """Row sharding over the mesh's "data" axis, or None on one device."""
  return NamedSharding(mesh, P("data")) if mesh.size > 1 else None


def gather(x, index, mask, sharding):
  """Rows ``index`` of the on-device ``x``, with ``index`` and ``mask``, sharded by rows when ``sharding``."""
  images = x[index]
  if sharding is not None:
    images, index, mask = jax.lax.with_sharding_constraint((images, index, mask), sharding)
  return images, index, mask


def batch_epoch(step, batch_size: int, n: int, sharding, loop: bool | None = None):
  """One shuffled pass of ``step(state, {"image", "index", "mask"}, rng)`` over the first ``n`` rows of
  the on-device images ``x``: ``epoch(state, x, rng) -> (state, metrics' means)``, state donated."""

  def one(state, x, aux, index, mask, rng):
    images, index, mask = gather(x, index, mask, sharding)
    return step(state, {"image": images, "index": index, "mask": mask}, rng)

  run = epoch_runner(one, batch_size, n, loop)
  return lambda state, x, rng: run(state, x, None, rng)


def epoch_runner(one, batch_size: int, n: int, loop: bool | None = None):
  """``epoch(state, x, aux, rng)``: ``one(state, x, aux, index, mask, rng)`` over shuffled batches of row
  indices covering ``range(n)`` once (the last padded and masked); returns the metrics' means.

  On accelerators the epoch is one compiled ``lax.scan`` (no per-step dispatch). On CPU
  (``loop=None`` decides by the backend) it is a Python loop over one compiled step: XLA's CPU
  backend runs convolution gradients inside a compiled loop 7-10x slower than the same step
  compiled alone (jax 0.10.2, measured 2026-11-22: experiments/RESULTS.md), while the dispatch of
  a step costs microseconds against its hundreds of milliseconds there.
  """
  loop = jax.default_backend() == "cpu" if loop is None else loop

  def batches(rng):
    index, mask = pretrain.epoch_batches(jax.random.fold_in(rng, 0), n, batch_size)
    return index, mask, jax.random.split(jax.random.fold_in(rng, 1), index.shape[0])

  @functools.partial(jax.jit, donate_argnums=0)
  def scanned(state, x, aux, rng):
    state, m = jax.lax.scan(lambda s, b: one(s, x, aux, *b), state, batches(rng))
    return state, jax.tree.map(lambda a: jnp.mean(a, axis=0), m)

  one_jit = jax.jit(one, donate_argnums=0)
  batches_jit = jax.jit(batches)

  def looped(state, x, aux, rng):
    index, mask, keys = batches_jit(rng)
    history = []
    for i in range(index.shape[0]):
      state, m = one_jit(state, x, aux, index[i], mask[i], keys[i])
      history.append(m)
    return state, jax.tree.map(lambda *a: jnp.mean(jnp.stack(a), axis=0), *history)

  return looped if loop else scanned


def chunked(fn, x, n, chunk):
  """``fn`` over the first ``n`` rows of ``x`` in chunks of ``chunk`` rows (bounded activation memory)."""
  chunks = -(-n // chunk)
  index = jnp.minimum(jnp.arange(chunks * chunk), n - 1).reshape(chunks, chunk)
  out = jax.lax.map(lambda i: fn(x[i]), index)
  return jax.tree.map(lambda a: a.reshape(chunks * chunk, *a.shape[2:])[:n], out)


def exemplar_grid(images, labels, confidence, k: int, per_cluster: int = 8, pad: int = 1):
  """One RGB mosaic in [0, 1]: row ``c`` holds cluster ``c``'s ``per_cluster`` most confident images,
  most confident first, each framed by ``pad`` white pixels; empty places stay white."""
  h, w = images.shape[1] + 2 * pad, images.shape[2] + 2 * pad
  grid = np.ones((k * h, per_cluster * w, 3), np.float32)
  for c in range(k):
    members = np.flatnonzero(labels == c)
    top = members[np.argsort(-confidence[members], kind="stable")][:per_cluster]
    for j, i in enumerate(top):  # only the shown images are converted: the dataset may be large
      grid[c * h + pad:(c + 1) * h - pad, j * w + pad:(j + 1) * w - pad] = np.clip(
          np.asarray(images[i], np.float32), 0.0, 1.0)  # one channel broadcasts to three
  return grid


def write_exemplars(path: Path, images, labels, confidence, k: int, per_cluster: int = 8):
  """A PNG of :func:`exemplar_grid`, each row named by its cluster and size. One image, not k x
  ``per_cluster`` subplots: 80 subplots took 2.5 s to lay out, and a run ends by writing this."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  grid = exemplar_grid(images, labels, confidence, k, per_cluster)
  row = grid.shape[0] / k
  fig, ax = plt.subplots(figsize=(per_cluster + 1.5, k), squeeze=True)
  ax.imshow(grid, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks((np.arange(k) + 0.5) * row, [f"cluster {c} ({np.sum(labels == c)})" for c in range(k)], fontsize=6)
  ax.tick_params(length=0)
  for side in ax.spines.values():
    side.set_visible(False)
  fig.savefig(path, dpi=80, bbox_inches="tight")
  plt.close(fig)
