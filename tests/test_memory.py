"""The memory bound promised in kmeans' docstring, checked on XLA's compiled buffer assignment.

Nothing is allocated: the program is compiled for abstract shapes and XLA reports its arguments,
outputs and temporaries.
"""

import math

import jax
import jax.numpy as jnp

from jaxclust.kernels import kmeans as kmeans_module
from jaxclust.kernels import knn as knn_module


def test_kmeans_10m_points_10k_centers_fits_16gb():
  n, d, k = 10_000_000, 128, 10_000
  compiled = kmeans_module._solve.lower(
      jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32), None,
      jax.ShapeDtypeStruct((), jax.random.key(0).dtype), jax.ShapeDtypeStruct((), jnp.float32),
      k=k, n_init=1, max_iter=300, n_trials=2 + int(math.log(k)), chunk_size=2**27 // k,  # accelerator default
      spherical=False, precision=None, sharding=None, batched=False).compile()
  mem = compiled.memory_analysis()
  x_bytes = n * d * 4
  assert mem.argument_size_in_bytes < x_bytes * 1.01
  # temporaries: the [chunk, k] block, centers and per-point arrays, never an [n, k] matrix (400 GB)
  assert mem.temp_size_in_bytes < 2 * 2**30, mem.temp_size_in_bytes
  assert mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes < 16 * 2**30


def test_knn_million_points_never_builds_the_n_by_n_matrix():
  n, d, k = 1_000_000, 128, 20
  compiled = knn_module._knn.lower(
      jax.ShapeDtypeStruct((n, d), jnp.float32), None, k=k, cosine=True, query_chunk=4096,
      db_chunk=2**27 // 4096, precision=None, sharding=None).compile()
  mem = compiled.memory_analysis()
  assert mem.temp_size_in_bytes < 2 * 2**30, mem.temp_size_in_bytes  # [n, n] would be 4 TB
