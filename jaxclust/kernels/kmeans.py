"""k-means on device: greedy k-means++ seeding, Lloyd iterations, batched restarts, sharded rows.

Lloyd (1982); k-means++ (Arthur & Vassilvitskii 2007) in its greedy form with ``2 + ln k`` local
trials per center, as scikit-learn does; the convergence test (squared center shift below
``tol`` times the mean per-feature variance) is scikit-learn's, so results compare one to one.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxclust import parallel, validation
from jaxclust.kernels.chunks import default_chunk_size, nearest, normalize_rows, scan_chunks


class KMeansOutput(NamedTuple):
  """Result of :func:`kmeans` (leading problem axis added for batched input)."""
  centers: jax.Array  # [k, d]; unit rows when spherical
  labels: jax.Array  # [n] int32, nearest center of each point
  inertia: jax.Array  # [] sum_i w_i dist(x_i, centers[labels_i]); dist = |x-c|^2 or 1 - cos
  n_iter: jax.Array  # [] int32, Lloyd iterations run by the returned restart
  converged: jax.Array  # [] bool, center shift fell below tol before max_iter
  counts: jax.Array  # [k] total sample weight of each cluster


def kmeans(x, k: int, *, rng, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
           init="k-means++", sample_weight=None, spherical: bool = False,
           n_local_trials: int | None = None, chunk_size: int | None = None,
           precision=None, empty: str = "farthest") -> KMeansOutput:
  """Clusters ``x`` into ``k`` groups with Lloyd's algorithm.

  The ``n_init`` restarts run together (``vmap``: one GEMM against all ``n_init * k`` centers per
  chunk); the one with the lowest inertia is returned. A cluster that loses all its points is
  re-seeded with the points farthest from their centers (as scikit-learn does; ``empty="split"``:
  DeepCluster's rule, see below), so no center is ever NaN; a warning names the clusters still empty at the
  end (fewer than k distinct points).

  Sharding: if ``x`` is a global ``jax.Array`` whose rows are sharded over a mesh (see
  :func:`jaxclust.parallel.shard_rows`), each device scans its own rows and partial sums are
  ``psum``-ed, so the result equals the single-device one up to float summation order; ``labels``
  comes back sharded like ``x``.

  Memory: besides ``x`` ([n, d]) and ``labels`` ([n] int32), the peak is about
  ``12 * chunk_size * n_init * k`` bytes (XLA keeps about three ``[chunk, n_init * k]`` blocks: the
  scores, the masked indices of the argmin, and its partial reduction) plus ``4 * n`` per restart
  for k-means++ and ``4 * n_init * n`` for the rare empty-cluster re-seeding. ``chunk_size``
  defaults to 2**19 / (n_init * k) rows on CPU and 2**27 / (n_init * k) on accelerators. For
  n = 10M, d = 128, k = 10k, XLA's compiled buffer assignment holds 5.16 GB of arguments and
  1.72 GB of temporaries (checked in tests/test_memory.py), well inside 16 GB.

  Args:
    x: ``[n, d]`` floating-point points, or ``[b, n, d]`` for ``b`` independent problems solved in
      one call (each with its own key from ``rng``; batched problems are not row-sharded).
    k: number of clusters, ``1 <= k <= n``.
    rng: a ``jax.random`` key (no default: randomness is explicit).
    n_init: restarts with different seeds.
    max_iter: Lloyd iterations at most.
    tol: stop when the squared center shift is at most ``tol * mean(var(x, axis=0))``.
    init: ``"k-means++"`` or explicit centers ``[k, d]`` / ``[n_init, k, d]`` (``[b, ...]`` batched).
    sample_weight: optional ``[n]`` (or ``[b, n]``) non-negative weights.
    spherical: cosine k-means for normalized embeddings: rows and centers are unit-normalized,
      points go to the center of highest cosine, and ``inertia = sum w (1 - cos)``.
    n_local_trials: candidates per greedy k-means++ step; default ``2 + int(ln k)``.
    chunk_size: rows per distance block; default sized to the platform (see Memory).
    precision: ``lax.Precision`` of the distance GEMM; None is JAX's default (TF32 on Ampere and
      later GPUs: pass ``lax.Precision.HIGHEST`` for full fp32 there).
    empty: what an iteration does with a cluster left empty. ``"farthest"``: it moves onto one of the points
      farthest from their centers. ``"split"`` (DeepCluster, Caron et al. 2018, as faiss does): a non-empty
      cluster is drawn with probability proportional to its size, the empty cluster's center becomes a copy
      of its center perturbed by ``1 +- 1/1024`` (alternating signs over the dimensions, the other center
      the opposite way), and the next assignment splits the drawn cluster's points between the two.

  Returns:
    A :class:`KMeansOutput`.
  """
  validation.check_float_array(x, "x", ranks=(2, 3))
  batched = x.ndim == 3
  n, d = x.shape[-2:]
  k = validation.check_count(k, "k", low=1, high=n, high_name="n_samples")
  n_init = validation.check_count(n_init, "n_init", low=1)
  max_iter = validation.check_count(max_iter, "max_iter", low=1)
  if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
    raise ValueError(f"tol={tol!r} must be a finite number >= 0")
  validation.check_rng(rng)
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(k))
  n_local_trials = validation.check_count(n_local_trials, "n_local_trials", low=1)
  sharding = None if batched else parallel.row_sharding(x)
  if sample_weight is None:
    sample_weight = jnp.ones(x.shape[:-1], jnp.float32)
    if sharding is not None:
      sample_weight = jax.device_put(sample_weight, x.sharding)
  else:
    validation.check_weights(sample_weight, tuple(x.shape[:-1]))
  if isinstance(init, str):
    if init != "k-means++":
      raise ValueError(f"init={init!r} must be 'k-means++' or an array of centers")
    init = None
  else:
    init = _check_init(init, batched=batched, n_init=n_init, k=k, d=d, x_shape=x.shape)
  if spherical and validation.is_concrete(x):
    zero = validation.host_int(jnp.sum(jnp.all(x == 0, axis=-1)))
    if zero:
      raise ValueError(f"spherical k-means needs non-zero rows: x has {zero} all-zero rows")
  if chunk_size is None:
    chunk_size = default_chunk_size(n // (sharding.n_shards if sharding else 1), n_init * k)
  chunk_size = validation.check_count(chunk_size, "chunk_size", low=1)
  if empty not in ("farthest", "split"):
    raise ValueError(f"empty={empty!r} must be 'farthest' or 'split'")

  out = _solve(x, sample_weight, init, rng, jnp.float32(tol), k=k, n_init=n_init, max_iter=max_iter,
               n_trials=n_local_trials, chunk_size=chunk_size, spherical=spherical,
               precision=precision, sharding=sharding, batched=batched, split=empty == "split")
  empty = validation.host_int(jnp.sum(out.counts <= 0))
  if empty:
    warnings.warn(f"k-means ended with {empty} empty clusters out of k={k}: x has fewer "
                  "distinct points (with non-zero weight) than clusters", RuntimeWarning, stacklevel=2)
  return out


class KMeansRangeOutput(NamedTuple):
  """Result of :func:`kmeans_range`: one solution per run and per k (axes ``[runs, len(ks)]``)."""
  centers: jax.Array  # [runs, K, k_max, d]; rows k and above of a k's solution are NaN
  labels: jax.Array  # [runs, K, n] int32
  inertia: jax.Array  # [runs, K]
  n_iter: jax.Array  # [runs, K] int32
  converged: jax.Array  # [runs, K] bool
  counts: jax.Array  # [runs, K, k_max]; 0 beyond k


def kmeans_range(x, ks, *, rng, runs: int = 4, max_iter: int = 300, tol: float = 1e-4, init=None,
                 chunk_size: int | None = None) -> KMeansRangeOutput:
  """k-means for every k in ``ks`` at once, ``runs`` times each: one compiled call (choosing k, stability).

  Each run seeds ``max(ks)`` centers by greedy k-means++ once; the solution for k starts from the first k
  of them (the first k steps of a greedy k-means++ seeding are a k-means++ seeding for k) and runs Lloyd
  with the other centers masked out (never nearest, never re-seeded), every k in one ``vmap``. So a run
  for k equals :func:`kmeans` started from those k centers. Squared Euclidean distances; not row-sharded
  (as :func:`kmeans`' batched problems).

  Args:
    x: ``[n, d]`` points. ks: the numbers of clusters, each in ``[1, n]``.
    rng: a ``jax.random`` key; run ``r`` seeds with ``jax.random.split(rng, runs)[r]``.
    runs: independent seedings per k (the best by inertia is ``kmeans(n_init=runs)``'s answer; their
      agreement measures stability).
    max_iter, tol: as :func:`kmeans`.
    init: optional ``[runs, max(ks), d]`` seeds instead of k-means++.
    chunk_size: rows per distance block; default sized to ``runs * len(ks) * max(ks)`` scores per row.
  """
  validation.check_float_array(x, "x", ranks=(2,))
  n, d = x.shape
  if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__") or not list(ks):
    raise ValueError(f"ks={ks!r} must be a non-empty sequence of numbers of clusters")
  ks = tuple(validation.check_count(k, "k", low=1, high=n, high_name="n_samples") for k in ks)
  runs = validation.check_count(runs, "runs", low=1)
  max_iter = validation.check_count(max_iter, "max_iter", low=1)
  if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
    raise ValueError(f"tol={tol!r} must be a finite number >= 0")
  validation.check_rng(rng)
  if init is not None:
    validation.check_float_array(init, "init", ranks=(3,))
    if tuple(init.shape) != (runs, max(ks), d):
      raise ValueError(f"init has shape {tuple(init.shape)}, expected {(runs, max(ks), d)} (runs, max(ks), d)")
    init = jnp.asarray(init, jnp.float32)
  if chunk_size is None:
    chunk_size = default_chunk_size(n, runs * len(ks) * max(ks))
  chunk_size = validation.check_count(chunk_size, "chunk_size", low=1)
  return _solve_range(x, init, rng, jnp.float32(tol), ks=ks, runs=runs, max_iter=max_iter,
                      n_trials=2 + int(math.log(max(ks))), chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("ks", "runs", "max_iter", "n_trials", "chunk_size"))
def _solve_range(x, init, rng, tol, *, ks, runs, max_iter, n_trials, chunk_size):
  k_max = max(ks)
  w = jnp.ones(x.shape[0], jnp.float32)
  ops = _Ops(k=k_max, chunk_size=chunk_size, spherical=False, precision=None, psum=lambda v: v)
  xf = x.astype(jnp.float32)
  var = jnp.mean(xf * xf, axis=0) - jnp.mean(xf, axis=0) ** 2
  tol_abs = tol * jnp.mean(jnp.maximum(var, 0.0))
  if init is None:
    init = jax.vmap(lambda key: _kmeans_plus_plus(x, w, key, ops, n_trials, None))(jax.random.split(rng, runs))
  valid = jnp.arange(k_max)[None, :] < jnp.asarray(ks)[:, None]  # [K, k_max]

  def one(seeds, mask):
    masked = ops._replace(valid=mask)
    centers, n_iter, converged = _lloyd(x, w, seeds[None], tol_abs, masked, max_iter, None)
    (_, counts, inertia), labels = masked.accumulate(x, w, centers[0], with_labels=True)
    centers = jnp.where(mask[:, None], centers[0], jnp.nan)
    return KMeansRangeOutput(centers, labels, inertia, n_iter[0], converged[0], counts)

  return jax.vmap(lambda seeds: jax.vmap(lambda mask: one(seeds, mask))(valid))(init)


def _check_init(init, *, batched, n_init, k, d, x_shape):
  validation.check_float_array(init, "init", ranks=(3, 4) if batched else (2, 3))
  given = tuple(init.shape)
  if init.ndim == (3 if batched else 2):
    init = init[..., None, :, :]  # one restart
  want = ((x_shape[0],) if batched else ()) + (n_init, k, d)
  if tuple(init.shape) != want:
    raise ValueError(f"init has shape {given}, expected {want[:-3] + want[-2:]} or {want} "
                     f"for k={k}, n_init={n_init}, d={d}")
  return jnp.asarray(init, jnp.float32)


def _solve_impl(x, w, init, rng, tol, *, k, n_init, max_iter, n_trials, chunk_size, spherical,
                precision, sharding, batched, split=False):
  solve = functools.partial(_solve_local, k=k, n_init=n_init, max_iter=max_iter, n_trials=n_trials,
                            chunk_size=chunk_size, spherical=spherical, precision=precision, split=split)
  if batched:
    rngs = jax.random.split(rng, x.shape[0])
    in_axes = (0, 0, None if init is None else 0, 0, None)
    return jax.vmap(functools.partial(solve, axis_name=None), in_axes=in_axes)(x, w, init, rngs, tol)
  if sharding is None:
    return solve(x, w, init, rng, tol, axis_name=None)
  rows = P(sharding.axes)
  # check_vma=False: the collectives are explicit (psum of partial sums, all_gather of candidates),
  # and scan carries start replicated then become per-device partial sums.
  sharded = jax.shard_map(
      functools.partial(solve, axis_name=sharding.axes), mesh=sharding.mesh,
      in_specs=(rows, rows, P(), P(), P()),
      out_specs=KMeansOutput(P(), rows, P(), P(), P(), P()), check_vma=False)
  return sharded(x, w, init, rng, tol)


_STATIC = ("k", "n_init", "max_iter", "n_trials", "chunk_size", "spherical", "precision", "sharding",
           "batched", "split")
_solve = jax.jit(_solve_impl, static_argnames=_STATIC)


def _solve_local(x, w, init, rng, tol, *, k, n_init, max_iter, n_trials, chunk_size, spherical,
                 precision, axis_name, split=False):
  """One problem on this device's rows; collectives over ``axis_name`` make it global."""
  psum = (lambda v: lax.psum(v, axis_name)) if axis_name else (lambda v: v)
  ops = _Ops(k=k, chunk_size=chunk_size, spherical=spherical, precision=precision, psum=psum,
             split_key=jax.random.fold_in(rng, 1) if split else None)

  # scikit-learn's tolerance: relative to the mean per-feature variance of the (unweighted) data.
  xf = x.astype(jnp.float32)
  n_total = psum(jnp.float32(x.shape[0]))
  mean = psum(jnp.sum(xf, axis=0)) / n_total
  var = psum(jnp.sum(xf * xf, axis=0)) / n_total - mean * mean
  tol_abs = tol * jnp.mean(jnp.maximum(var, 0.0))

  if init is None:
    keys = jax.random.split(rng, n_init)
    centers = jax.vmap(lambda key: _kmeans_plus_plus(x, w, key, ops, n_trials, axis_name))(keys)
  else:
    centers = normalize_rows(init) if spherical else init
  centers, n_iter, converged = _lloyd(x, w, centers, tol_abs, ops, max_iter, axis_name)

  best = 0
  if n_init > 1:
    inertia = jax.vmap(lambda c: ops.accumulate(x, w, c)[2])(centers)
    best = jnp.argmin(inertia)
  (_, counts, inertia), labels = ops.accumulate(x, w, centers[best], with_labels=True)
  return KMeansOutput(centers[best], labels, inertia, n_iter[best], converged[best], counts)


class _Ops(NamedTuple):
  """The chunked passes over local rows, closed over the static settings (and, for :func:`kmeans_range`, the
  ``[k]`` mask of the centers in use: the others are never nearest, never re-seeded)."""
  k: int
  chunk_size: int
  spherical: bool
  precision: object
  psum: object
  valid: object = None
  split_key: object = None  # empty="split": the key of the donors' draws (folded with the iteration)

  def rows(self, xc):
    xc = xc.astype(jnp.float32)
    return normalize_rows(xc) if self.spherical else xc

  def accumulate(self, x, w, centers, with_labels=False):
    """Per-cluster weighted sums and weights, and the inertia, of the assignment to ``centers``."""
    def step(carry, chunk):
      xc, wc = self.rows(chunk[0]), chunk[1]
      labels, dist = nearest(xc, centers, spherical=self.spherical, precision=self.precision, valid=self.valid)
      sums, counts, inertia = carry
      carry = (sums + jax.ops.segment_sum(xc * wc[:, None], labels, self.k),
               counts + jax.ops.segment_sum(wc, labels, self.k),
               inertia + jnp.sum(wc * dist))
      return carry, (labels if with_labels else None)

    zeros = (jnp.zeros_like(centers), jnp.zeros(self.k, jnp.float32), jnp.float32(0))
    carry, labels = scan_chunks(step, zeros, (x, w), self.chunk_size)
    carry = self.psum(carry)
    return (carry, labels) if with_labels else carry

  def distances(self, xc, points):
    """``[m, L]`` distance of each row to each point (``|x - p|^2`` or ``1 - cos``)."""
    dots = jnp.matmul(xc, points.T, precision=self.precision)
    if self.spherical:
      return 1.0 - dots
    sq = jnp.sum(xc * xc, axis=-1)[:, None] - 2.0 * dots + jnp.sum(points * points, axis=-1)
    return jnp.maximum(sq, 0.0)

  def min_distance(self, x, points, valid=None):
    """``[n]`` distance of each row to its nearest point in ``points`` (those ``valid`` only, if given)."""
    def step(carry, chunk):
      dist = self.distances(self.rows(chunk[0]), points)
      return carry, jnp.min(dist if valid is None else jnp.where(valid, dist, jnp.inf), axis=-1)

    return scan_chunks(step, None, (x,), self.chunk_size)[1]


def _lloyd(x, w, centers, tol_abs, ops, max_iter, axis_name):
  """Lloyd iterations on ``[r, k, d]`` restarts until every restart converged or ``max_iter``."""
  r = centers.shape[0]

  def cond(state):
    _, _, converged, it = state
    return (it < max_iter) & ~jnp.all(converged)

  def body(state):
    centers, n_iter, converged, it = state
    sums, counts, _ = jax.vmap(lambda c: ops.accumulate(x, w, c))(centers)
    new = jnp.where(counts[..., None] > 0, sums / jnp.maximum(counts, 1e-30)[..., None], centers)
    empty = counts <= 0 if ops.valid is None else (counts <= 0) & ops.valid
    # The cond sits outside the vmap so the re-seeding pass runs only when a cluster is empty.
    if ops.split_key is not None:
      keys = jax.random.split(jax.random.fold_in(ops.split_key, it), r)
      reseed = lambda: jax.vmap(_split)(new, counts, empty, keys)
    else:
      reseed = lambda: jax.vmap(lambda c, nw, e: _reseed(x, w, c, nw, e, ops, axis_name))(centers, new, empty)
    new = lax.cond(jnp.any(empty), reseed, lambda: new)
    if ops.spherical:
      new = normalize_rows(new)
    shift = jnp.sum((new - centers) ** 2, axis=(1, 2))
    new = jnp.where(converged[:, None, None], centers, new)
    n_iter = n_iter + (~converged).astype(jnp.int32)
    return new, n_iter, converged | (shift <= tol_abs), it + 1

  init = (centers, jnp.zeros(r, jnp.int32), jnp.zeros(r, bool), jnp.int32(0))
  centers, n_iter, converged, _ = lax.while_loop(cond, body, init)
  return centers, n_iter, converged


SPLIT_EPS = 1.0 / 1024  # faiss's relative perturbation of a split cluster's two centers


def _split(new, counts, empty, key):
  """DeepCluster's empty clusters (see :func:`kmeans`' ``empty="split"``): in order, each empty cluster takes a
  non-empty one drawn by size (the sizes updated as clusters are split: each half keeps half the weight)."""
  k, d = new.shape
  sign = jnp.where(jnp.arange(d) % 2 == 0, 1.0, -1.0) * SPLIT_EPS

  def one(carry, j):
    new, counts = carry
    donor = jax.random.choice(jax.random.fold_in(key, j), k, p=counts / jnp.sum(counts))

    def split():
      center, half = new[donor], counts[donor] / 2
      return (new.at[j].set(center * (1 + sign)).at[donor].set(center * (1 - sign)),
              counts.at[j].set(half).at[donor].set(half))

    return lax.cond(empty[j], split, lambda: (new, counts)), None

  (new, _), _ = lax.scan(one, (new, counts.astype(jnp.float32)), jnp.arange(k))
  return new


def _reseed(x, w, centers, new, empty, ops, axis_name):
  """Moves each empty cluster onto one of the points farthest from their current centers."""
  k = centers.shape[0]
  m = min(k, x.shape[0])
  dist = ops.min_distance(x, centers, ops.valid)
  dist = jnp.where(w > 0, dist, -jnp.inf)  # zero-weight rows (padding) are never chosen
  far_dist, far_idx = lax.top_k(dist, m)
  far = ops.rows(x[far_idx])
  if axis_name:  # global farthest points: gather every device's candidates, keep the best m
    far_dist = lax.all_gather(far_dist, axis_name, tiled=True)
    far = lax.all_gather(far, axis_name, tiled=True)
    far_dist, order = lax.top_k(far_dist, m)
    far = far[order]
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, m - 1)
  return jnp.where(empty[:, None], far[rank], new)


