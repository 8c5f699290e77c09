"""``jaxclust bench kernels`` and ``jaxclust bench steps``: throughput on synthetic data.

``kernels``: the kernels, against peers measured in the same run. ``steps``: every method's training, as the
engine runs its stages (:func:`steps`).

Every case draws its data with numpy from a fixed seed, so a peer (scikit-learn, faiss-cpu, ott-jax) run in its own
process (``python -m jaxclust.bench --peer CASE``) clusters exactly the same rows. Per case: the median seconds of
``repeats`` calls after a warm-up call (the warm-up's extra time, mostly compilation, apart), points per second,
the model's FLOP rate (each kernel's count stated in :data:`FLOPS`) and its share of the device's peak
(:func:`peak`), peak memory, and each peer's seconds with the ratio peer / jaxclust (above 1: jaxclust faster).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

KERNELS = ("kmeans", "knn", "sinkhorn", "gmm", "pca")

# Model FLOPs of one call, by kernel, from its case's sizes (documented, not measured).
FLOPS = {
    "kmeans": lambda c: 2 * c.n * c.d * c.k * (c.iters + 1),  # the distance GEMM of every Lloyd pass + the labels
    "knn": lambda c: 2 * c.n * c.n * c.d,  # every row against every row (the database is the query)
    "sinkhorn": lambda c: 4 * c.n * c.k * c.iters,  # per iteration two scalings, each a multiply and a sum
    "gmm": lambda c: 8 * c.n * c.d * c.k * c.iters,  # E-step and M-step, each two [n, d] x [d, k] products
    "pca": lambda c: 2 * c.n * c.d * c.d,  # the [d, d] scatter matrix (the eigendecomposition of d^3 left out)
}

# Datasheet dense peaks, TFLOP/s: (float32 GEMM as the accelerator runs it (TF32 on NVIDIA), bfloat16).
DATASHEET = (("H100 PCIe", (378.0, 756.0)), ("H100", (494.7, 989.4)), ("H200", (494.7, 989.4)),
             ("A100", (156.0, 312.0)), ("TPU v4", (137.5, 275.0)), ("TPU v5 lite", (98.5, 197.0)),
             ("TPU v5e", (98.5, 197.0)), ("TPU v5p", (229.5, 459.0)))


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark: ``kernel`` on ``n`` rows of ``d`` features; ``k`` clusters (kmeans, gmm), neighbours (knn),
  prototypes (sinkhorn, whose ``n`` is the batch) or components (pca); ``iters`` iterations (kmeans, sinkhorn,
  gmm). ``defaults=1`` (kmeans): every library with its own defaults (k-means++ seeding, up to 300 iterations
  until the center shift is below 1e-4 of the variance, one restart) instead of ``iters`` iterations from the same
  centers: the iterations each ran are reported."""
  kernel: str
  n: int
  d: int
  k: int
  iters: int = 10
  defaults: int = 0

  def data(self) -> np.ndarray:
    """The case's rows, the same in every process: standard normal (no cluster structure, so every library
    runs every iteration); unit rows for knn; for sinkhorn, scores uniform in [-1, 1]."""
    rng = np.random.default_rng(0)
    if self.kernel == "sinkhorn":
      return rng.uniform(-1, 1, (self.n, self.k)).astype(np.float32)
    x = rng.standard_normal((self.n, self.d), dtype=np.float32)
    if self.kernel == "knn":
      x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x

  def init(self, x) -> np.ndarray:
    return x[np.random.default_rng(1).choice(self.n, self.k, replace=False)]


def parse_case(text: str) -> Case:
  """``KERNEL:n=...,d=...,k=...,iters=...`` (the command line's ``--case``)."""
  kernel, _, rest = text.partition(":")
  if kernel not in KERNELS:
    raise ValueError(f"--case {text!r}: the kernel must be one of {', '.join(KERNELS)}")
  values = {}
  for part in filter(None, rest.split(",")):
    name, _, value = part.partition("=")
    if name == "defaults" and kernel == "kmeans" and value in ("0", "1"):
      values[name] = int(value)
      continue
    if name not in ("n", "d", "k", "iters") or not value.isdigit() or int(value) < 1:
      raise ValueError(f"--case {text!r}: {part!r} must be n=, d=, k= or iters= with a positive integer "
                       "(kmeans also defaults=0|1)")
    values[name] = int(value)
  missing = {"n", "d", "k"} - set(values) - ({"d"} if kernel == "sinkhorn" else set())
  if missing:
    raise ValueError(f"--case {text!r} needs {', '.join(sorted(missing))}")
  case = Case(kernel, values["n"], values.get("d", 1), values["k"], values.get("iters", 10), values.get("defaults", 0))
  if case.k > case.n:
    raise ValueError(f"--case {text!r}: k={case.k} must not exceed n={case.n}")
  return case


