"""Kernel benchmarks: jaxclust vs scikit-learn / faiss-cpu (k-means), faiss (kNN), ott-jax (Sinkhorn).

Every peer runs in the same process on the same data; the script prints ratio columns and writes
its tables into experiments/RESULTS.md between markers named after the device, replacing an older
run on the same kind of device.

  python experiments/bench_kernels.py                 # full set (about 15 min on 2 CPU cores)
  python experiments/bench_kernels.py --quick         # small sizes, to check the script works
  python experiments/bench_kernels.py --peak-tflops 494.7   # on a GPU: report % of TF32 peak

Needs the bench extras: pip install '.[test,bench]' (faiss-cpu, ott-jax; scikit-learn is a core dependency).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxclust

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
  cpu = platform.processor()
  try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  dev = jax.devices()[0]
  versions = [f"jax {jax.__version__}", f"Python {platform.python_version()}"]
  for name in ("sklearn", "faiss", "ott"):
    module = try_import(name)
    versions.append(f"{name} {getattr(module, '__version__', '?')}" if module else f"{name} not installed")
  return (f"{dev.platform.upper()} device: {dev.device_kind}; host: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; "
          + ", ".join(versions))


def timed(fn, repeats):
  """(best seconds over ``max(repeats, 1)`` runs after a warm-up call, warm-up seconds)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best, first


def try_import(name):
  try:
    return __import__(name)
  except ImportError:
    return None


def bench_kmeans(configs, iters, peak):
  sklearn_cluster = try_import("sklearn.cluster") and __import__("sklearn.cluster", fromlist=["KMeans"])
  faiss = try_import("faiss")
  if faiss:
    faiss.omp_set_num_threads(os.cpu_count())
  rows = []
  for n, d, k in configs:
    rng = np.random.default_rng(0)
    # Standard normal data, as in the reference timing: no cluster structure, so no library
    # converges early and all run exactly `iters` iterations (asserted below).
    x = rng.standard_normal((n, d), dtype=np.float32)
    init = x[rng.choice(n, k, replace=False)]
    xj, initj = jax.device_put(x), jax.device_put(init)
    repeats = 2 if 2 * n * d * k * iters < 2e11 else 0
    ours = lambda: jaxclust.kmeans(xj, k, rng=jax.random.key(0), init=initj, max_iter=iters, tol=0.0)
    t_jax, t_first = timed(ours, repeats)
    out = ours()
    assert int(out.n_iter) == iters, int(out.n_iter)
    row = {"n": n, "d": d, "k": k, "jax": t_jax, "first": t_first, "inertia": float(out.inertia)}
    # distance GEMM flops: iters Lloyd passes + the final labelling pass
    row["tflops"] = 2 * n * d * k * (iters + 1) / t_jax / 1e12
    if sklearn_cluster:
      km = sklearn_cluster.KMeans(k, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd")
      start = time.perf_counter()
      km.fit(x)
      row["sklearn"] = time.perf_counter() - start
      assert km.n_iter_ == iters, km.n_iter_
      row["sklearn_inertia"] = float(km.inertia_)
    if faiss:
      # max_points_per_centroid=n: use every point (faiss subsamples to 256 k points by default)
      km = faiss.Kmeans(d, k, niter=iters, max_points_per_centroid=n, min_points_per_centroid=1, verbose=False)
      start = time.perf_counter()
      km.train(x, init_centroids=init)
      row["faiss"] = time.perf_counter() - start
    rows.append(row)
    print(fmt_kmeans_row(row, iters, peak), flush=True)
  return rows


def fmt_kmeans_row(r, iters, peak):
  ratio = lambda peer: f"{r[peer] / r['jax']:.2f}" if peer in r else "n/a"
  sec = lambda peer: f"{r[peer]:.3f}" if peer in r else "n/a"
  best_peer = min([r[p] for p in ("sklearn", "faiss") if p in r], default=None)
  met = "n/a" if best_peer is None else ("yes" if r["jax"] <= best_peer else "no")
  util = f" {100 * r['tflops'] / peak:.1f}% |" if peak else ""
  return (f"| {r['n']:,} | {r['d']} | {r['k']} | {r['jax']:.3f} | {1000 * r['jax'] / iters:.1f} | {r['first']:.1f} | "
          f"{sec('sklearn')} | {sec('faiss')} | {ratio('sklearn')} | {ratio('faiss')} | {met} | "
          f"{r['tflops']:.3f} |{util}")


def bench_knn(configs):
  faiss = try_import("faiss")
  rows = []
  for n_db, n_q, d, k in configs:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n_db, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:n_q] if n_q == n_db else rng.normal(size=(n_q, d)).astype(np.float32)
    if n_q != n_db:
      q /= np.linalg.norm(q, axis=1, keepdims=True)
    xj, qj = jax.device_put(x), jax.device_put(q)
    query = None if n_q == n_db else qj
    t_jax, t_first = timed(lambda: jaxclust.knn(xj, k, query=query, metric="cosine"), 0)
    ours = np.asarray(jaxclust.knn(xj, k, query=query, metric="cosine").indices)
    row = {"n_db": n_db, "n_q": n_q, "d": d, "k": k, "jax": t_jax, "first": t_first}
    if faiss:
      start = time.perf_counter()
      index = faiss.IndexFlatIP(d)
      index.add(x)
      _, theirs = index.search(q, k)
      row["faiss"] = time.perf_counter() - start
      row["agree"] = float((ours == theirs).mean())
    rows.append(row)
    print(fmt_knn_row(row), flush=True)
  return rows


