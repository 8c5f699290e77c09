"""Where a DeepCluster-v2 run on a labelled dataset loses accuracy: representation, over-clustering or grouping.

  python experiments/deepcluster_diagnose.py WORKDIR [--step N] [--queries 20000]

Reads one checkpoint of a `jaxclust fit deepcluster` workdir (the latest by default) and prints, for
prototype set 0:
- the purity of its K k-means targets, the ones epoch N trained on (each cluster counted as its
  majority label): the best ACC any grouping of those K clusters into classes could reach;
- the 10-NN label agreement of the bank's embeddings (cosine, a random sample of queries against all);
- ACC/NMI/ARI of scikit-learn's k-means into as many clusters as classes on the bank (k-means++,
  10 restarts), which is what the driver's spherical k-means reports, checked independently;
- ACC/NMI/ARI of grouping the K targets by spectral clustering of their 10-NN graph (the number of
  neighbour pairs between two clusters as affinity). A diagnostic, not a jaxclust option.
Checkpoint N holds the targets of epoch N and the bank as it stood after epoch N; with
`bank_source=epoch_end` that is the trained network's embeddings of the clean images.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from sklearn.cluster import KMeans, SpectralClustering

from jaxclust import metrics
from jaxclust.data import sources


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  parser.add_argument("--queries", type=int, default=20000, help="images whose 10 neighbours are searched")
  args = parser.parse_args()
  workdir = args.workdir.absolute()
  config = json.loads((workdir / "config.json").read_text())
  if config["method"] != "deepcluster":
    raise SystemExit(f"{str(workdir)!r} is a {config['method']!r} workdir, not deepcluster")
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  step = args.step if args.step is not None else steps[-1]
  if step not in steps:
    raise SystemExit(f"no checkpoint {step} in {str(workdir)!r}; there are {steps}")
  y = sources.load(config["dataset"], data_dir=config["data_dir"] or None).y
  if y is None:
    raise SystemExit(f"{config['dataset']!r} has no labels to diagnose against")
  y = np.asarray(y)
  n = len(y)
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  targets = np.asarray(state["assignments"])[0][:n]
  bank = np.asarray(state["bank"])[0][:n].astype(np.float32)
  k, classes = int(targets.max()) + 1, int(y.max()) + 1
  print(f"{workdir.name} checkpoint {step}: n={n}, {k} targets, {classes} classes")

  purity = sum(np.bincount(y[targets == c]).max() for c in np.unique(targets)) / n
  print(f"target purity (the best ACC of any grouping of the {k} targets): {purity:.4f}")

  rng = np.random.default_rng(0)
  queries = rng.choice(n, min(args.queries, n), replace=False)
  affinity = np.zeros((k, k))
  agree = 0
  for start in range(0, len(queries), 2000):
    q = queries[start:start + 2000]
    scores = bank[q] @ bank.T
    scores[np.arange(len(q)), q] = -np.inf  # not its own neighbour
    neighbours = np.argpartition(-scores, 10, axis=1)[:, :10]
    agree += int((y[neighbours] == y[q, None]).sum())
    np.add.at(affinity, (np.repeat(targets[q], 10), targets[neighbours].ravel()), 1)
  print(f"10-NN label agreement of the bank ({len(queries)} queries): {agree / (10 * len(queries)):.4f}")

  kmeans = KMeans(classes, n_init=10, random_state=0).fit(bank)
  print(f"scikit-learn k-means into {classes} on the bank:", _scores(y, kmeans.labels_))
  spectral = SpectralClustering(classes, affinity="precomputed", random_state=0).fit(affinity + affinity.T)
  print(f"spectral grouping of the {k} targets on their 10-NN graph:", _scores(y, spectral.labels_[targets]))


def _scores(y, labels):
  return " ".join(f"{name}={float(value):.4f}" for name, value in metrics.evaluate(y, labels).items())


if __name__ == "__main__":
  main()
