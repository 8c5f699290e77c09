"""Compiled epochs over on-device data, shared by every method: shuffled batches of row indices, the
gather that splits a batch over the mesh, one step per batch (a ``lax.scan`` or a Python loop), and
chunked passes over a whole dataset. Pure JAX; no I/O.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P


def epoch_batches(rng, n: int, batch_size: int):
  """``[steps, batch_size]`` shuffled row indices covering all ``n`` rows once, and their mask.

  The last batch is padded (with row 0, masked out) so every sample is used and shapes stay static.
  """
  steps = -(-n // batch_size)
  order = jax.random.permutation(rng, n)
  padded = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])
  mask = jnp.arange(steps * batch_size) < n
  return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


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


def vector_epoch(step, batch_size: int, n: int, sharding):
  """:func:`batch_epoch` for vector rows: each batch's ``"image"`` is a
  :class:`jaxclust.data.augment_vectors.Rows` (the rows, a nearest neighbour each, the features'
  statistics), which the step's views take: ``epoch(state, x, context, rng)`` with ``context`` an
  :class:`jaxclust.data.augment_vectors.Context`. A compiled ``lax.scan`` on every backend: without
  convolutions XLA's CPU backend runs it as fast as a loop."""
  from jaxclust.data import augment_vectors

  def one(state, x, context, index, mask, rng):
    partner_rng, rng = jax.random.split(rng)
    rows = augment_vectors.take(x, context, index, partner_rng)
    if sharding is not None:
      x_rows, partners, index, mask = jax.lax.with_sharding_constraint((rows.x, rows.partner, index, mask), sharding)
      rows = rows._replace(x=x_rows, partner=partners)
    return step(state, {"image": rows, "index": index, "mask": mask}, rng)

  return epoch_runner(one, batch_size, n, loop=False)


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
    index, mask = epoch_batches(jax.random.fold_in(rng, 0), n, batch_size)
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


def host_step(train_step, **options):
  """``train_step`` with ``options`` jitted once per distinct setting, state donated: the step of batches
  made on the host (``input="tf.data"``)."""
  return _host_step_cached(train_step, tuple(sorted(options.items())))


# The jitted programs of the method modules are cached on their settings (model, optimizer, sizes), so that
# equal settings compile once. The caches are bounded: each fit makes a new optimizer, so an unbounded cache
# kept every fit's executables alive, and a process fitting many times ran out of memory maps
# (vm.max_map_count, 65,530 here: ~500 per DEC fit) and crashed inside XLA's compiler (seen in CI workers).
compiled = functools.lru_cache(maxsize=8)


@functools.lru_cache(maxsize=64)
def same(factory, *args, **kwargs):
  """``factory(*args, **kwargs)``, one object for equal arguments. Optimizers and schedules are static
  arguments of compiled programs (hashed by identity): made through here, a fit with the settings of an
  earlier one in the process reuses its programs instead of compiling and keeping new ones."""
  return factory(*args, **kwargs)


@compiled
def _host_step_cached(train_step, options):
  return jax.jit(functools.partial(train_step, **dict(options)), donate_argnums=0)


def host_epoch(step, state, rng, batches):
  """``step`` over host-made batches, one compiled call each (``rng`` folded with the position, or None
  for steps that take none); the metrics' means."""
  history = []
  for i, batch in enumerate(batches):
    state, m = step(state, batch, None if rng is None else jax.random.fold_in(rng, i))
    history.append(m)
  return state, jax.tree.map(lambda *a: jnp.mean(jnp.stack(a), axis=0), *history)


def chunked(fn, x, n, chunk):
  """``fn`` over the first ``n`` rows of ``x`` in chunks of ``chunk`` rows (bounded activation memory)."""
  chunks = -(-n // chunk)
  index = jnp.minimum(jnp.arange(chunks * chunk), n - 1).reshape(chunks, chunk)
  out = jax.lax.map(lambda i: fn(x[i]), index)
  return jax.tree.map(lambda a: a.reshape(chunks * chunk, *a.shape[2:])[:n], out)


@jax.jit
def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of ``tree`` is finite: one compiled reduction, one host sync."""
  leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)