def default_cases(quick: bool) -> list[Case]:
  """The issue's CPU shapes, or tiny ones (``quick``: the tests)."""
  if quick:
    return [Case("kmeans", 2000, 16, 8, 5), Case("knn", 2000, 16, 5), Case("sinkhorn", 256, 1, 32, 3),
            Case("gmm", 2000, 8, 4, 5), Case("pca", 2000, 16, 4)]
  return [Case("kmeans", 200_000, 64, 256, 10), Case("knn", 50_000, 128, 20), Case("knn", 50_000, 128, 50),
          Case("sinkhorn", 4096, 1, 3000, 3), Case("gmm", 100_000, 32, 64, 10), Case("pca", 200_000, 256, 128)]


def ours(case: Case):
  """A function that runs the case's kernel on its data, placed on the device once."""
  import jax
  import jaxclust
  x = jax.device_put(case.data())
  if case.kernel == "kmeans" and case.defaults:
    return lambda: jaxclust.kmeans(x, case.k, rng=jax.random.key(0))
  if case.kernel == "kmeans":
    init = jax.device_put(case.init(case.data()))
    return lambda: jaxclust.kmeans(x, case.k, rng=jax.random.key(0), init=init, max_iter=case.iters, tol=0.0)
  if case.kernel == "knn":
    return lambda: jaxclust.knn(x, case.k, metric="cosine")
  if case.kernel == "sinkhorn":
    fn = jax.jit(lambda s: jaxclust.sinkhorn_knopp(s, epsilon=0.05, n_iter=case.iters))
    return lambda: fn(x)
  if case.kernel == "pca":
    return lambda: jaxclust.pca(x, case.k)
  return lambda: jaxclust.gmm_diag(x, case.k, rng=jax.random.key(0), max_iter=case.iters, tol=0.0)


def timed(fn, repeats: int) -> dict:
  """``{"seconds": median of repeats, "first": the warm-up call's seconds, "compile": first - median}``."""
  import jax
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {"seconds": median, "first": first, "compile": max(first - median, 0.0)}


def peak(dtype: str = "float32") -> tuple[float, str]:
  """``(TFLOP/s, where it comes from)``: the datasheet's dense peak of the first device for ``dtype``, or on a
  CPU the measured rate of a 2048 x 2048 float32 matrix product (the best of 5)."""
  import jax
  import jax.numpy as jnp
  device = jax.devices()[0]
  for name, rates in DATASHEET:
    if name.lower() in device.device_kind.lower():
      return rates[dtype == "bfloat16"], f"datasheet, {device.device_kind} {dtype}"
  a = jnp.ones((2048, 2048), jnp.float32)
  product = jax.jit(lambda a: a @ a)
  jax.block_until_ready(product(a))
  best = min(_seconds(lambda: product(a)) for _ in range(5))
  return 2 * 2048 ** 3 / best / 1e12, f"measured float32 2048x2048 product on {device.device_kind}"


def _seconds(fn) -> float:
  import jax
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def memory() -> tuple[float, str]:
  """``(peak GiB, what was measured)``: the device allocator's peak, or the process's peak resident memory."""
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 30, "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "host peak RSS"


def run_case(case: Case, *, repeats: int, peers: bool, tflops: float) -> dict:
  """One row of the table: ours timed, then each installed peer in its own process."""
  fn = ours(case)
  row = {"case": dataclasses.asdict(case), **timed(fn, repeats)}
  if case.defaults:  # the FLOPs and points/s of the iterations this library ran
    row["iterations"] = int(fn().n_iter)
    case = dataclasses.replace(case, iters=row["iterations"])
  row["points_per_second"] = case.n * (case.iters if case.kernel not in ("knn", "pca") else 1) / row["seconds"]
  row["tflops"] = FLOPS[case.kernel](case) / row["seconds"] / 1e12
  row["peak_share"] = row["tflops"] / tflops
  row["memory_gib"], row["memory_kind"] = memory()
  if peers:
    row["peers"] = peer_times(case, repeats)
    for name in [p for p in row["peers"] if p.endswith(" iterations")]:
      row.setdefault("peer_iterations", {})[name.split()[0]] = row["peers"].pop(name)
  return row