def _kmeans_plus_plus(x, w, key, ops, n_trials, axis_name):
  """Greedy k-means++: each new center is the best of ``n_trials`` D^2-sampled candidates."""
  k = ops.k
  d = x.shape[1]
  wf = w.astype(jnp.float32)
  key_first, key_rest = jax.random.split(key)
  first = _sample_rows(x, wf, key_first, 1, axis_name, ops)
  closest = ops.min_distance(x, first)
  centers = jnp.zeros((k, d), jnp.float32).at[0].set(first[0])

  def step(i, carry):
    centers, closest = carry
    candidates = _sample_rows(x, wf * closest, jax.random.fold_in(key_rest, i), n_trials, axis_name, ops)

    def potential(total, chunk):
      xc, wc, cc = ops.rows(chunk[0]), chunk[1], chunk[2]
      dist = jnp.minimum(cc[:, None], ops.distances(xc, candidates))
      return total + jnp.sum(wc[:, None] * dist, axis=0), None

    total = ops.psum(scan_chunks(potential, jnp.zeros(n_trials, jnp.float32), (x, wf, closest), ops.chunk_size)[0])
    best = candidates[jnp.argmin(total)]
    closest = jnp.minimum(closest, ops.min_distance(x, best[None]))
    return centers.at[i].set(best), closest

  centers, _ = lax.fori_loop(1, k, step, (centers, closest))
  return centers


def _sample_rows(x, p, key, num, axis_name, ops):
  """``num`` rows drawn with probability proportional to ``p`` over the rows of all devices.

  Inverse-CDF sampling: the same uniform draws on every device are located in the global
  cumulative sum (device offsets from an all-gather), so the draw equals the single-device one.
  """
  cdf = jnp.cumsum(p)
  local_total = cdf[-1]
  if axis_name:
    totals = lax.all_gather(local_total, axis_name)
    me = lax.axis_index(axis_name)
  else:
    totals, me = local_total[None], 0
  ends = jnp.cumsum(totals)
  u = jax.random.uniform(key, (num,)) * ends[-1]
  owner = jnp.clip(jnp.searchsorted(ends, u, side="right"), 0, totals.shape[0] - 1)
  idx = jnp.clip(jnp.searchsorted(cdf, u - (ends[me] - totals[me]), side="right"), 0, x.shape[0] - 1)
  rows = jnp.where((owner == me)[:, None], ops.rows(x[idx]), 0.0)
  return ops.psum(rows)
