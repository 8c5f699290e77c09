"""Reproduces the AE issue's paper figures from the command line: DEC, IDEC, VaDE on MNIST, IDEC on USPS.

Each run is one `jaxclust fit` process; this script only launches them, times them and tabulates
their `summary.json`. Per seed, DEC pretrains the autoencoder and IDEC starts from that same
autoencoder (`pretrain.init_from`), as in the IDEC paper, where both share one pretrained network.
VaDE pretrains its own autoencoder (Bernoulli cross-entropy). Runs append to ``--out/runs.jsonl``
as they finish, so an interrupted sweep keeps what it measured; a finished run is not redone.

    python experiments/reproduce_ae.py --data-dir ../shared/data --out /tmp/repro
    python experiments/reproduce_ae.py --out /tmp/repro --report   # the table, from runs.jsonl
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

# The IDEC paper's USPS settings (Sec. 4.2), where its MNIST ones are the defaults: SGD, not Adam, and a shorter
# refresh interval.
USPS_IDEC = ("cluster.optimizer=sgd", "cluster.learning_rate=0.1", "cluster.momentum=0.99", "cluster.update_interval=30")
PAPER = {("dec", "mnist"): 0.843, ("idec", "mnist"): 0.8806, ("vade", "mnist"): 0.9446, ("idec", "usps"): 0.7605}


def plan(args):
  """(name, command arguments) in the order they run: the cheapest complete evidence first."""
  runs = []
  for seed in args.seeds:
    mnist = ["--dataset", "mnist", "--data-dir", args.data_dir, "--set", f"seed={seed}",
             "--set", f"checkpoint_every={args.checkpoint_every}"]
    dec_dir = f"{args.out}/mnist_dec_s{seed}"
    runs.append((f"mnist_dec_s{seed}", ["dec", *mnist, "--set", f"pretrain.epochs={args.pretrain_epochs}"]))
    runs.append((f"mnist_idec_s{seed}", ["idec", *mnist, "--set", f"pretrain.init_from={dec_dir}"]))
  for seed in args.seeds:
    usps = ["--dataset", "usps", "--data-dir", args.data_dir, "--set", f"seed={seed}",
            "--set", f"pretrain.epochs={args.usps_pretrain_epochs}", "--set", f"checkpoint_every={args.checkpoint_every}"]
    runs.append((f"usps_idec_s{seed}", ["idec", *usps, *(a for s in USPS_IDEC for a in ("--set", s))]))
  for seed in args.seeds:
    runs.append((f"mnist_vade_s{seed}", ["vade", "--dataset", "mnist", "--data-dir", args.data_dir,
                                         "--set", f"seed={seed}", "--set", f"pretrain.epochs={args.pretrain_epochs}",
                                         "--set", f"vade.epochs={args.vade_epochs}",
                                         "--set", f"vade.gmm_restarts={args.gmm_restarts}",
                                         "--set", f"checkpoint_every={args.checkpoint_every}"]))
  return runs


def run_all(args):
  out = Path(args.out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  done = {r["name"] for r in _read(out)}
  for name, fit_args in plan(args):
    if name in done or (args.only and not any(o in name for o in args.only)):
      continue
    command = [args.jaxclust, "fit", *fit_args, "--workdir", str(out / name)]
    print("$", " ".join(command), flush=True)
    tick = time.perf_counter()
    with open(out / f"{name}.log", "a") as log:
      code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - tick
    if code:
      print(f"{name} failed with exit code {code}; see {out / name}.log", flush=True)
      continue
    summary = json.loads((out / name / "summary.json").read_text())
    record = {"name": name, "command": " ".join(command), "process_seconds": wall, **summary}
    with open(out / "runs.jsonl", "a") as f:
      f.write(json.dumps(record) + "\n")
    print(f"{name}: acc={summary.get('acc'):.4f} nmi={summary.get('nmi'):.4f} ari={summary.get('ari'):.4f} "
          f"process {wall:.1f} s", flush=True)


def report(args):
  runs = _read(Path(args.out).absolute())
  lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}",
           "", "| method | dataset | seed | ACC | NMI | ARI | process wall s |", "|---|---|---|---|---|---|---|"]
  for r in runs:
    lines.append(f"| {r['method']} | {r['dataset']} | {r['seed']} | {r['acc']:.4f} | {r['nmi']:.4f} | "
                 f"{r['ari']:.4f} | {r['process_seconds']:.1f} |")
  lines += ["", "| method | dataset | seeds | ACC mean ± sd | NMI mean ± sd | ARI mean ± sd | paper ACC | met |",
            "|---|---|---|---|---|---|---|---|"]
  groups = {}
  for r in runs:
    groups.setdefault((r["method"], r["dataset"]), []).append(r)
  for (method, dataset), rs in groups.items():
    cells = []
    for key in ("acc", "nmi", "ari"):
      values = [r[key] for r in rs]
      sd = statistics.stdev(values) if len(values) > 1 else float("nan")
      cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
    target = PAPER.get((method, dataset))
    mean_acc = statistics.mean(r["acc"] for r in rs)
    met = "n/a" if target is None else ("yes" if mean_acc >= target else "no")
    lines.append(f"| {method} | {dataset} | {len(rs)} | {' | '.join(cells)} | {target} | {met} |")
  print("\n".join(lines))


def _read(out: Path):
  path = out / "runs.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", default="../shared/data")
  parser.add_argument("--out", required=True, help="directory for the run workdirs, logs and runs.jsonl")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--pretrain-epochs", type=int, default=200, help="MNIST autoencoder pretraining epochs")
  parser.add_argument("--usps-pretrain-epochs", type=int, default=200)
  parser.add_argument("--vade-epochs", type=int, default=300)
  parser.add_argument("--gmm-restarts", type=int, default=10,
                      help="VaDE's GMM fits on the pretrained embedding, the most likely kept (the issue's recipe)")
  parser.add_argument("--checkpoint-every", type=int, default=5)
  parser.add_argument("--only", nargs="*", help="run only the runs whose names contain one of these")
  parser.add_argument("--jaxclust", default=str(Path(sys.executable).with_name("jaxclust")))
  parser.add_argument("--report", action="store_true", help="print the tables from runs.jsonl and exit")
  args = parser.parse_args()
  report(args) if args.report else run_all(args)


if __name__ == "__main__":
  main()
