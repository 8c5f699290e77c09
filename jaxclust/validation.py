"""Host-side checks of user input, run before any kernel work.

Every failure is a ``ValueError`` whose message names the offending value (house style 10). Inside
an outer ``jit`` the inputs are tracers: shapes and dtypes are still checked, values cannot be.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def host_int(value) -> int | None:
  """``int(value)`` or None when ``value`` is traced (under an outer ``jit`` it cannot be read)."""
  return int(value) if is_concrete(value) else None


@jax.jit
def _non_finite_count(x):
  return jnp.sum(~jnp.isfinite(x))


def check_float_array(x, name: str, ranks: tuple[int, ...]) -> None:
  """Checks that ``x`` is a floating-point array of one of ``ranks`` with only finite values."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise ValueError(f"{name} must be an array, got {type(x).__name__}")
  if x.ndim not in ranks:
    raise ValueError(f"{name} must have rank {' or '.join(map(str, ranks))}, got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype={x.dtype}; cast it first, e.g. "
                     f"{name}.astype(np.float32)")
  if 0 in x.shape:
    raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
  if not is_concrete(x):
    return
  # One fused reduction on device (works on sharded global arrays); locate the culprit only on failure.
  bad = int((~np.isfinite(x)).sum()) if isinstance(x, np.ndarray) else host_int(_non_finite_count(x))
  if bad:
    where = np.argwhere(~np.isfinite(np.asarray(x)))[0]
    raise ValueError(f"{name} has {bad} non-finite values (NaN or Inf); the first is at index "
                     f"{tuple(int(i) for i in where)}")


def check_count(value, name: str, *, low: int, high: int | None = None, high_name: str = "") -> int:
  """Checks that ``value`` is an int with ``low <= value <= high``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r}")
  if value < low:
    raise ValueError(f"{name}={value} must be >= {low}")
  if high is not None and value > high:
    raise ValueError(f"{name}={value} must be <= {high_name}={high}")
  return int(value)


def check_positive(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
    raise ValueError(f"{name} must be a number, got {value!r}")
  if not np.isfinite(value) or value <= 0:
    raise ValueError(f"{name}={value} must be a finite number > 0")
  return float(value)


def check_weights(w, n_shape: tuple[int, ...], name: str = "sample_weight") -> None:
  """Checks per-sample weights: shape ``n_shape``, finite, >= 0, not all zero."""
  check_float_array(w, name, ranks=(len(n_shape),))
  if tuple(w.shape) != tuple(n_shape):
    raise ValueError(f"{name} has shape {tuple(w.shape)} but x has {n_shape} samples")
  if is_concrete(w):
    w_np = np.asarray(w)
    if (w_np < 0).any():
      raise ValueError(f"{name} has {(w_np < 0).sum()} negative entries, e.g. {w_np[w_np < 0][0]}")
    if (w_np.reshape(-1, n_shape[-1]).sum(-1) <= 0).any():
      raise ValueError(f"{name} sums to zero: no sample carries weight")


def check_rng(rng, name: str = "rng") -> None:
  if not hasattr(rng, "dtype"):
    raise ValueError(f"{name} must be a jax.random key, got {type(rng).__name__}")
  if not (jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) or (rng.dtype == jnp.uint32 and rng.shape[-1:] == (2,))):
    raise ValueError(f"{name} must be a jax.random key, got dtype={rng.dtype} shape={tuple(rng.shape)}")
