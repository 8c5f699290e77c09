"""DEC: Deep Embedded Clustering (Xie, Girshick & Farhadi, ICML 2016).

After autoencoder pretraining, the encoder and k cluster centers are trained together to sharpen
the Student-t soft assignment Q (eq. 1) towards a target distribution P (eq. 3) by minimizing
KL(P || Q) (eq. 2). P is recomputed over the whole dataset every ``update_interval`` steps (140 on
MNIST in the official code), not per batch; training stops when fewer than ``tol`` (0.1%) of the
labels change between two refreshes. Centers start from k-means (n_init 20) on the embeddings.
The official optimizer is SGD, learning rate 0.01, momentum 0.9, batch 256.

A run (:func:`stages`): autoencoder pretraining (:mod:`jaxclust.methods.pretrain`), then the
clustering stage, whose "epochs" are refresh intervals: P is refreshed over the whole dataset, the
stopping rule is checked, then ``update_interval`` SGD steps run on random batches. IDEC is this
method with ``cluster.gamma > 0`` (:mod:`jaxclust.methods.idec`).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import PartitionSpec as P

from jaxclust import engine, epochs, parallel, seeding
from jaxclust import metrics as cluster_metrics
from jaxclust.kernels.kmeans import kmeans
from jaxclust.methods import networks, pretrain
from jaxclust.methods.pretrain import RECIPES, REUSE, config  # noqa: F401  (DEC's settings are the shared ones)
from jaxclust.models.autoencoder import reconstruction_loss


def soft_assignment(z, centers, alpha: float = 1.0):
  """Eq. 1: ``q_ij ~ (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2)``, rows normalized.

  Args:
    z: ``[n, e]`` embeddings; centers: ``[k, e]``; alpha: Student-t degrees of freedom (1 in DEC).

  Returns:
    ``[n, k]`` soft assignments.
  """
  sq = jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ centers.T + jnp.sum(centers * centers, -1)
  kernel = (1.0 + jnp.maximum(sq, 0.0) / alpha) ** (-(alpha + 1.0) / 2.0)
  return kernel / jnp.sum(kernel, axis=-1, keepdims=True)


def target_distribution(q, mask=None):
  """Eq. 3: ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')`` with ``f_j = sum_i q_ij`` over all samples.

  Args:
    q: ``[n, k]`` soft assignments of the whole dataset (rows may be sharded).
    mask: optional ``[n]``, False for padding rows, which are left out of ``f``.
  """
  weight = q if mask is None else q * mask[:, None]
  frequency = jnp.sum(weight, axis=0)
  p = q ** 2 / frequency
  return p / jnp.sum(p, axis=-1, keepdims=True)


def kl_divergence(p, q, mask=None):
  """Eq. 2: ``KL(P || Q) = sum_j p_ij log(p_ij / q_ij)``, averaged over the (unmasked) samples."""
  per_sample = jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0), axis=-1)
  if mask is None:
    return jnp.mean(per_sample)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1)


class DECState(struct.PyTreeNode):
  """Everything a DEC/IDEC run needs to resume: this pytree is what is checkpointed."""
  step: jax.Array  # [] int32
  params: Any  # {"ae": autoencoder params, "centers": [k, e]}
  opt_state: Any
  target: jax.Array  # [n, k] P from the last whole-dataset refresh
  labels: jax.Array  # [n] int32 argmax of Q at the last refresh (for the tol criterion)


def sgd(learning_rate: float = 0.01, momentum: float = 0.9) -> optax.GradientTransformation:
  """DEC's optimizer for the clustering stage (official code)."""
  return epochs.same(optax.sgd, learning_rate, momentum=momentum)


OPTIMIZERS = ("sgd", "adam")


def optimizer(name: str, learning_rate: float, momentum: float) -> optax.GradientTransformation:
  """The clustering stage's optimizer: ``"sgd"`` with ``momentum`` (DEC; IDEC on USPS) or ``"adam"`` with
  optax's defaults otherwise (IDEC on MNIST), both at ``learning_rate``.

  Raises:
    ValueError: ``name`` is neither.
  """
  if name == "sgd":
    return sgd(learning_rate, momentum)
  if name == "adam":
    return epochs.same(optax.adam, learning_rate)
  raise ValueError(f"cluster.optimizer={name!r} must be one of {', '.join(map(repr, OPTIMIZERS))}")


