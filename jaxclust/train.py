"""Training driver for the autoencoder methods: stages, checkpoints, resume. The I/O lives here.

A run is ``pretrain -> init -> cluster``. Every save records the stage and how far it got, so a
run killed at any point (even with SIGKILL) continues from its last checkpoint when ``fit`` is
called again on the same workdir. All randomness comes from ``config.seed`` folded with the stage
and the epoch or step, so a resumed run ends exactly where an uninterrupted one would. A finished
workdir (``summary.json``) is never trained over; a workdir made with another configuration, or
whose checkpoint cannot be restored, is refused with an error instead of being overwritten (a
setting that jaxclust gained after the run started counts as unchanged while it is at its default).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxclust import metrics as cluster_metrics
from jaxclust import parallel, runs
from jaxclust.data import sources
from jaxclust.kernels.gmm import gmm_diag
from jaxclust.kernels.kmeans import kmeans
from jaxclust.methods import dec, pretrain, vade
from jaxclust.models.autoencoder import ConvAutoencoder, MLPAutoencoder
from jaxclust.validation import check_count, check_settings

_PRETRAIN, _CLUSTER, _DONE = "pretrain", "cluster", "done"
_PRETRAINED = "pretrained_autoencoder"
_STANDARDIZATION = "standardization.npz"


class Dataset(NamedTuple):
  """The training data on the mesh: rows sharded over all devices of all processes."""
  x: jax.Array  # [n_pad, d] float32; rows >= n are zero padding
  mask: jax.Array  # [n_pad] bool, False on the padding
  n: int  # real rows
  mesh: Mesh
  batches: NamedSharding  # how a training batch is split: rows over the "data" axis
  host: np.ndarray | None  # [n, d] the rows on the host, kept when batches come from tf.data

  @property
  def rows(self) -> int:
    return self.x.shape[0]


def fit(config, workdir, *, log=print, mesh: Mesh | None = None) -> dict:
  """Runs (or resumes) ``config.method`` on ``config.dataset`` in ``workdir``; returns the summary.

  Data parallel over ``mesh`` (default: every device of every process, one "data" axis). In a
  multi-host job every process calls ``fit`` with the same arguments; each contributes its own
  block of rows, all run the same steps, and only process 0 writes logs and results.
  """
  check_settings(config)  # before anything is loaded or written
  workdir, log, finished = runs.open_workdir(workdir, log)
  if finished is not None:
    return finished
  lead = jax.process_index() == 0
  start = time.perf_counter()
  data, host_x, stats, k = _load(config)
  n, d = host_x.shape
  mesh = mesh or parallel.make_mesh()
  _check_batches(config, mesh.size)
  # Only now, with data and k known to be valid, does the workdir get created and claimed.
  runs.claim_workdir(workdir, config)
  if stats is not None:
    host_x = (host_x - stats["mean"]) / stats["std"]
    if lead:
      np.savez(workdir / _STANDARDIZATION, **stats)
  x, mask = parallel.global_rows(host_x, mesh)
  ds = Dataset(x, mask, n, mesh, NamedSharding(mesh, P("data")), host_x if config.input == "tf.data" else None)
  del host_x
  key = jax.random.key(config.seed)
  log(f"{config.method} on {config.dataset}: n={n} d={d} k={k} on {mesh.size} device(s), workdir {workdir}")

  logger = runs.Logger(workdir, log, start, enabled=lead)
  manager = ocp.CheckpointManager(workdir / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints))
  saves = manager.latest_step() or 0
  meta = runs.restore(manager, saves, meta_only=True)["meta"] if saves else {"stage": _PRETRAIN, "progress": 0}
  if meta.get("rows", ds.rows) != ds.rows:
    raise ValueError(f"{workdir} was trained with the data padded to {meta['rows']} rows, for another number of "
                     f"devices; this mesh has {mesh.size} devices ({ds.rows} rows): resume it on as many devices")

  def save(state, stage, progress):
    nonlocal saves
    saves += 1
    manager.save(saves, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({"stage": stage, "progress": progress, "rows": ds.rows})))

  ae = _autoencoder(config, data.x.shape[1:])
  tx = optax.adam(config.pretrain.learning_rate)
  state = parallel.put(pretrain.init(ae, jax.random.fold_in(key, 0), jnp.zeros((2, d)), tx), mesh)
  if meta["stage"] == _PRETRAIN:
    if saves:
      state = runs.restore(manager, saves, state)["state"]
    if config.pretrain.init_from:  # another run's pretrained autoencoder: skip pretraining
      state = state.replace(params=load_pretrained(config.pretrain.init_from, state.params))
      log(f"autoencoder from {config.pretrain.init_from}; pretraining skipped")
    epochs = 0 if config.pretrain.init_from else config.pretrain.epochs
    state = _pretrain(config, ae, tx, state, ds, key, epochs, meta["progress"], save, logger)
    # Kept apart from the rotating checkpoints so other runs can start from it (pretrain.init_from).
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(workdir / _PRETRAINED, state.params, force=True)
    checkpointer.wait_until_finished()
    meta = {"stage": _CLUSTER, "progress": 0}
    cluster_state = _initialize(config, ae, state.params, ds, k, key, log)
    save(cluster_state, _CLUSTER, 0)  # the stage boundary is always saved
  else:
    template = _cluster_template(config, ae, jax.tree.map(np.asarray, state.params), ds.rows, k, d, n, mesh)
    cluster_state = runs.restore(manager, saves, template)["state"]

  if meta["stage"] == _DONE:  # killed after the final save, before the summary was written
    labels = _predict(config, ae, cluster_state.params, ds.x, n)[:n]
  else:
    run = _run_dec if config.method in ("dec", "idec") else _run_vade
    cluster_state, labels = run(config, ae, cluster_state, ds, data.y, key, meta["progress"], save, logger)
    save(cluster_state, _DONE, 0)  # the final parameters, for predict
  manager.wait_until_finished()
  logger.close()

  summary = _finish(config, data, labels, k, mesh, workdir, lead, start)
  log("final: " + runs.format_fields(summary))
  return summary


def _load(config):
  """The dataset and its checks, before any workdir is claimed: ``(data, host_x, stats, k)`` with
  ``host_x`` the flattened float32 rows and ``stats`` their standardization (or None)."""
  if config.input not in ("device", "tf.data"):
    raise ValueError(f"input={config.input!r} must be 'device' or 'tf.data'")
  data = sources.load(config.dataset, data_dir=config.data_dir or None)
  host_x = np.asarray(data.x.reshape(data.x.shape[0], -1), np.float32)
  n = host_x.shape[0]
  stats = _standardization(host_x) if config.standardize else None
  k = config.n_clusters or (len(np.unique(data.y)) if data.y is not None else 0)
  if k == 0:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=1, high=n, high_name="n_samples")
  _autoencoder(config, data.x.shape[1:])  # an unknown model, or conv on tabular data, fails here
  if config.pretrain.init_from and not (Path(config.pretrain.init_from).absolute() / _PRETRAINED).exists():
    raise ValueError(f"pretrain.init_from={config.pretrain.init_from!r}: no {_PRETRAINED} in it "
                     "(it is written when a run finishes pretraining)")
  return data, host_x, stats, k


def _pretrain(config, ae, tx, state, ds, key, epochs, done, save, logger):
  """Autoencoder pretraining from epoch ``done`` to ``epochs``, saved every ``checkpoint_every``."""
  logger.stage("pretrain", epochs, done)
  for epoch in range(done, epochs):
    tick = time.perf_counter()
    if ds.host is None:
      state, m = pretrain.train_epoch(state, ds.x, jax.random.fold_in(key, 1_000_000 + epoch), model=ae, tx=tx,
                                      batch_size=config.pretrain.batch_size, loss=config.pretrain.loss, n=ds.n,
                                      batch_sharding=_batch_sharding(ds))
    else:
      step = _host_step(pretrain.train_step, ae, tx, loss=config.pretrain.loss)
      state, m = _host_steps(step, state, ds, config.pretrain.batch_size, (config.seed, 1, epoch))
    loss = float(m["loss"])  # blocks until the epoch has run
    seconds = time.perf_counter() - tick
    logger.record(1, stage=_PRETRAIN, epoch=epoch + 1, of=config.pretrain.epochs, loss=loss,
                  seconds=seconds, eta_seconds=seconds * (config.pretrain.epochs - epoch - 1))
    if (epoch + 1) % config.checkpoint_every == 0 and epoch + 1 < config.pretrain.epochs:
      save(state, _PRETRAIN, epoch + 1)
  return state


def _finish(config, data, labels, k, mesh, workdir, lead, start) -> dict:
  """The summary of a finished run (metrics against the labels, when the dataset has them), written
  with the labels on the lead process."""
  shape = data.x.shape[1:]
  summary = {"method": config.method, "dataset": config.dataset, "n": data.x.shape[0], "d": math.prod(shape),
             "shape": list(shape), "k": k, "seed": config.seed, "devices": mesh.size,
             "processes": jax.process_count(), "wall_seconds": time.perf_counter() - start,
             "train_seconds": runs.train_seconds(workdir)}
  if data.y is not None:
    summary.update(cluster_metrics.evaluate(data.y, labels))
  balance = cluster_metrics.cluster_balance(jnp.asarray(labels), k=k)
  summary["size_entropy"] = float(balance["normalized_entropy"])
  if lead:
    np.save(workdir / "labels.npy", labels)
    runs.write_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
  return summary


def _standardization(x) -> dict:
  """Per-feature mean and standard deviation; a feature with zero variance is an error."""
  mean, std = x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)
  constant = np.flatnonzero(std <= 1e-12 * np.maximum(np.abs(mean), 1.0))
  if constant.size:
    shown = ", ".join(map(str, constant[:10])) + (", ..." if constant.size > 10 else "")
    raise ValueError(f"standardize=True, but {constant.size} feature(s) have zero variance (columns {shown}): "
                     "drop them from the data or set standardize=False")
  return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def _autoencoder(config, shape):
  """The configured autoencoder for rows of ``shape`` (``[d]`` tabular, ``[H, W, C]`` images)."""
  d = math.prod(shape)
  if config.model == "mlp":
    return MLPAutoencoder(input_dim=d, hidden=tuple(config.hidden), latent=config.latent)
  if config.model != "conv":
    raise ValueError(f"model={config.model!r} must be 'mlp' or 'conv'")
  if config.method == "vade":
    raise ValueError("model='conv' is offered for dec and idec; VaDE uses the papers' MLP (model='mlp')")
  if len(shape) != 3:
    raise ValueError(f"model='conv' needs images [H, W, C], but {config.dataset!r} has rows of shape {tuple(shape)}")
  return ConvAutoencoder(image_shape=tuple(int(s) for s in shape), channels=tuple(config.conv_channels),
                         latent=config.latent)


def _check_batches(config, devices: int):
  if devices == 1:
    return
  sizes = {"pretrain.batch_size": config.pretrain.batch_size, "cluster.batch_size": config.cluster.batch_size}
  if config.method == "vade":
    sizes["vade.batch_size"] = config.vade.batch_size
  for name, size in sizes.items():
    if size % devices:
      raise ValueError(f"{name}={size} is not divisible by the {devices} devices of the mesh: every device takes "
                       "an equal share of each batch")


def _batch_sharding(ds: Dataset):
  return ds.batches if ds.mesh.size > 1 else None


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


def _predict(config, ae, params, x, n):
  """Labels of the rows of ``x`` (all processes get all of them)."""
  if config.method == "vade":
    model, _ = _vade_model(config, x.shape[1])
    return parallel.fetch(_vade_predict(model, params, x))
  return parallel.fetch(_dec_predict(ae, params, x))


@functools.partial(jax.jit, static_argnums=0)
def _dec_predict(model, params, x):
  return dec.predict(model, params, x)


@functools.partial(jax.jit, static_argnums=0)
def _vade_predict(model, params, x):
  return vade.predict(model, params, x)


def predict(workdir, x) -> np.ndarray:
  """Clusters of new rows ``x`` ([m, ...] with the training data's features) under a finished run."""
  workdir = Path(workdir).absolute()
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    raise ValueError(f"{workdir} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  summary = json.loads(summary_path.read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  if x.shape[1] != summary["d"]:
    raise ValueError(f"input has {x.shape[1]} features but the run {workdir} was trained on {summary['d']}")
  if not np.all(np.isfinite(x)):
    raise ValueError("input has NaN or Inf values")
  if config.get("standardize"):  # the training data's statistics, saved by fit
    stats = np.load(workdir / _STANDARDIZATION)
    x = (x - stats["mean"]) / stats["std"]
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  step = manager.latest_step()
  rows = runs.restore(manager, step, meta_only=True)["meta"].get("rows", summary["n"])
  mesh = parallel.make_mesh(1)
  ae = _autoencoder(config, summary.get("shape", [summary["d"]]))
  params = pretrain.init(ae, jax.random.key(0), jnp.zeros((1, summary["d"])), optax.adam(1.0)).params
  template = _cluster_template(config, ae, params, rows, summary["k"], summary["d"], summary["n"], mesh)
  state = runs.restore(manager, step, template)["state"]
  return _predict(config, ae, state.params, jnp.asarray(x), len(x))


def _initialize(config, ae, ae_params, ds: Dataset, k, key, log):
  """Cluster-stage state from the pretrained embeddings: k-means centers or a fitted GMM."""
  # The embeddings of the real rows, replicated on every device: [n, latent] is small (10 floats a
  # row), and k-means / EM on it give the same centers on every device count and host layout.
  z = _embed_valid(ae, ae_params, ds.x, ds.n, NamedSharding(ds.mesh, P()))
  d = ds.x.shape[1]
  if config.method == "vade":
    # The mixture starts from the k-means DEC uses (n_init restarts), not scikit-learn's single
    # run: on pretrained MNIST embeddings one k-means run gave initial ACC 0.65-0.85 by seed.
    fit = gmm_diag(z, k, rng=jax.random.fold_in(key, 2), kmeans_n_init=config.cluster.kmeans_n_init)
    log(f"GMM on embeddings: mean log-likelihood {float(fit.log_likelihood):.4f} after {int(fit.n_iter)} EM steps")
    model, tx = _vade_model(config, d, ds.n)
    params = model.init(jax.random.fold_in(key, 3), jnp.zeros((2, d)), jnp.zeros((2, config.latent)))["params"]
    params = {**params, **jax.tree.map(np.asarray, ae_params)}
    prior = vade.mixture_params(fit.weights, fit.means, fit.variances)
    return parallel.put(vade.init(params, jax.tree.map(np.asarray, prior), tx), ds.mesh)
  out = kmeans(z, k, rng=jax.random.fold_in(key, 2), n_init=config.cluster.kmeans_n_init)
  log(f"k-means on embeddings: inertia {float(out.inertia):.4f}")
  state = _dec_template(config, jax.tree.map(np.asarray, ae_params), np.asarray(out.centers), ds.rows, k, ds.mesh)
  labels = np.full((ds.rows,), -1, np.int32)
  labels[:ds.n] = np.asarray(out.labels)
  return state.replace(labels=parallel.put(labels, ds.mesh, P("data")))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _embed_valid(model, params, x, n, sharding):
  return jax.lax.with_sharding_constraint(model.apply({"params": params}, x[:n], method=model.encode), sharding)


def _dec_template(config, ae_params, centers, rows, k, mesh):
  """A DEC/IDEC state on ``mesh``: per-row target and labels sharded like the data, the rest replicated."""
  state = dec.init(ae_params, centers, rows, _dec_tx(config), keep_decoder=config.cluster.gamma > 0)
  return parallel.put(state, mesh).replace(
      target=parallel.put(np.full((rows, k), 1.0 / k, np.float32), mesh, P("data")),
      labels=parallel.put(np.full((rows,), -1, np.int32), mesh, P("data")))


def _cluster_template(config, ae, ae_params, rows, k, d, n, mesh):
  """A state with the cluster stage's structure and shardings, to restore into."""
  if config.method == "vade":
    model, tx = _vade_model(config, d, n)
    params = model.init(jax.random.key(0), jnp.zeros((2, d)), jnp.zeros((2, config.latent)))["params"]
    prior = vade.mixture_params(jnp.ones(k), jnp.zeros((k, config.latent)), jnp.ones((k, config.latent)))
    return parallel.put(vade.init(params, prior, tx), mesh)
  return _dec_template(config, ae_params, np.zeros((k, config.latent), np.float32), rows, k, mesh)


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


def _run_dec(config, ae, state, ds: Dataset, y, key, done_steps, save, logger):
  c = config.cluster
  tx = _dec_tx(config)
  refresh = _dec_refresh(ae)
  interval = _dec_interval(ae, tx, c.gamma, c.update_interval, c.batch_size, ds.n, _batch_sharding(ds))
  steps = done_steps
  logger.stage("cluster", c.max_steps, done_steps)
  while True:
    state, changed = refresh(state, ds.x, ds.mask)
    labels = parallel.fetch(state.labels)[:ds.n]
    record = {"stage": _CLUSTER, "step": steps, "changed": float(changed)}
    if y is not None:
      record.update(cluster_metrics.evaluate(y, labels))
    if steps >= c.max_steps or (steps > 0 and float(changed) < c.tol):
      logger.record(**record, stop="tol" if float(changed) < c.tol else "max_steps")
      return state, labels
    tick = time.perf_counter()
    if ds.host is None:
      state, m = interval(state, ds.x, jax.random.fold_in(key, 2_000_000 + steps))
    else:
      step = _host_step(dec.train_step, ae, tx, gamma=c.gamma)
      state, m = _host_steps(step, state, ds, c.batch_size, (config.seed, 2, steps), steps=c.update_interval)
    steps += c.update_interval
    logger.record(c.update_interval, **record, loss=float(jnp.mean(m["loss"])), seconds=time.perf_counter() - tick)
    if (steps // c.update_interval) % config.checkpoint_every == 0:
      save(state, _CLUSTER, steps)


@functools.lru_cache(maxsize=None)
def _dec_refresh(ae):
  return jax.jit(functools.partial(dec.refresh_target, model=ae), donate_argnums=0)


@functools.lru_cache(maxsize=None)
def _dec_interval(ae, tx, gamma, update_interval, batch_size, n, batch_sharding):
  """``update_interval`` DEC/IDEC steps on random batches of the first ``n`` rows, as one compiled scan."""
  step = functools.partial(dec.train_step, model=ae, tx=tx, gamma=gamma)

  @functools.partial(jax.jit, donate_argnums=0)
  def interval(state, x, rng):
    # Batches are consecutive slices of shuffled passes over the data (one permutation per pass):
    # drawing each batch with jax.random.choice(replace=False) sorts all n rows per step, which
    # made an MNIST interval 3x slower.
    needed = update_interval * batch_size
    passes = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(rng, -(-needed // n)))
    index = passes.reshape(-1)[:needed].reshape(update_interval, batch_size)

    def one(state, i):
      xb = x[i]
      if batch_sharding is not None:
        xb, i = jax.lax.with_sharding_constraint((xb, i), batch_sharding)
      return step(state, {"x": xb, "index": i}, None)

    return jax.lax.scan(one, state, index)

  return interval


def _host_step(train_step, model, tx, **options):
  """``train_step`` jitted once per (model, optimizer, options), state donated: the tf.data path."""
  return _host_step_cached(train_step, model, tx, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _host_step_cached(train_step, model, tx, options):
  return jax.jit(functools.partial(train_step, model=model, tx=tx, **dict(options)), donate_argnums=0)


def _host_steps(step, state, ds: Dataset, batch_size, seed_path, steps=None, rng=None):
  """Steps on batches from tf.data (one shuffled pass, or ``steps`` batches); the mean loss."""
  from jaxclust.data import pipeline  # imports TensorFlow: only runs with input="tf.data" need it
  seed = int(np.random.SeedSequence(seed_path).generate_state(1)[0] >> 1)
  losses = []
  for batch in pipeline.batches(ds.host, batch_size=batch_size, seed=seed, mesh=ds.mesh, steps=steps):
    state, m = step(state, batch, rng)
    losses.append(m["loss"])
  return state, {"loss": jnp.mean(jnp.stack(losses))}


def _run_vade(config, ae, state, ds: Dataset, y, key, done_epochs, save, logger):
  model, tx = _vade_model(config, ds.x.shape[1], ds.n)
  epoch_fn = _vade_epoch(model, tx, config.vade.batch_size, ds.n, _batch_sharding(ds))
  logger.stage("cluster", config.vade.epochs, done_epochs)
  for epoch in range(done_epochs, config.vade.epochs):
    tick = time.perf_counter()
    rng = jax.random.fold_in(key, 3_000_000 + epoch)
    if ds.host is None:
      state, m = epoch_fn(state, ds.x, rng)
    else:
      step = _host_step(vade.train_step, model, tx)
      state, m = _host_steps(step, state, ds, config.vade.batch_size, (config.seed, 3, epoch), rng=rng)
    record = {"stage": _CLUSTER, "epoch": epoch + 1, "of": config.vade.epochs, "loss": float(m["loss"]),
              "seconds": time.perf_counter() - tick}
    if y is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == config.vade.epochs):
      record.update(cluster_metrics.evaluate(y, _predict(config, ae, state.params, ds.x, ds.n)[:ds.n]))
    logger.record(1, **record)
    if (epoch + 1) % config.checkpoint_every == 0:
      save(state, _CLUSTER, epoch + 1)
  return state, _predict(config, ae, state.params, ds.x, ds.n)[:ds.n]


@functools.lru_cache(maxsize=None)
def _vade_epoch(model, tx, batch_size, n, batch_sharding):
  @functools.partial(jax.jit, donate_argnums=0)
  def epoch(state, x, rng):
    index, mask = pretrain.epoch_batches(rng, n, batch_size)

    def step(state, batch):
      xb, m = x[batch[0]], batch[1]
      if batch_sharding is not None:
        xb, m = jax.lax.with_sharding_constraint((xb, m), batch_sharding)
      return vade.train_step(state, {"x": xb, "mask": m}, rng, model=model, tx=tx)

    state, m = jax.lax.scan(step, state, (index, mask))
    return state, {"loss": jnp.mean(m["loss"])}

  return epoch