def fmt_knn_row(r):
  faiss_s = f"{r['faiss']:.3f}" if "faiss" in r else "n/a"
  ratio = f"{r['faiss'] / r['jax']:.2f}" if "faiss" in r else "n/a"
  met = ("yes" if r["jax"] <= r["faiss"] else "no") if "faiss" in r else "n/a"
  agree = f"{100 * r['agree']:.3f}%" if "agree" in r else "n/a"
  return (f"| {r['n_db']:,} | {r['n_q']:,} | {r['d']} | {r['k']} | {r['jax']:.3f} | {r['first']:.1f} | {faiss_s} | "
          f"{ratio} | {met} | {agree} |")


def bench_sinkhorn(configs):
  ott = try_import("ott")
  rows = []
  for batch, protos, n_iter in configs:
    scores = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (batch, protos)), jnp.float32)
    ours_fn = jax.jit(lambda s: jaxclust.sinkhorn_knopp(s, epsilon=0.05, n_iter=n_iter))
    t_jax, _ = timed(lambda: ours_fn(scores), 5)
    row = {"batch": batch, "protos": protos, "n_iter": n_iter, "jax": t_jax}
    if ott:
      from ott.geometry import geometry
      from ott.problems.linear import linear_problem
      from ott.solvers.linear import sinkhorn

      solver = sinkhorn.Sinkhorn(min_iterations=n_iter, max_iterations=n_iter, inner_iterations=1,
                                 threshold=0.0, lse_mode=True)

      @jax.jit
      def ott_fn(s):
        geom = geometry.Geometry(cost_matrix=-s, epsilon=0.05)
        a, b = jnp.full(batch, 1.0 / batch), jnp.full(protos, 1.0 / protos)
        return solver(linear_problem.LinearProblem(geom, a, b)).matrix * batch

      row["ott"], _ = timed(lambda: ott_fn(scores), 5)
      # Both solve the same problem: at convergence (200 iterations) the couplings agree.
      ours_conv = np.asarray(jaxclust.sinkhorn_knopp(scores, epsilon=0.05, n_iter=200))
      conv = sinkhorn.Sinkhorn(max_iterations=200, min_iterations=200, inner_iterations=1, threshold=0.0)
      theirs = conv(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=-scores, epsilon=0.05))).matrix * batch
      row["diff"] = float(np.abs(ours_conv - np.asarray(theirs)).max())
    rows.append(row)
    print(fmt_sinkhorn_row(row), flush=True)
  return rows


