"""Every method's default recipe, unchanged, on a dataset no recipe was tuned on (issue 45, item 6).

The small-image recipes were chosen on MNIST; this runs them as they are on another dataset (Fashion-MNIST
by default), one `jaxclust fit` process per run, and tabulates ACC/NMI/ARI beside k-means baselines:
k-means (scikit-learn, 10 restarts) of the raw pixels, and of each run's own embedding (the space the
method clusters in, from `jaxclust.engine.predict`). Some runs reuse another's finished stage (``REUSES``). Runs
append to ``--out/runs.jsonl`` as they finish;
a finished run is not redone, so an interrupted table goes on where it stopped.

    python experiments/heldout_table.py --data-dir ../shared/data --out /work/heldout
    python experiments/heldout_table.py --data-dir ../shared/data --out /work/heldout --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("dec", "simclr", "simclr_knn", "scan", "idec", "cc", "deepcluster2018", "swav", "deepcluster", "vade", "moco",
           "moco_knn")
# Runs that read another run's finished stage instead of training their own (the same settings and seed, so the
# same network): SCAN from the SimCLR run's pretext, which is SCAN's pretext recipe; each pretext's kNN readout
# from its own run. IDEC pretrains its own autoencoder: the table's IDEC row is its whole default run.
REUSES = {"scan": ("simclr", "pretext.init_from"), "simclr_knn": ("simclr", "pretext.init_from"),
          "moco_knn": ("moco", "pretext.init_from")}
VARIANTS = {"simclr_knn": ("simclr", ["readout.method=knn"]), "moco_knn": ("moco", ["readout.method=knn"])}


def plan(args):
  """(name, method, fit arguments) in the order they run."""
  runs = []
  for seed in args.seeds:
    for method in args.methods:
      name = f"{args.dataset}_{method}_s{seed}"
      base, extra = VARIANTS.get(method, (method, []))
      fit = [base, "--dataset", args.dataset, "--data-dir", args.data_dir, "--set", f"seed={seed}"]
      fit += [arg for setting in extra for arg in ("--set", setting)]
      if method in REUSES and REUSES[method][0] in args.methods:
        source, setting = REUSES[method]
        fit += ["--set", f"{setting}={Path(args.out).absolute() / f'{args.dataset}_{source}_s{seed}'}"]
      runs.append((name, base, fit))
  return runs


def run_all(args):
  out = Path(args.out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  done = {r["name"] for r in _read(out)}
  for name, method, fit in plan(args):
    if name in done:
      continue
    command = [args.jaxclust, "fit", *fit, "--workdir", str(out / name)]
    print("$", " ".join(command), flush=True)
    tick = time.perf_counter()
    with open(out / f"{name}.log", "a") as log:
      code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - tick
    if code:
      print(f"{name} failed with exit code {code}; see {out / name}.log", flush=True)
      continue
    summary = json.loads((out / name / "summary.json").read_text())
    recipe = json.loads((out / name / "config.json").read_text())["recipe"]
    record = {"name": name, "command": " ".join(command), "process_seconds": wall,
              "date": time.strftime("%Y-%m-%d"), "recipe": recipe, **summary}
    with open(out / "runs.jsonl", "a") as f:
      f.write(json.dumps(record) + "\n")
    print(f"{name}: acc={summary['acc']:.4f} nmi={summary['nmi']:.4f} ari={summary['ari']:.4f} "
          f"process {wall:.1f} s", flush=True)


def kmeans_scores(x, y, k: int, seed: int) -> dict:
  """ACC/NMI/ARI of scikit-learn's k-means (10 restarts) of ``x``."""
  from sklearn.cluster import KMeans

  from jaxclust import metrics
  labels = KMeans(k, n_init=10, random_state=seed).fit_predict(x.reshape(len(x), -1))
  return {key: float(value) for key, value in metrics.evaluate(y, labels).items() if key in ("acc", "nmi", "ari")}


def baselines(args, runs) -> tuple[dict, dict]:
  """k-means of the pixels, and of each run's embedding; cached in ``--out`` as they are computed."""
  from jaxclust import engine
  from jaxclust.data import sources
  out = Path(args.out).absolute()
  data = sources.load(args.dataset, data_dir=args.data_dir)
  x = data.x.astype("float32") / (255.0 if data.x.dtype == "uint8" else 1.0)
  cache = out / "kmeans_baselines.json"
  found = json.loads(cache.read_text()) if cache.exists() else {}
  if "pixels" not in found:
    found["pixels"] = kmeans_scores(x, data.y, int(data.y.max()) + 1, 0)
  for r in runs:
    if r["name"] not in found:
      z = engine.predict(out / r["name"], data.x).embedding
      found[r["name"]] = kmeans_scores(z, data.y, r["k"], r["seed"])
    cache.write_text(json.dumps(found, indent=1))
  return found.pop("pixels"), found


def report(args):
  runs = _read(Path(args.out).absolute())
  pixels, embedded = baselines(args, runs)
  lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
           f"Python {platform.python_version()}", "",
           f"k-means of the pixels (10 restarts): ACC {pixels['acc']:.4f}, NMI {pixels['nmi']:.4f}, "
           f"ARI {pixels['ari']:.4f}", "",
           "| run | recipe | seed | ACC | NMI | ARI | k-means of its embedding: ACC / NMI / ARI | fit s | date |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in runs:
    b = embedded[r["name"]]
    lines.append(f"| {r['name']} | {r.get('recipe', '')} | {r['seed']} | {r['acc']:.4f} | {r['nmi']:.4f} | "
                 f"{r['ari']:.4f} | {b['acc']:.4f} / {b['nmi']:.4f} / {b['ari']:.4f} | "
                 f"{r['wall_seconds']:.0f} | {r['date']} |")
  groups = {}  # a table row's seeds: its runs' names without the seed (a readout of the same method is its own row)
  for r in runs:
    groups.setdefault(r["name"].removesuffix(f"_s{r['seed']}"), []).append(r)
  if any(len(rs) > 1 for rs in groups.values()):
    lines += ["", "| run | seeds | ACC mean ± sd | NMI mean ± sd | ARI mean ± sd |", "|---|---|---|---|---|"]
    for name, rs in groups.items():
      cells = []
      for key in ("acc", "nmi", "ari"):
        values = [r[key] for r in rs]
        cells.append(f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1
                                                          else " (one seed)"))
      lines.append(f"| {name} | {len(rs)} | {' | '.join(cells)} |")
  print("\n".join(lines))


def _read(out: Path):
  path = out / "runs.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", default="../shared/data")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--out", required=True, help="directory for the run workdirs, logs and runs.jsonl")
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--jaxclust", default=str(Path(sys.executable).with_name("jaxclust")))
  parser.add_argument("--report", action="store_true", help="print the table from runs.jsonl and exit")
  args = parser.parse_args()
  report(args) if args.report else run_all(args)


if __name__ == "__main__":
  main()
