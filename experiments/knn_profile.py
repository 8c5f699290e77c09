"""Where jaxclust.knn spends its time on one database: the whole search against its score matrix products alone.

The same blocks as ``jaxclust.knn`` (its default query and database chunks), each block's product reduced by a row
maximum instead of the top-k, so the difference is the selection and the merges:

  python experiments/knn_profile.py --n 200000 --d 64 --k 20 50
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxclust
from jaxclust.kernels import knn as knn_kernel
from jaxclust.kernels.chunks import normalize_rows, scan_chunks


def seconds(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    tick = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - tick)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=200_000)
  parser.add_argument("--d", type=int, default=64)
  parser.add_argument("--k", type=int, nargs="+", default=[20, 50])
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()
  x = np.random.default_rng(0).standard_normal((args.n, args.d), dtype=np.float32)
  x = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
  query_chunk = 256
  db_chunk = min(args.n, knn_kernel._BLOCK["cpu"] // query_chunk)

  @jax.jit
  def products(x):
    def per_query(carry, chunk):
      q = normalize_rows(chunk[0])

      def per_db(best, rows):
        return jnp.maximum(best, jnp.max(q @ normalize_rows(rows[0]).T, axis=-1)), None
      best, _ = scan_chunks(per_db, jnp.full(q.shape[0], -jnp.inf), (x,), db_chunk)
      return carry, best
    return scan_chunks(per_query, None, (x,), query_chunk)[1]

  gemm = seconds(lambda: products(x), args.repeats)
  print(f"n={args.n} d={args.d} blocks {query_chunk} x {db_chunk}; {jax.devices()[0].device_kind}")
  print(f"score products alone (row max): {gemm:.3f} s, {2 * args.n * args.n * args.d / gemm / 1e12:.3f} TFLOP/s")
  for k in args.k:
    whole = seconds(lambda: jaxclust.knn(x, k, metric="cosine"), args.repeats)
    print(f"k={k}: whole search {whole:.3f} s; selection and merges {whole - gemm:.3f} s "
          f"({100 * (whole - gemm) / whole:.0f}% of the search)")


if __name__ == "__main__":
  main()
