"""Host-side checks of user input, run before any kernel work.

Every failure is a ``ValueError`` whose message names the offending value (house style 10). Inside
an outer ``jit`` the inputs are tracers: shapes and dtypes are still checked, values cannot be.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np



class Diverged(RuntimeError):
  """A run whose loss or parameters stopped being finite: it stopped (the command line exits with code 3)."""

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


# The settings every driver shares, by their last name wherever they sit in a config
# (``pretrain.batch_size``, ``scan.epochs``, ...). Each driver still checks what depends on the data
# (counts bounded by the number of samples) and the choices among names.
_SETTING_INTS = {  # name: lowest allowed value
    "batch_size": 1, "epochs": 0, "warmup_epochs": 0, "checkpoint_every": 1, "keep_checkpoints": 1,
    "chunk_size": 1, "eval_every": 1, "freeze_prototypes_steps": 0, "queue_length": 0, "queue_size": 1,
    "queue_start_epoch": 0, "head_hidden": 1, "head_out": 1, "heads": 1, "latent": 1, "lr_decay_epochs": 1,
    "max_steps": 1, "update_interval": 1, "kmeans_n_init": 1, "neighbors": 1, "readout_neighbors": 1,
    "prototypes": 1, "prototype_sets": 1, "bank_crops": 1, "count": 1, "strong_ops": 0, "n_clusters": -1, "seed": 0,
    "gmm_restarts": 1, "instance_dim": 1, "pca_dim": 1, "kmeans_iterations": 1, "restarts": 1}  # n_clusters -1: auto
_SETTING_FLOATS = {  # name: (low, high, whether low itself is allowed)
    "learning_rate": (0.0, np.inf, False), "temperature": (0.0, np.inf, False),
    "sinkhorn_epsilon": (0.0, np.inf, False),
    "min_learning_rate": (0.0, np.inf, True), "weight_decay": (0.0, np.inf, True), "gamma": (0.0, np.inf, True),
    "tol": (0.0, np.inf, True), "entropy_weight": (0.0, np.inf, True), "momentum": (0.0, 1.0, True),
    "lr_decay": (0.0, 1.0, False), "final_lr_fraction": (0.0, 1.0, True), "flip_p": (0.0, 1.0, True),
    "cutout": (0.0, 1.0, True), "threshold": (0.0, 1.0, True), "noise": (0.0, np.inf, True),
    "mask": (0.0, 1.0, True), "mix": (0.0, 1.0, True)}
_SETTING_BOOLS = ("augment", "standardize", "update_backbone", "kmeans_warm_start")
_SETTING_WIDTHS = ("hidden", "conv_channels", "cnn_channels", "mlp_widths")
_SETTING_CHOICES = {"optimizer": ("lars", "adam"), "pretext.optimizer": ("sgd", "lars"),
                    "cluster.optimizer": ("sgd", "adam")}  # by dotted name


def check_settings(config, prefix: str = "") -> None:
  """Refuses a config whose shared numeric settings are out of range (``batch_size=0``, a negative
  ``epochs``, a ``learning_rate`` of NaN, a crop scale above 1, ...), naming the setting and value."""
  for key, value in config.items():
    name = prefix + key
    if hasattr(value, "items"):
      check_settings(value, name + ".")
    elif key in _SETTING_INTS:
      check_count(value, name, low=_SETTING_INTS[key])
    elif key in _SETTING_FLOATS:
      low, high, closed = _SETTING_FLOATS[key]
      if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
      if not (np.isfinite(value) and (low <= value if closed else low < value) and value <= high):
        bound = f"{'>=' if closed else '>'} {low:g}" if high == np.inf else f"in {'[' if closed else '('}{low:g}, {high:g}]"
        raise ValueError(f"{name}={value} must be a finite number {bound}")
    elif name in _SETTING_CHOICES and value not in _SETTING_CHOICES[name]:
      raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, _SETTING_CHOICES[name]))}")
    elif key in _SETTING_BOOLS and not isinstance(value, bool):
      raise ValueError(f"{name}={value!r} must be True or False")
    elif key in _SETTING_WIDTHS:
      for i, width in enumerate(value):
        check_count(width, f"{name}[{i}]", low=1)
    elif key == "crop_scale":
      _check_scale(value, name)
    elif key == "crops":
      for i, crop in enumerate(value):
        if len(crop) != 3:
          raise ValueError(f"{name}[{i}]={crop!r} must be (count, size, (low, high))")
        count, size, scale = crop
        check_count(count, f"{name}[{i}] count", low=1)
        check_count(size, f"{name}[{i}] size", low=1)
        _check_scale(scale, f"{name}[{i}] scale")


def _check_scale(scale, name):
  """A crop's area fraction range ``(low, high)`` with ``0 < low <= high <= 1``."""
  if len(scale) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale):
    raise ValueError(f"{name}={scale!r} must be two numbers (low, high)")
  if not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f"{name}={tuple(scale)} must satisfy 0 < low <= high <= 1")