def init(ae_params, centers, n: int, tx: optax.GradientTransformation, *, keep_decoder: bool = False) -> DECState:
  """The clustering-stage state after pretraining and k-means on the embeddings.

  DEC discards the decoder (as in the paper), so its parameters are neither differentiated nor
  updated; IDEC, whose loss reconstructs, passes ``keep_decoder=True``.
  """
  if not keep_decoder:
    ae_params = {name: p for name, p in ae_params.items() if name.startswith(("encoder_", "embedding"))}
  params = {"ae": ae_params, "centers": jnp.asarray(centers, jnp.float32)}
  k = params["centers"].shape[0]
  return DECState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                  target=jnp.full((n, k), 1.0 / k, jnp.float32), labels=jnp.full((n,), -1, jnp.int32))


def embed(model: nn.Module, params, x):
  return model.apply({"params": params["ae"]}, x, method=model.encode)


def loss_fn(params, batch, target, *, model, alpha, gamma):
  """KL(P || Q) on the batch, plus ``gamma`` times the reconstruction error when ``gamma > 0`` (IDEC)."""
  mask = batch.get("mask")
  if gamma > 0:
    z, x_hat = model.apply({"params": params["ae"]}, batch["x"])
  else:
    z, x_hat = embed(model, params, batch["x"]), None
  q = soft_assignment(z, params["centers"], alpha)
  kl = kl_divergence(target[batch["index"]], q, mask)
  metrics = {"kl": kl}
  loss = kl
  if gamma > 0:
    metrics["reconstruction"] = reconstruction_loss(batch["x"], x_hat, mask)
    loss = metrics["reconstruction"] + gamma * kl  # IDEC, eq. 6 (gamma weights the clustering loss)
  metrics["loss"] = loss
  return loss, metrics


def train_step(state: DECState, batch, rng, *, model, tx, alpha: float = 1.0, gamma: float = 0.0):
  """One SGD step on a batch ``{"x": [b, ...], "index": [b] rows into the dataset, "mask": [b]}``.

  ``rng`` is unused (DEC's step is deterministic); it is part of the common signature of
  ``train_step(state, batch, rng)``. Jit it with ``functools.partial`` over ``model``/``tx``.
  """
  del rng
  grads, metrics = jax.grad(functools.partial(loss_fn, model=model, alpha=alpha, gamma=gamma), has_aux=True)(
      state.params, batch, state.target)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def refresh_target(state: DECState, x, mask=None, fixed=None, *, model, alpha: float = 1.0,
                   chunk: int | None = None, mesh=None):
  """Recomputes P from Q over the whole dataset ``x`` ([n, ...]); returns the share of labels changed.

  ``x`` may be a row-sharded global array padded to a multiple of the device count, with ``mask``
  False on the padding rows, which are excluded from P's cluster frequencies and from the count.
  ``fixed`` ``[n]``: a seeded row's cluster (-1 elsewhere), which is its label and its one-hot target.
  ``chunk``: encode ``chunk`` rows at a time (the activations of the whole dataset at once are several times
  ``x``); with ``mesh`` (rows sharded over its ``data`` axis) each device encodes its own rows.
  """
  def assign(params, rows):
    return soft_assignment(embed(model, params, rows), params["centers"], alpha)

  if chunk is None:
    return refresh_from_assignments(state, assign(state.params, x), mask, fixed)
  local = lambda params, rows: epochs.chunked(lambda b: assign(params, b), rows, rows.shape[0], chunk)
  if mesh is not None:
    local = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"), check_vma=False)
  return refresh_from_assignments(state, local(state.params, x), mask, fixed)


def refresh_from_assignments(state: DECState, q, mask=None, fixed=None):
  """:func:`refresh_target` from the soft assignments ``q`` ``[n, k]`` of the whole dataset (computed in a
  streaming pass when the rows do not sit on the devices)."""
  labels = jnp.argmax(q, axis=-1).astype(jnp.int32)
  target = target_distribution(q, mask)
  if fixed is not None:  # labelled rows keep their class (jaxclust.seeding)
    labels = jnp.where(fixed >= 0, fixed, labels)
    target = jnp.where((fixed >= 0)[:, None], jax.nn.one_hot(fixed, q.shape[-1], dtype=target.dtype), target)
  valid = jnp.ones(labels.shape, bool) if mask is None else mask
  changed = jnp.sum((labels != state.labels) & valid) / jnp.maximum(jnp.sum(valid), 1)
  return state.replace(target=target, labels=labels), changed


def predict(model: nn.Module, params, x, *, alpha: float = 1.0):
  """Hard cluster of each row of ``x``: the argmax of Q."""
  return jnp.argmax(soft_assignment(embed(model, params, x), params["centers"], alpha), axis=-1)