def fmt_sinkhorn_row(r):
  ott_s = f"{1000 * r['ott']:.2f}" if "ott" in r else "n/a"
  ratio = f"{r['ott'] / r['jax']:.2f}" if "ott" in r else "n/a"
  diff = f"{r['diff']:.1e}" if "diff" in r else "n/a"
  return f"| {r['batch']:,} | {r['protos']:,} | {r['n_iter']} | {1000 * r['jax']:.2f} | {ott_s} | {ratio} | {diff} |"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes (minutes), to check the script")
  parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations per k-means run")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="device peak for the GEMM precision used (GPU: TF32), to report utilization")
  parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
  args = parser.parse_args()

  if args.quick:
    km = [(20_000, 32, 64)]
    kn = [(10_000, 10_000, 64, 10)]
    sk = [(1024, 300, 3)]
  else:
    km = [(200_000, 64, 256)] + [(n, d, k) for n in (100_000, 1_000_000) for d in (64, 128) for k in (100, 1000)]
    kn = [(50_000, 50_000, 128, 20), (200_000, 10_000, 64, 50)]
    sk = [(4096, 3000, 3), (32768, 3000, 3)]

  head = [f"Machine: {machine()}", f"Date: {datetime.date.today().isoformat()}",
          f"Command: `{' '.join([Path(sys.executable).name] + sys.argv)}`", ""]
  util_col = " % of peak |" if args.peak_tflops else ""
  util_sep = "---|" if args.peak_tflops else ""
  print("\n".join(head))
  km_head = [f"k-means, {args.iters} Lloyd iterations from the same initial centers (random data points), "
             "standard normal data; seconds for the whole fit after a warm-up call (first call, with compilation, listed apart); ratio = peer time / "
             "jaxclust time (> 1: jaxclust faster); goal: jaxclust at least as fast as the faster peer.", "",
             f"| n | d | k | jaxclust s | ms/iter | first call s | sklearn s | faiss s | sklearn/jax | faiss/jax | goal met | TFLOP/s |{util_col}",
             f"|---|---|---|---|---|---|---|---|---|---|---|---|{util_sep}"]
  print("\n".join(km_head))
  km_rows = bench_kmeans(km, args.iters, args.peak_tflops)
  kn_head = ["", "kNN, cosine (unit-normalized Gaussian data), exact top-k; jaxclust.knn vs faiss IndexFlatIP "
             "(index build + search); agree = share of identical neighbour indices.", "",
             "| database | queries | d | k | jaxclust s | first call s | faiss s | faiss/jax | goal met | agree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
  print("\n".join(kn_head))
  kn_rows = bench_knn(kn)
  sk_head = ["", "Sinkhorn-Knopp, SwAV problem (epsilon 0.05, uniform scores in [-1, 1]); both jitted, log domain; "
             "diff = max |codes| difference after 200 iterations of each (same problem, same answer).", "",
             "| batch | prototypes | iterations | jaxclust ms | ott-jax ms | ott/jax | diff at convergence |",
             "|---|---|---|---|---|---|---|"]
  print("\n".join(sk_head))
  sk_rows = bench_sinkhorn(sk)

  table = "\n".join(head + km_head + [fmt_kmeans_row(r, args.iters, args.peak_tflops) for r in km_rows] + kn_head
                    + [fmt_knn_row(r) for r in kn_rows] + sk_head + [fmt_sinkhorn_row(r) for r in sk_rows])
  if not args.no_write:
    write_section(f"bench_kernels {'quick ' if args.quick else ''}{jax.devices()[0].device_kind}", table)


def write_section(name, body):
  start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
  text = RESULTS.read_text() if RESULTS.exists() else "# Measured results\n"
  block = f"{start}\n{body}\n{end}"
  if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  RESULTS.write_text(text)
  print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
  main()
