"""Row-chunked passes over large arrays and the nearest-center rule shared by the k-means kernels.

Memory is what limits clustering millions of points, so every pass over ``x`` walks it in row
chunks of a static size: the ``[chunk, k]`` score block is the only temporary that grows with k,
and it is sized to stay in cache on CPU and to amortize kernel launches on accelerators.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

# Elements of the [chunk, k] score block. On CPU 2**19 floats (2 MiB) keeps it in L2/L3 (measured:
# chunked max+argmin at n=200k, k=256 runs 2.7x faster than unchunked); accelerators want big blocks.
_SCORE_BLOCK = {"cpu": 2**19}
_SCORE_BLOCK_ACCELERATOR = 2**27


def default_chunk_size(n: int, width: int) -> int:
  """Rows per chunk so that a ``[chunk, width]`` float32 block fits the platform's budget."""
  budget = _SCORE_BLOCK.get(jax.default_backend(), _SCORE_BLOCK_ACCELERATOR)
  return int(max(8, min(n, budget // max(width, 1))))


def scan_chunks(fn: Callable, carry, arrays: tuple, chunk_size: int):
  """Folds ``fn(carry, chunk) -> (carry, out)`` over row chunks of ``arrays`` without copying them.

  Chunks are ``lax.dynamic_slice`` views of full size ``chunk_size`` followed by one static tail
  chunk, so ``x`` is never padded or reshaped (a padded copy of a 5 GB ``x`` would double memory).

  Returns:
    ``(carry, outs)`` with the per-chunk outputs concatenated along axis 0 (``None`` if ``fn``
    returns ``None`` as its output).
  """
  n = arrays[0].shape[0]
  chunk_size = min(chunk_size, n)
  n_full, tail = divmod(n, chunk_size)

  def body(carry, i):
    chunk = tuple(lax.dynamic_slice_in_dim(a, i * chunk_size, chunk_size) for a in arrays)
    return fn(carry, chunk)

  carry, outs = lax.scan(body, carry, jnp.arange(n_full))
  outs = jax.tree.map(lambda o: o.reshape((n_full * chunk_size,) + o.shape[2:]), outs)
  if tail:
    carry, tail_outs = fn(carry, tuple(a[n_full * chunk_size:] for a in arrays))
    outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, tail_outs)
  return carry, outs


def normalize_rows(x, eps: float = 1e-12):
  return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def nearest(xc, centers, *, spherical: bool, precision=None, valid=None):
  """Nearest center of each row of ``xc``.

  Scores are ``x.c - |c|^2 / 2`` (or ``x.c`` for unit vectors), whose argmax is the argmin of
  ``|x - c|^2``; this form is one GEMM plus a bias, never an ``[n, k, d]`` broadcast.

  Args:
    xc: ``[m, d]`` points (rows already unit-normalized when ``spherical``).
    centers: ``[k, d]``.
    spherical: score by cosine similarity; the distance is then ``1 - cos``.
    precision: ``lax.Precision`` of the GEMM (None: JAX default, TF32 on recent NVIDIA GPUs).
    valid: optional ``[k]`` bool; centers that are not valid are never chosen.

  Returns:
    ``(labels [m] int32, dist [m])`` with ``dist`` the squared Euclidean distance (clamped at 0)
    or ``1 - cos``. Ties go to the lowest center index.
  """
  k = centers.shape[0]
  scores = jnp.matmul(xc, centers.T, precision=precision)
  if not spherical:
    scores = scores - 0.5 * jnp.sum(centers * centers, axis=-1)
  if valid is not None:
    scores = jnp.where(valid, scores, -jnp.inf)
  best = jnp.max(scores, axis=-1)
  # The first index attaining the max: a plain max + masked min fuses with the GEMM epilogue on XLA
  # CPU, where the variadic-reduce argmax is 2.7x slower (measured at n=200k, d=64, k=256).
  labels = jnp.min(jnp.where(scores == best[:, None], jnp.arange(k, dtype=jnp.int32), k), axis=-1)
  if spherical:
    dist = 1.0 - best
  else:
    dist = jnp.maximum(jnp.sum(xc * xc, axis=-1) - 2.0 * best, 0.0)
  return labels, dist