# -- The run: what the engine (jaxclust.engine) calls.

def prepare(config, data, mesh) -> engine.Prepared:
  return pretrain.prepare(config, data, mesh=mesh, batch_sizes=("pretrain.batch_size", "cluster.batch_size"))


def stages(run):
  model = networks.autoencoder(run.config, run.shape)
  return pretrain.stage(run, model), _cluster_stage(run, model)


def readout(run, state) -> engine.Readout:
  """The clusters of the last refresh; confidence, the largest soft assignment; the embedding z."""
  model = networks.autoencoder(run.config, run.shape)
  q = _assignments(run, model, state.params)
  return engine.Readout(parallel.fetch(state.labels)[:run.n], np.max(q, -1),
                        embedding=parallel.fetch(pretrain.embed(run, model, state.params["ae"])))


def _assignments(run, model, params):
  """Q ``[n, k]`` of every row, on the host."""
  if run.source is None:
    return parallel.fetch(_soft_assignment_jit(model, params, run.x))[:run.n]
  q, = run.in_order(lambda rows: (_soft_assignment_jit(model, params, rows),), run.config.cluster.batch_size)
  return q


def centers(run, state) -> np.ndarray:
  """``[k, latent]`` the cluster centers in the embedding (the API's ``cluster_centers_``)."""
  del run
  return parallel.fetch(state.params["centers"])


def with_centers(run, state, centers):
  """``state`` with the cluster centers ``[k, latent]`` replaced (``jaxclust update``'s mini-batch k-means)."""
  del run
  return state.replace(params={**state.params, "centers": jnp.asarray(centers, jnp.float32)})


def assign(run, state, x) -> engine.Assignment:
  """New rows ``x`` under a finished run: the argmax of Q, its probability, the embedding z."""
  z, q = _embed_and_assign(networks.autoencoder(run.config, run.shape), state.params, jnp.asarray(x.reshape(len(x), -1)))
  q = parallel.fetch(q)
  return engine.Assignment(np.argmax(q, -1), np.max(q, -1), parallel.fetch(z))


def step_flops(config, shape, k: int) -> dict:
  """Model FLOPs per training row (``jaxclust bench steps``): pretraining, the autoencoder forward and backward
  (3 forward passes); clustering, the encoder's (the whole autoencoder's with a reconstruction term, IDEC), the
  interval's target refresh over the dataset left out."""
  del k
  whole, encoder = pretrain.autoencoder_flops(networks.autoencoder(config, shape), shape)
  return {"pretrain": 3 * whole, "cluster": 3 * (whole if config.cluster.gamma > 0 else encoder)}


def bench_peers(config, shape, k: int) -> dict:
  """ClustPy's DEC (``jaxclust bench steps --peers``): its epochs of pretraining and of clustering, for the
  autoencoder it builds (d-500-500-2000-latent, MLP), so only where this configuration has that one."""
  if config.model != "mlp" or tuple(config.hidden) != (500, 500, 2000) or config.cluster.gamma > 0:
    return {}
  spec = {"step": "clustpy_dec", "backbone": {"shape": [int(s) for s in shape]}, "k": k, "embedding": config.latent}
  return {"pretrain": {**spec, "stage": "pretrain"}, "cluster": {**spec, "stage": "cluster"}}


