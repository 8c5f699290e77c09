"""Meshes and row sharding: the one place that knows how kernels map onto devices.

Kernels accept a global ``jax.Array`` whose rows (axis 0) are sharded over a ``Mesh`` with
``NamedSharding(mesh, P(axes))``. They then run their per-device loop under ``jax.shard_map`` and
combine partial sums with collectives over ``axes``; everything else is replicated. Arrays that are
not row-sharded run the same code with ``axis_name=None``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


class RowSharding(NamedTuple):
  mesh: Mesh
  axes: str | tuple[str, ...]  # mesh axes that split the rows, as written in the PartitionSpec
  n_shards: int


def make_mesh(n_devices: int | None = None, axis: str = "data") -> Mesh:
  """A 1-D data-parallel mesh over the first ``n_devices`` devices (all by default)."""
  devices = jax.devices()
  n_devices = len(devices) if n_devices is None else n_devices
  if not 1 <= n_devices <= len(devices):
    raise ValueError(f"n_devices={n_devices} must be in [1, {len(devices)}] (available devices)")
  return Mesh(np.asarray(devices[:n_devices]), (axis,), axis_types=(AxisType.Auto,))


def shard_rows(x, mesh: Mesh, axis: str | tuple[str, ...] = "data") -> jax.Array:
  """Places ``x`` on ``mesh`` with its rows split over ``axis`` (all other dims replicated)."""
  n_shards = math.prod(mesh.shape[a] for a in _as_tuple(axis))
  if x.shape[0] % n_shards:
    raise ValueError(f"x has {x.shape[0]} rows, not divisible by the {n_shards} shards of mesh axis {axis!r}")
  return jax.device_put(x, NamedSharding(mesh, P(axis)))


def row_sharding(x) -> RowSharding | None:
  """The mesh and axes over which ``x``'s rows are sharded, or None if they are not."""
  sharding = getattr(x, "sharding", None)
  if not isinstance(sharding, NamedSharding) or isinstance(x, jax.core.Tracer):
    return None
  spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
  if any(s is not None for s in spec[1:]):
    raise ValueError(f"only the rows (axis 0) of x may be sharded, got PartitionSpec {sharding.spec}")
  if spec[0] is None:
    return None
  n_shards = math.prod(sharding.mesh.shape[a] for a in _as_tuple(spec[0]))
  if n_shards == 1:
    return None
  if x.shape[0] % n_shards:
    raise ValueError(f"x has {x.shape[0]} rows, not divisible by its {n_shards} shards")
  return RowSharding(sharding.mesh, spec[0], n_shards)


def _as_tuple(axis) -> tuple[str, ...]:
  return axis if isinstance(axis, tuple) else (axis,)


def global_rows(x: np.ndarray, mesh: Mesh, axis: str = "data") -> tuple[jax.Array, jax.Array]:
  """The whole dataset as a row-sharded global array, built from this process's rows only.

  Every process passes the same host array ``x`` ([n, ...]; each host reads its own copy of the
  files) and contributes only its block of rows, so the same code runs on one or many hosts. Rows
  are padded with zeros to a multiple of the number of shards; the returned ``mask`` ([n_pad]
  bool, sharded the same way) is False on the padding, which whole-dataset passes must ignore.
  """
  n = x.shape[0]
  shards = math.prod(mesh.shape[a] for a in _as_tuple(axis))
  n_pad = -(-n // shards) * shards
  per_process = n_pad // jax.process_count()
  rows = np.arange(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  local = np.zeros((per_process, *x.shape[1:]), x.dtype)
  local[rows < n] = x[rows[rows < n]]
  sharding = NamedSharding(mesh, P(axis))
  return (jax.make_array_from_process_local_data(sharding, local, (n_pad, *x.shape[1:])),
          jax.make_array_from_process_local_data(sharding, rows < n, (n_pad,)))


def put(tree, mesh: Mesh, spec: P = P()):
  """Places a pytree of host or single-device arrays, identical on every process, on ``mesh``."""
  sharding = NamedSharding(mesh, spec)

  def one(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(one, tree)


def fetch(a) -> np.ndarray:
  """A global array's value on every process as numpy (gathered across hosts when needed)."""
  if getattr(a, "is_fully_addressable", True):
    return np.asarray(a)
  from jax.experimental import multihost_utils  # only multi-host runs need it
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))
