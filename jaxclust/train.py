"""Training driver for the autoencoder methods: stages, checkpoints, resume. The I/O lives here.

A run is ``pretrain -> init -> cluster``. Every save records the stage and how far it got, so a
run killed at any point (even with SIGKILL) continues from its last checkpoint when ``fit`` is
called again on the same workdir. All randomness comes from ``config.seed`` folded with the stage
and the epoch or step, so a resumed run ends exactly where an uninterrupted one would. A finished
workdir (``summary.json``) is never trained over; a workdir made with another configuration, or
whose checkpoint cannot be restored, is refused with an error instead of being overwritten.
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
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

from jaxclust import metrics as cluster_metrics
from jaxclust.data import sources
from jaxclust.kernels.gmm import gmm_diag
from jaxclust.kernels.kmeans import kmeans
from jaxclust.metric_writer import ScalarWriter
from jaxclust.methods import dec, pretrain, vade
from jaxclust.models.autoencoder import MLPAutoencoder
from jaxclust.validation import check_count

_PRETRAIN, _CLUSTER, _DONE = "pretrain", "cluster", "done"
_PRETRAINED = "pretrained_autoencoder"


def fit(config, workdir, *, log=print) -> dict:
  """Runs (or resumes) ``config.method`` on ``config.dataset`` in ``workdir``; returns the summary."""
  workdir = Path(workdir).absolute()
  summary_path = workdir / "summary.json"
  if summary_path.exists():
    log(f"{workdir} holds a finished run; not training again (use another --workdir for a new run)")
    return json.loads(summary_path.read_text())
  start = time.perf_counter()
  data = sources.load(config.dataset, data_dir=config.data_dir or None)
  x = jnp.asarray(data.x.reshape(data.x.shape[0], -1))
  n, d = x.shape
  k = config.n_clusters or (len(np.unique(data.y)) if data.y is not None else 0)
  if k == 0:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=1, high=n, high_name="n_samples")
  if config.pretrain.init_from and not (Path(config.pretrain.init_from).absolute() / _PRETRAINED).exists():
    raise ValueError(f"pretrain.init_from={config.pretrain.init_from!r}: no {_PRETRAINED} in it "
                     "(it is written when a run finishes pretraining)")
  # Only now, with data and k known to be valid, does the workdir get created and claimed.
  workdir.mkdir(parents=True, exist_ok=True)
  _check_same_config(workdir, config)
  key = jax.random.key(config.seed)
  log(f"{config.method} on {config.dataset}: n={n} d={d} k={k}, workdir {workdir}")

  logger = _Logger(workdir, log, start)
  manager = ocp.CheckpointManager(workdir / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints))
  saves = manager.latest_step() or 0
  meta = _restore(manager, saves, meta_only=True)["meta"] if saves else {"stage": _PRETRAIN, "progress": 0}

  def save(state, stage, progress):
    nonlocal saves
    saves += 1
    manager.save(saves, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave({"stage": stage, "progress": progress})))

  ae = MLPAutoencoder(input_dim=d, hidden=tuple(config.hidden), latent=config.latent)
  tx = optax.adam(config.pretrain.learning_rate)
  state = pretrain.init(ae, jax.random.fold_in(key, 0), x[:2], tx)
  if meta["stage"] == _PRETRAIN:
    if saves:
      state = _restore(manager, saves, state)["state"]
    if config.pretrain.init_from:  # another run's pretrained autoencoder: skip pretraining
      state = state.replace(params=load_pretrained(config.pretrain.init_from, state.params))
      log(f"autoencoder from {config.pretrain.init_from}; pretraining skipped")
    epochs = 0 if config.pretrain.init_from else config.pretrain.epochs
    logger.stage("pretrain", epochs, meta["progress"])
    for epoch in range(meta["progress"], epochs):
      tick = time.perf_counter()
      state, m = pretrain.train_epoch(state, x, jax.random.fold_in(key, 1_000_000 + epoch), model=ae, tx=tx,
                                      batch_size=config.pretrain.batch_size, loss=config.pretrain.loss)
      loss = float(m["loss"])  # blocks until the epoch has run
      seconds = time.perf_counter() - tick
      logger.record(1, stage=_PRETRAIN, epoch=epoch + 1, of=config.pretrain.epochs, loss=loss,
                    seconds=seconds, eta_seconds=seconds * (config.pretrain.epochs - epoch - 1))
      if (epoch + 1) % config.checkpoint_every == 0 and epoch + 1 < config.pretrain.epochs:
        save(state, _PRETRAIN, epoch + 1)
    # Kept apart from the rotating checkpoints so other runs can start from it (pretrain.init_from).
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(workdir / _PRETRAINED, state.params, force=True)
    checkpointer.wait_until_finished()
    meta = {"stage": _CLUSTER, "progress": 0}
    cluster_state = _initialize(config, ae, state.params, x, k, key, log)
    save(cluster_state, _CLUSTER, 0)  # the stage boundary is always saved
  else:
    cluster_state = _restore(manager, saves, _cluster_template(config, ae, state.params, n, k, x))["state"]

  if meta["stage"] == _DONE:  # killed after the final save, before the summary was written
    labels = _predict(config, ae, cluster_state.params, x)
  else:
    run = _run_dec if config.method in ("dec", "idec") else _run_vade
    cluster_state, labels = run(config, ae, cluster_state, x, data.y, key, meta["progress"], save, logger)
    save(cluster_state, _DONE, 0)  # the final parameters, for predict
  manager.wait_until_finished()
  logger.close()

  summary = {"method": config.method, "dataset": config.dataset, "n": n, "d": d, "k": k, "seed": config.seed,
             "wall_seconds": time.perf_counter() - start}
  if data.y is not None:
    summary.update(cluster_metrics.evaluate(data.y, labels))
  balance = cluster_metrics.cluster_balance(jnp.asarray(labels), k=k)
  summary["size_entropy"] = float(balance["normalized_entropy"])
  np.save(workdir / "labels.npy", labels)
  _write_atomic(summary_path, json.dumps(summary, indent=2))
  log("final: " + " ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in summary.items()))
  return summary


def load_pretrained(source, template):
  """The pretrained autoencoder parameters saved by a run in workdir ``source``.

  ``template`` (parameters of the model to fill) fixes the expected shapes: an autoencoder of
  another architecture, or a run whose pretraining has not finished, is an error.
  """
  path = Path(source).absolute() / _PRETRAINED
  if not path.exists():
    raise ValueError(f"pretrain.init_from={str(source)!r}: no {_PRETRAINED} in it "
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


def _predict(config, ae, params, x):
  if config.method == "vade":
    model, _ = _vade_model(config, x.shape[1])
    return np.asarray(vade.predict(model, params, x))
  return np.asarray(dec.predict(ae, params, x))


def predict(workdir, x) -> np.ndarray:
  """Clusters of new rows ``x`` ([m, ...] with the training data's features) under a finished run."""
  workdir = Path(workdir).absolute()
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    raise ValueError(f"{workdir} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  summary = json.loads(summary_path.read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  x = jnp.asarray(np.asarray(x, np.float32).reshape(len(x), -1))
  if x.shape[1] != summary["d"]:
    raise ValueError(f"input has {x.shape[1]} features but the run {workdir} was trained on {summary['d']}")
  if not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError("input has NaN or Inf values")
  ae = MLPAutoencoder(input_dim=summary["d"], hidden=tuple(config.hidden), latent=config.latent)
  template = _cluster_template(config, ae, pretrain.init(ae, jax.random.key(0), x[:1], optax.adam(1.0)).params,
                               summary["n"], summary["k"], x)
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  state = _restore(manager, manager.latest_step(), template)["state"]
  return _predict(config, ae, state.params, x)


def _initialize(config, ae, ae_params, x, k, key, log):
  """Cluster-stage state from the pretrained embeddings: k-means centers or a fitted GMM."""
  z = ae.apply({"params": ae_params}, x, method=ae.encode)
  if config.method == "vade":
    fit = gmm_diag(z, k, rng=jax.random.fold_in(key, 2))
    log(f"GMM on embeddings: mean log-likelihood {float(fit.log_likelihood):.4f} after {int(fit.n_iter)} EM steps")
    model, tx = _vade_model(config, x.shape[1], x.shape[0])
    params = model.init(jax.random.fold_in(key, 3), x[:2], jnp.zeros((2, config.latent)))["params"]
    return vade.init({**params, **ae_params}, vade.mixture_params(fit.weights, fit.means, fit.variances), tx)
  out = kmeans(z, k, rng=jax.random.fold_in(key, 2), n_init=config.cluster.kmeans_n_init)
  log(f"k-means on embeddings: inertia {float(out.inertia):.4f}")
  state = dec.init(ae_params, out.centers, x.shape[0], _dec_tx(config), keep_decoder=config.cluster.gamma > 0)
  return state.replace(labels=out.labels.astype(jnp.int32))


def _cluster_template(config, ae, ae_params, n, k, x):
  """A state with the cluster stage's structure, to restore into."""
  if config.method == "vade":
    model, tx = _vade_model(config, x.shape[1], n)
    params = model.init(jax.random.key(0), x[:2], jnp.zeros((2, config.latent)))["params"]
    prior = vade.mixture_params(jnp.ones(k), jnp.zeros((k, config.latent)), jnp.ones((k, config.latent)))
    return vade.init(params, prior, tx)
  return dec.init(ae_params, jnp.zeros((k, config.latent)), n, _dec_tx(config), keep_decoder=config.cluster.gamma > 0)


def _dec_tx(config):
  return dec.sgd(config.cluster.learning_rate, config.cluster.momentum)


@functools.lru_cache(maxsize=None)
def _vade_model_cached(input_dim, hidden, latent, n, batch_size, learning_rate, decay, decay_epochs, min_learning_rate):
  # VaDE's official code multiplies the learning rate by `decay` every `decay_epochs` epochs,
  # never going below `min_learning_rate`.
  steps_per_epoch = -(-n // batch_size)
  schedule = optax.exponential_decay(learning_rate, transition_steps=decay_epochs * steps_per_epoch,
                                     decay_rate=decay, staircase=True, end_value=min_learning_rate)
  return vade.VaDEModel(input_dim=input_dim, hidden=hidden, latent=latent), optax.adam(schedule)


def _vade_model(config, input_dim, n=1):
  v = config.vade
  return _vade_model_cached(input_dim, tuple(config.hidden), config.latent, n, v.batch_size, v.learning_rate,
                            v.lr_decay, v.lr_decay_epochs, v.min_learning_rate)


def _run_dec(config, ae, state, x, y, key, done_steps, save, logger):
  c = config.cluster
  tx = _dec_tx(config)
  refresh = jax.jit(functools.partial(dec.refresh_target, model=ae))
  interval = _dec_interval(ae, tx, c.gamma, c.update_interval, c.batch_size)
  steps = done_steps
  logger.stage("cluster", c.max_steps, done_steps)
  while True:
    state, changed = refresh(state, x)
    record = {"stage": _CLUSTER, "step": steps, "changed": float(changed)}
    if y is not None:
      record.update(cluster_metrics.evaluate(y, np.asarray(state.labels)))
    if steps >= c.max_steps or (steps > 0 and float(changed) < c.tol):
      logger.record(**record, stop="tol" if float(changed) < c.tol else "max_steps")
      return state, np.asarray(state.labels)
    tick = time.perf_counter()
    state, m = interval(state, x, jax.random.fold_in(key, 2_000_000 + steps))
    steps += c.update_interval
    logger.record(c.update_interval, **record, loss=float(jnp.mean(m["loss"])), seconds=time.perf_counter() - tick)
    if (steps // c.update_interval) % config.checkpoint_every == 0:
      save(state, _CLUSTER, steps)


@functools.lru_cache(maxsize=None)
def _dec_interval(ae, tx, gamma, update_interval, batch_size):
  """``update_interval`` DEC/IDEC steps on random batches, as one compiled scan."""
  step = functools.partial(dec.train_step, model=ae, tx=tx, gamma=gamma)

  @functools.partial(jax.jit, donate_argnums=0)
  def interval(state, x, rng):
    # Batches are consecutive slices of shuffled passes over the data (one permutation per pass):
    # drawing each batch with jax.random.choice(replace=False) sorts all n rows per step, which
    # made an MNIST interval 3x slower.
    n = x.shape[0]
    needed = update_interval * batch_size
    passes = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(rng, -(-needed // n)))
    index = passes.reshape(-1)[:needed].reshape(update_interval, batch_size)
    return jax.lax.scan(lambda s, i: step(s, {"x": x[i], "index": i}, None), state, index)

  return interval


def _run_vade(config, ae, state, x, y, key, done_epochs, save, logger):
  model, tx = _vade_model(config, x.shape[1], x.shape[0])
  epoch_fn = _vade_epoch(model, tx, config.vade.batch_size)
  logger.stage("cluster", config.vade.epochs, done_epochs)
  for epoch in range(done_epochs, config.vade.epochs):
    tick = time.perf_counter()
    state, m = epoch_fn(state, x, jax.random.fold_in(key, 3_000_000 + epoch))
    record = {"stage": _CLUSTER, "epoch": epoch + 1, "of": config.vade.epochs, "loss": float(m["loss"]),
              "seconds": time.perf_counter() - tick}
    if y is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == config.vade.epochs):
      record.update(cluster_metrics.evaluate(y, np.asarray(vade.predict(model, state.params, x))))
    logger.record(1, **record)
    if (epoch + 1) % config.checkpoint_every == 0:
      save(state, _CLUSTER, epoch + 1)
  return state, np.asarray(vade.predict(model, state.params, x))


@functools.lru_cache(maxsize=None)
def _vade_epoch(model, tx, batch_size):
  @functools.partial(jax.jit, donate_argnums=0)
  def epoch(state, x, rng):
    index, mask = pretrain.epoch_batches(rng, x.shape[0], batch_size)
    step = lambda s, b: vade.train_step(s, {"x": x[b[0]], "mask": b[1]}, rng, model=model, tx=tx)
    state, m = jax.lax.scan(step, state, (index, mask))
    return state, {"loss": jnp.mean(m["loss"])}

  return epoch


def _restore(manager, step, template=None, meta_only=False):
  try:
    if meta_only:
      return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types; a corrupt run must stop, never be overwritten
    raise ValueError(f"checkpoint {step} in {manager.directory} cannot be restored ({type(e).__name__}: {e}); "
                     "move the workdir away or choose another --workdir") from e


def _check_same_config(workdir: Path, config):
  path = workdir / "config.json"
  current = json.loads(config.to_json())
  if path.exists():
    saved = json.loads(path.read_text())
    # data_dir says where the files are, not what is trained: moved data may resume.
    differ = sorted(k for k in set(saved) | set(current) if k != "data_dir" and saved.get(k) != current.get(k))
    if differ:
      raise ValueError(f"{workdir} holds a run with another configuration (differs in {differ}); "
                       "resume it with the same settings or choose another --workdir")
  else:
    _write_atomic(path, json.dumps(current, indent=2, sort_keys=True))


class _Logger:
  """One place for run output: console lines, metrics.jsonl, TensorBoard scalars, a progress bar."""

  def __init__(self, workdir: Path, log, start: float):
    self.workdir, self.log, self.start = workdir, log, start
    self.writer = ScalarWriter(workdir / "tensorboard")
    self.bar = None

  def stage(self, name: str, total: int, done: int):
    """A progress bar with ETA on a terminal (tqdm hides it when stderr is not a TTY)."""
    if self.bar is not None:
      self.bar.close()
    self.bar = tqdm.tqdm(total=total, initial=done, desc=name, file=sys.stderr, disable=None, leave=False)

  def record(self, advance: int = 0, **fields):
    fields["elapsed"] = time.perf_counter() - self.start  # seconds since this fit call started
    with open(self.workdir / "metrics.jsonl", "a") as f:
      f.write(json.dumps(fields) + "\n")
    position = fields.get("epoch", fields.get("step", 0))
    self.writer.write(position, {f"{fields['stage']}/{k}": v for k, v in fields.items()
                                 if isinstance(v, (int, float)) and k not in ("epoch", "step", "of")})
    line = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
    if self.bar is not None and not self.bar.disable:
      self.bar.write(line)
      self.bar.update(advance)
    else:
      self.log(line)

  def close(self):
    if self.bar is not None:
      self.bar.close()
    self.writer.close()


def _write_atomic(path: Path, text: str):
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