def _cluster_stage(run, model) -> engine.Stage:
  c = run.config.cluster
  tx = optimizer(c.optimizer, c.learning_rate, c.momentum)
  d = int(np.prod(run.shape))

  def placed(ae_params, centers):
    """The state on the mesh: per-row target and labels sharded like the data, the rest replicated."""
    state = init(ae_params, centers, run.rows, tx, keep_decoder=c.gamma > 0)
    return parallel.put(state, run.mesh).replace(
        target=parallel.put(np.full((run.rows, run.k), 1.0 / run.k, np.float32), run.mesh, P("data")),
        labels=parallel.put(np.full((run.rows,), -1, np.int32), run.mesh, P("data")))

  def template(run):
    ae_params = pretrain.init(model, jax.random.key(0), jnp.zeros((1, d)), epochs.same(optax.adam, 1.0)).params
    return placed(jax.tree.map(np.asarray, ae_params), np.zeros((run.k, run.config.latent), np.float32))

  fixed = None if run.seeds is None else parallel.put(seeding.vector(run.seeds, run.rows), run.mesh, P("data"))

  def start(run, pretrained):
    """Centers from k-means (``kmeans_n_init`` restarts) on the pretrained embeddings; with seed labels, from
    the labelled classes' mean embeddings (:func:`jaxclust.seeding.kmeans`)."""
    z = pretrain.embed(run, model, pretrained.params)
    if run.seeds is not None:
      centers, labels_n = seeding.kmeans(z, run.seeds, run.k, seed=run.config.seed)
      run.log(f"seeded k-means on embeddings from {len(run.seeds.index)} labelled rows")
    else:
      out = kmeans(z, run.k, rng=jax.random.fold_in(run.key, 2), n_init=c.kmeans_n_init)
      run.log(f"k-means on embeddings: inertia {float(out.inertia):.4f}")
      centers, labels_n = np.asarray(out.centers), np.asarray(out.labels)
    state = placed(jax.tree.map(np.asarray, pretrained.params), centers)
    labels = np.full((run.rows,), -1, np.int32)
    labels[:run.n] = labels_n
    return state.replace(labels=parallel.put(labels, run.mesh, P("data")))

  def epoch(run, state, i):
    steps = i * c.update_interval
    tick = time.perf_counter()
    if run.source is None:
      state, changed = _refresh(model, run.mesh if run.mesh.size > 1 else None)(state, run.x, run.mask, fixed)
    else:  # Q of every row in a streaming pass, then P over the whole dataset on the devices
      q = np.full((run.rows, run.k), 1.0 / run.k, np.float32)  # padding rows: any valid distribution
      q[:run.n] = _assignments(run, model, state.params)
      mask = parallel.put(np.arange(run.rows) < run.n, run.mesh, P("data"))
      state, changed = _refresh_streamed(state, parallel.put(q, run.mesh, P("data")), mask, fixed)
    record = {"step": steps, "changed": float(changed)}
    if run.y is not None:
      record.update(cluster_metrics.evaluate(run.y, parallel.fetch(state.labels)[:run.n]))
    record["pass_seconds"] = time.perf_counter() - tick  # the refresh, apart from the steps (jaxclust bench)
    if steps >= c.max_steps or (steps > 0 and float(changed) < c.tol):
      return state, {**record, "stop": "tol" if float(changed) < c.tol else "max_steps"}
    if run.source is None:
      interval = _interval(model, tx, c.gamma, c.update_interval, c.batch_size, run.n, epochs.shard(run.mesh))
      state, m = interval(state, run.x, jax.random.fold_in(run.key, 2_000_000 + steps))
    else:
      step = epochs.host_step(train_step, model=model, tx=tx, gamma=c.gamma)
      state, m = epochs.host_epoch(step, state, None, run.batches(c.batch_size, 2_000_000 + steps,
                                                                  steps=c.update_interval))
    return state, {**record, "loss": float(jnp.mean(m["loss"]))}

  intervals = -(-c.max_steps // c.update_interval) + 1  # the last refresh only checks the stopping rule
  return engine.Stage("cluster", intervals, start, template, epoch)


# Rows encoded at a time by the refresh: on 69,888 MNIST-sized rows (784-500-500-2000-10, 2-core CPU, 2026-12-05,
# `jaxclust bench steps --method dec --shape 784 --batch 256 --steps 273`) a refresh took 1.30 s in chunks against
# 1.61 s all at once, and 1.30 s against 3.61 s under GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (whose huge pages the
# [n, 2000] activations of the whole dataset kept faulting in).
REFRESH_CHUNK = 4096


@epochs.compiled
def _refresh(model, mesh):
  return jax.jit(functools.partial(refresh_target, model=model, chunk=REFRESH_CHUNK, mesh=mesh), donate_argnums=0)


_refresh_streamed = jax.jit(refresh_from_assignments, donate_argnums=0)


@epochs.compiled
def _interval(model, tx, gamma, update_interval, batch_size, n, batch_sharding):
  """``update_interval`` steps on random batches of the first ``n`` rows, as one compiled scan."""
  step = functools.partial(train_step, model=model, tx=tx, gamma=gamma)

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


@functools.partial(jax.jit, static_argnums=0)
def _predict_jit(model, params, x):
  return predict(model, params, x)


@functools.partial(jax.jit, static_argnums=0)
def _embed_and_assign(model, params, x):
  z = embed(model, params, x)
  return z, soft_assignment(z, params["centers"])


@functools.partial(jax.jit, static_argnums=0)
def _soft_assignment_jit(model, params, x):
  return soft_assignment(embed(model, params, x), params["centers"])