def peer_times(case: Case, repeats: int) -> dict:
  """``{peer: seconds}`` from ``python -m jaxclust.bench --peer`` in a fresh process (a missing peer: absent)."""
  out = subprocess.run([sys.executable, "-m", "jaxclust.bench", "--peer", json.dumps(dataclasses.asdict(case)),
                        str(repeats)], capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"the peers of {case} failed: {out.stderr.strip().splitlines()[-1:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def _sklearn_defaults(k, x, iterations: dict):
  """scikit-learn's ``KMeans(k)`` with its defaults; its iteration count goes to ``iterations``."""
  from sklearn.cluster import KMeans
  iterations["sklearn"] = int(KMeans(k, random_state=0).fit(x).n_iter_)


def _peers(case: Case, repeats: int) -> dict:
  """The peers' median seconds on the case (the same rows, the same starting centers), each where installed."""
  x, result = case.data(), {}

  def median(fn):
    fn()  # a warm-up, as ours gets
    return statistics.median(_wall(fn) for _ in range(max(repeats, 1)))

  if case.kernel == "kmeans" and case.defaults:
    iterations = {}
    result["sklearn"] = median(lambda: _sklearn_defaults(case.k, x, iterations))
    result["sklearn iterations"] = iterations["sklearn"]
  elif case.kernel == "kmeans":
    from sklearn.cluster import KMeans
    init = case.init(x)
    result["sklearn"] = median(lambda: KMeans(case.k, init=init, n_init=1, max_iter=case.iters, tol=0.0,
                                              algorithm="lloyd").fit(x))
    faiss = _optional("faiss")
    if faiss:
      result["faiss"] = median(lambda: faiss.Kmeans(case.d, case.k, niter=case.iters, max_points_per_centroid=case.n,
                                                    min_points_per_centroid=1).train(x, init_centroids=init))
  elif case.kernel == "knn":
    faiss = _optional("faiss")
    if faiss:
      def search():
        index = faiss.IndexFlatIP(case.d)
        index.add(x)
        return index.search(x, case.k)
      result["faiss"] = median(search)
  elif case.kernel == "pca":  # the same algorithm: the covariance's eigendecomposition
    from sklearn.decomposition import PCA
    result["sklearn"] = median(lambda: PCA(case.k, svd_solver="covariance_eigh").fit(x))
  elif case.kernel == "gmm":
    from sklearn.mixture import GaussianMixture
    result["sklearn"] = median(lambda: GaussianMixture(case.k, covariance_type="diag", max_iter=case.iters, tol=0.0,
                                                       init_params="random_from_data", random_state=0).fit(x))
  elif _optional("ott"):
    import jax
    import jax.numpy as jnp
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn
    solver = sinkhorn.Sinkhorn(min_iterations=case.iters, max_iterations=case.iters, inner_iterations=1,
                               threshold=0.0, lse_mode=True)
    fn = jax.jit(lambda s: solver(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=-s, epsilon=0.05))).matrix)
    scores = jnp.asarray(x)
    result["ott"] = median(lambda: jax.block_until_ready(fn(scores)))
  return result


