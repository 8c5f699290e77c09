"""Where a k-means pass goes on the CPU: the score product alone, then the nearest center, then the cluster sums, each
as one compiled pass over 200,000 x 64 rows (k=256, jaxclust's chunks of 2,048 rows), against the same pass inside a
compiled loop (a bare fori_loop and jaxclust.kmeans).

  python experiments/kmeans_profile.py
"""
import time, statistics, functools, jax, jax.numpy as jnp, numpy as np
from jaxclust import bench
from jaxclust.kernels.chunks import nearest, scan_chunks
from jaxclust.kernels import kmeans as km
case = bench.Case("kmeans", 200_000, 64, 256, 20)
x = jax.device_put(case.data()); c = jax.device_put(case.init(case.data()))
chunk = 2048
@jax.jit
def gemm_only(x, c):
  return scan_chunks(lambda carry, ch: (carry + jnp.sum(ch[0] @ c.T), None), 0.0, (x,), chunk)[0]
@jax.jit
def assign(x, c):
  def step(carry, ch):
    labels, dist = nearest(ch[0], c, spherical=False)
    return carry + jnp.sum(dist) + jnp.sum(labels), None
  return scan_chunks(step, 0.0, (x,), chunk)[0]
@jax.jit
def accumulate(x, c):
  def step(carry, ch):
    labels, dist = nearest(ch[0], c, spherical=False)
    return (carry[0] + jax.ops.segment_sum(ch[0], labels, 256), carry[1] + jnp.sum(dist)), None
  return scan_chunks(step, (jnp.zeros((256, 64)), 0.0), (x,), chunk)[0]
def t(f):
  jax.block_until_ready(f(x, c)); ts = []
  for _ in range(5):
    s = time.perf_counter(); jax.block_until_ready(f(x, c)); ts.append(time.perf_counter() - s)
  return statistics.median(ts) * 1000
g, a, acc = t(gemm_only), t(assign), t(accumulate)
print(f"per pass over 200,000 x 64, k=256, chunks of {chunk}: score product alone {g:.1f} ms; + nearest center "
      f"{a:.1f} ms; + cluster sums (segment_sum) {acc:.1f} ms")
acc_v = jax.jit(lambda x, cs: jax.vmap(lambda c: accumulate(x, c))(cs))
jax.block_until_ready(acc_v(x, c[None])); ts = []
for _ in range(5):
  s = time.perf_counter(); jax.block_until_ready(acc_v(x, c[None])); ts.append(time.perf_counter() - s)
print(f"the same pass under vmap over 1 restart: {statistics.median(ts)*1000:.1f} ms")
from jaxclust.kernels.kmeans import _Ops
ops = _Ops(k=256, chunk_size=2048, spherical=False, precision=None, psum=lambda v: v)
w = jnp.ones(200_000)
f = jax.jit(lambda x, c: ops.accumulate(x, w, c))
jax.block_until_ready(f(x, c)); ts = []
for _ in range(5):
  s = time.perf_counter(); jax.block_until_ready(f(x, c)); ts.append(time.perf_counter() - s)
print(f"jaxclust's accumulate (weighted): {statistics.median(ts)*1000:.1f} ms")
fv = jax.jit(lambda x, cs: jax.vmap(lambda c: ops.accumulate(x, w, c))(cs))
jax.block_until_ready(fv(x, c[None])); ts = []
for _ in range(5):
  s = time.perf_counter(); jax.block_until_ready(fv(x, c[None])); ts.append(time.perf_counter() - s)
print(f"jaxclust's accumulate under vmap over 1 restart: {statistics.median(ts)*1000:.1f} ms")
from jax import lax
def lloyd(x, c):
  def body(i, c):
    sums, counts, _ = ops.accumulate(x, w, c)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-30)[:, None], c)
  return lax.fori_loop(0, 20, body, c)
fl = jax.jit(lloyd)
jax.block_until_ready(fl(x, c)); ts = []
for _ in range(3):
  s = time.perf_counter(); jax.block_until_ready(fl(x, c)); ts.append(time.perf_counter() - s)
print(f"20 passes in a fori_loop: {statistics.median(ts)*1000/20:.1f} ms per pass")
import jaxclust
fk = lambda: jaxclust.kmeans(x, 256, rng=jax.random.key(0), init=c, max_iter=20, tol=0.0)
jax.block_until_ready(fk()); ts = []
for _ in range(3):
  s = time.perf_counter(); jax.block_until_ready(fk()); ts.append(time.perf_counter() - s)
print(f"jaxclust.kmeans, 20 iterations: {statistics.median(ts)*1000/21:.1f} ms per pass")

def carried(x, c):  # the rows carried through the loop instead of closed over
  return lax.fori_loop(0, 20, lambda i, s: (s[0], update(s[0], s[1])), (x, c))[1]
def update(x, c):
  sums, counts, _ = ops.accumulate(x, w, c)
  return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1e-30)[:, None], c)
one = jax.jit(update)
def host(x, c):  # a host loop of one compiled pass
  for _ in range(20):
    c = one(x, c)
  return c
for name, f in (("the rows carried through a fori_loop", jax.jit(carried)), ("a host loop of one compiled pass", host)):
  jax.block_until_ready(f(x, c)); ts = []
  for _ in range(3):
    s = time.perf_counter(); jax.block_until_ready(f(x, c)); ts.append(time.perf_counter() - s)
  print(f"{name}: {statistics.median(ts) * 1000 / 20:.1f} ms per pass")
