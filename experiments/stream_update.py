"""A simulated stream on MNIST (experiments/RESULTS.md, "Updating online"): DEC fitted on a first chunk with one
digit held back, then `partial_fit` on later chunks, the held-back digit arriving only in the last. Per update:
the drift figures of jaxclust.updating, what the candidate new clusters hold, and how far the first chunk's labels
move (ARI of its predicted labels against those before the update).

  python experiments/stream_update.py --data-dir ../shared/data --workdir /work/stream/dec --held-out 9
  python experiments/stream_update.py ... --workdir /work/stream/dec_ft --finetune   # a copy of the first run
"""

import argparse
import json
import time

import numpy as np

import jaxclust
from jaxclust.data import sources

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--workdir", required=True)
parser.add_argument("--held-out", type=int, default=9)
parser.add_argument("--chunks", type=int, default=5)
parser.add_argument("--first", type=float, default=0.5, help="share of the other digits' rows in the first chunk")
parser.add_argument("--pretrain-epochs", type=int, default=15)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--finetune", action="store_true", help="each update also fine-tunes (partial_fit(finetune=True))")
args = parser.parse_args()

data = sources.load("mnist", data_dir=args.data_dir)
x, y = data.x, data.y  # images: the recipe for small images, as `fit --dataset mnist` chooses
rng = np.random.default_rng(args.seed)
others = rng.permutation(np.flatnonzero(y != args.held_out))
first = others[:int(args.first * len(others))]
later = np.array_split(others[len(first):], args.chunks - 1)
later[-1] = np.concatenate([later[-1], np.flatnonzero(y == args.held_out)])
start = time.time()
model = jaxclust.DEC(9, workdir=args.workdir, seed=args.seed, pretrain__epochs=args.pretrain_epochs)
model.fit(x[first], y[first])
print(json.dumps({"chunk": 0, "rows": len(first), "acc": model.summary_["acc"], "seconds": time.time() - start}))
labels = model.predict(x[first])
for i, rows in enumerate(later, 1):
  tick = time.time()
  model.partial_fit(x[rows], finetune=args.finetune)
  after = model.predict(x[first])
  u = model.update_
  groups = np.load(f"{args.workdir}/updates/{u['version']:04d}/candidates.npy")
  outlier = np.load(f"{args.workdir}/updates/{u['version']:04d}/outlier.npy") > 0.99
  held = y[rows] == args.held_out
  print(json.dumps({
      "chunk": i, "rows": len(rows), "held_out_rows": int(held.sum()), "outlier_share": u["outlier_share"],
      "held_out_outlier_share": float(outlier[held].mean()) if held.any() else None,
      "others_outlier_share": float(outlier[~held].mean()),
      "max_center_movement": u["max_center_movement"], "size_shift": u["size_shift"],
      "candidates": [{"rows": g["rows"], "held_out_share": float(np.mean(held[groups == g["group"]]))}
                     for g in u["candidate_clusters"]],
      "first_chunk_ari": jaxclust.metrics.evaluate(labels, after)["ari"],
      "acc_new_rows": jaxclust.metrics.evaluate(y[rows], np.load(
          f"{args.workdir}/updates/{u['version']:04d}/labels.npy"))["acc"], "seconds": time.time() - tick}),
      flush=True)
  labels = after