def _wall(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _optional(name):
  try:
    return __import__(name)
  except ImportError:
    return None


PEERS = {"kmeans": ("sklearn", "faiss"), "knn": ("faiss",), "sinkhorn": ("ott",), "gmm": ("sklearn",),
         "pca": ("sklearn",)}


def missing_peers(rows: list[dict]) -> list[str]:
  """The peers of the rows' kernels that were asked for but are not installed (named, never silently absent)."""
  wanted = {p for row in rows if "peers" in row for p in PEERS[row["case"]["kernel"]]}
  return sorted(p for p in wanted if _optional(p) is None)


def table(rows: list[dict], peak_source: str) -> str:
  """The rows as a Markdown table."""
  missing = missing_peers(rows)
  lines = [f"peak: {peak_source}" + (f"; peers not installed: {', '.join(missing)} (pip install 'jaxclust[bench]')"
                                     if missing else ""), "",
           "| kernel | n | d | k | iters | seconds (median) | first call s | compile s | points/s | model TFLOP/s | "
           "% of peak | memory GiB | peers s | peer / jaxclust |", "|---" * 14 + "|"]
  for row in rows:
    c, peers = row["case"], row.get("peers", {})
    iters = "-" if c["kernel"] in ("knn", "pca") else c["iters"]
    if c.get("defaults"):  # each library's own defaults: the iterations each ran
      iters = f"defaults: {row['iterations']}" + "".join(f", {p} {i}" for p, i in row.get("peer_iterations", {}).items())
    lines.append(f"| {c['kernel']} | {c['n']:,} | {c['d']} | {c['k']} | {iters} | {row['seconds']:.4f} | "
                 f"{row['first']:.2f} | {row['compile']:.2f} | {row['points_per_second']:.3g} | {row['tflops']:.3f} | "
                 f"{100 * row['peak_share']:.1f} | {row['memory_gib']:.2f} ({row['memory_kind']}) | "
                 + (", ".join(f"{p} {s:.4f}" for p, s in peers.items()) or "-") + " | "
                 + (", ".join(f"{p} {s / row['seconds']:.2f}x" for p, s in peers.items()) or "-") + " |")
  return "\n".join(lines)


# -- `jaxclust bench steps`: every method's training on synthetic data, through the engine's own stages.


def steps(method: str, *, shape, batch: int, steps: int, repeats: int, recipe: str | None = None,
          dtype: str = "float32", k: int = 10, tflops: float = 0.0, mesh=None, peer_python: str | None = None
          ) -> list[dict]:
  """One row per stage of ``method`` that trains: the median seconds of its epoch over ``batch * steps`` synthetic
  rows (uniform in [0, 1], ``k`` classes) after a warm-up epoch (compilation apart), as the engine runs it.

  An epoch holds what the method does once per epoch besides its steps (SCAN's and Contrastive Clustering's
  cluster usage, DeepCluster's feature pass, PCA and k-means, the online methods' readouts), so its seconds per
  step are the epoch's over its steps. Stages that count steps rather than epochs (DEC's refresh intervals)
  are timed per interval. A stage whose record states ``pass_seconds`` (DEC's target refresh) also gets its steps
  alone (``steps_only_step_seconds``). Model TFLOP/s where the method states its step's FLOPs (``step_flops``).

  ``peer_python``: also run each stage's PyTorch peer where the method names one (``bench_peers``), with that
  Python (which needs torch; ClustPy for DEC), in its own process: ``row["peer"]``, see :func:`torch_peer`; its
  ratio is the peer's time over our steps' alone where the stage times its passes apart (ClustPy's DEC epoch
  has no refresh: it takes the target from each batch)."""
  import tempfile

  import jax
  from etils import epath

  from jaxclust import configs, engine, methods, parallel
  from jaxclust.data import sources
  module = methods.get(method)
  n = batch * steps
  rng = np.random.default_rng(0)
  x, y = rng.uniform(size=(n, *shape)).astype(np.float32), np.arange(n) % k
  config = configs.get_config(method, "bench", recipe=recipe, n=n, shape=tuple(shape))
  config.report = False
  for group, key in [configs.locate(config, name) for name, _ in configs.flatten(config)
                     if name.split(".")[-1] == "batch_size"]:
    group[key] = batch
  if "dtype" in config:
    config.dtype = dtype
  mesh = mesh or parallel.make_mesh()
  prepared = module.prepare(config, sources.from_arrays(x, y), mesh)
  rows, mask = parallel.global_rows(np.asarray(prepared.rows, np.float32), mesh)
  per_image = module.step_flops(config, tuple(shape), prepared.k) if hasattr(module, "step_flops") else {}
  peer_specs = module.bench_peers(config, tuple(shape), prepared.k) if peer_python and hasattr(
      module, "bench_peers") else {}
  out = []
  with tempfile.TemporaryDirectory() as tmp:
    # No labels: a user's data has none, so the epochs time no evaluation against them.
    run = engine.Run(config, epath.Path(tmp), mesh, prepared.k, n, tuple(shape), rows.shape[0], y=None, x=rows,
                     mask=mask, log=lambda _: None)
    state = None
    for stage in module.stages(run):
      state = stage.init(run, state)
      if stage.epoch is None or stage.epochs == 0:
        continue
      seconds, images, passes = [], [], []
      for epoch in range(repeats + 1):
        tick = time.perf_counter()
        state, record = stage.epoch(run, state, epoch % stage.epochs)
        jax.block_until_ready(state)
        seconds.append(time.perf_counter() - tick)
        passes.append(record.get("pass_seconds", 0.0))
        done = record.get("step")
        images.append(n if done is None else (done - (out_steps if epoch else 0)) * batch)
        out_steps = done
      median = statistics.median(seconds[1:])
      seen = statistics.median(images[1:])
      row = {"method": method, "stage": stage.name, "recipe": config.recipe, "shape": list(shape), "batch": batch,
             "rows": n, "epoch_seconds": median, "first": seconds[0], "compile": max(seconds[0] - median, 0.0),
             "step_seconds": median * batch / seen, "images_per_second": seen / median}
      if any(passes):  # the stage timed its whole-dataset passes apart: the steps alone, the same work as a peer's
        row["pass_seconds"] = statistics.median(passes[1:])
        row["steps_only_step_seconds"] = (median - row["pass_seconds"]) * batch / seen
      if stage.name in per_image and tflops:
        row["tflops"] = per_image[stage.name] * seen / median / 1e12
        row["peak_share"] = row["tflops"] / tflops
      row["memory_gib"], row["memory_kind"] = memory()
      if stage.name in peer_specs:
        spec = {**peer_specs[stage.name], "batch": batch, "steps": max(steps, 3), "dtype": dtype, "n": n}
        row["peer"] = torch_peer(spec, peer_python)
        if "seconds" in row["peer"]:  # our steps (without the stage's passes) against the peer's; an epoch: n / batch
          ours = row.get("steps_only_step_seconds", row["step_seconds"]) * (n / batch if row["peer"]["per"] == "epoch"
                                                                             else 1)
          row["peer"]["ratio"] = row["peer"]["seconds"] / ours
      out.append(row)
  return out


def torch_peer(spec: dict, python: str) -> dict:
  """The peer's ``{"seconds", "peer", "per": "step"|"epoch"}`` from ``jaxclust/bench_torch.py`` run by ``python``
  in its own process, or ``{"missing": what}`` when that Python lacks torch (or ClustPy)."""
  import pathlib
  script = pathlib.Path(__file__).with_name("bench_torch.py")
  out = subprocess.run([python, str(script), json.dumps(spec)], capture_output=True, text=True)
  if out.returncode:
    last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    if "No module named" in last:
      return {"missing": last.split("No module named")[-1].strip(" '\"")}
    raise RuntimeError(f"the PyTorch peer {spec['step']} failed: {last}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def steps_table(rows: list[dict], peak_source: str) -> str:
  """The ``steps`` rows as a Markdown table."""
  peers = any("peer" in r for r in rows)
  lines = [f"peak: {peak_source}", "", "| method | stage | recipe | shape | batch | epoch s (median) | compile s | "
           "s per step | images/s | model TFLOP/s | % of peak | memory GiB |"
           + (" PyTorch peer | peer / jaxclust |" if peers else ""), "|---" * (14 if peers else 12) + "|"]
  for r in rows:
    flops = (f"{r['tflops']:.4f} | {100 * r['peak_share']:.2f}" if "tflops" in r
             else "- | - (the method states no step FLOPs)")
    lines.append(f"| {r['method']} | {r['stage']} | {r['recipe']} | {'x'.join(map(str, r['shape']))} | {r['batch']} | "
                 f"{r['epoch_seconds']:.3f} | {r['compile']:.2f} | {r['step_seconds']:.4f}"
                 + (f" ({r['steps_only_step_seconds']:.4f} without its passes)" if "steps_only_step_seconds" in r
                    else "") + " | "
                 f"{r['images_per_second']:.1f} | {flops} | {r['memory_gib']:.2f} ({r['memory_kind']}) |"
                 + (_peer_cells(r.get("peer")) if peers else ""))
  return "\n".join(lines)


def _peer_cells(peer) -> str:
  if peer is None:
    return " - (none) | - |"
  if "missing" in peer:
    return f" not installed: {peer['missing']} | - |"
  return f" {peer['peer']}: {peer['seconds']:.4f} s per {peer['per']} | {peer['ratio']:.2f}x |"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--peer":
  print(json.dumps(_peers(Case(**json.loads(sys.argv[2])), int(sys.argv[3]))))
