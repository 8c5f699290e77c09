"""Seeding with a few labels on MNIST (experiments/RESULTS.md, "Seeding with a few labels"): one method's
clustering stage from one pretrained run, unseeded and with 1, 5 and 10 labelled rows per class (drawn at
random per class with ``--draw``), each a `jaxclust fit` process; a table of the final scores.

  python experiments/seed_labels.py --pretrained /work/seedexp/ae_s0 --out /work/seedexp --data-dir ../shared/data
  python experiments/seed_labels.py --method scan --pretrained /work/seedexp/scan_pretext_s0 --out /work/seedexp
  python experiments/seed_labels.py --out /work/seedexp --table

``--pretrained``: a workdir whose earlier stage is done (`jaxclust fit dec ... --stage pretrain`, `jaxclust fit
scan ... --stage mine`); it is reused through the method's ``pretrain.init_from`` or ``pretext.init_from``. Scores: ACC/NMI/ARI of every row, and of the rows
nobody labelled (``unlabelled_*``), and ``named_accuracy``: the share of unlabelled rows whose cluster is their
class's number (no Hungarian matching).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--method", default="dec")
parser.add_argument("--dataset", default="mnist")
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--pretrained", default="")
parser.add_argument("--out", required=True)
parser.add_argument("--per-class", default="0,1,5,10")
parser.add_argument("--draw", type=int, default=0, help="seed of the draw of labelled rows")
parser.add_argument("--seed", type=int, default=0, help="the runs' seed")
parser.add_argument("--table", action="store_true")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)


def name(per_class: int) -> str:
  return f"{args.method}_{args.dataset}_s{args.seed}_l{per_class}_d{args.draw}"


if args.table:
  print("| method | labelled per class | draw | ACC | NMI | ARI | unlabelled ACC | named accuracy | wall s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for entry in sorted(os.listdir(args.out)):
    summary = os.path.join(args.out, entry, "summary.json")
    if not os.path.exists(summary) or "_l" not in entry:
      continue
    s = json.load(open(summary))
    per_class = entry.split("_l")[1].split("_")[0]
    draw = entry.split("_d")[-1]
    print(f"| {s['method']} | {per_class} | {draw} | {s['acc']:.4f} | {s['nmi']:.4f} | {s['ari']:.4f} | "
          f"{s.get('unlabelled_acc', s['acc']):.4f} | {s.get('named_accuracy', float('nan')):.4f} | "
          f"{s['wall_seconds']:.0f} |")
  sys.exit(0)

sys.path.insert(0, ".")
from jaxclust import methods  # noqa: E402
from jaxclust.data import sources  # noqa: E402

y = sources.load(args.dataset, data_dir=args.data_dir).y
for per_class in [int(v) for v in args.per_class.split(",")]:
  workdir = os.path.join(args.out, name(per_class))
  command = [os.path.join(os.path.dirname(sys.executable), "jaxclust"), "fit", args.method, "--dataset", args.dataset,
             "--data-dir", args.data_dir, "--workdir", workdir, "--set", f"seed={args.seed}"]
  if args.pretrained:  # the method's finished earlier stage: pretrain.init_from or pretext.init_from
    command += ["--set", f"{methods.get(args.method).REUSE}={args.pretrained}"]
  if per_class:
    rng = np.random.default_rng(args.draw)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    file = os.path.join(args.out, f"seeds_l{per_class}_d{args.draw}.csv")
    with open(file, "w") as f:
      f.write("index,label\n" + "".join(f"{i},{y[i]}\n" for i in rows))
    command += ["--seed-labels", file]
  print(" ".join(command), flush=True)
  start = time.time()
  with open(workdir + ".log", "w") as log:
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
  print(f"{name(per_class)}: {time.time() - start:.1f} s", flush=True)
