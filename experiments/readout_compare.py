"""The two over-clustering readouts of a SwAV/DeepCluster-v2 checkpoint, side by side, against the labels.

  python experiments/readout_compare.py WORKDIR [--step N ...]

For each checkpoint (default: the latest) of a `jaxclust fit swav|deepcluster` workdir on a labelled
dataset held on the devices, prints ACC/NMI/ARI of readout="kmeans" (spherical k-means of the
embeddings into n_clusters) and readout="knn" (the prototypes grouped by the nearest neighbours of
their members, jaxclust/readout.py; `--neighbors` of them), both computed by the methods' own code,
with the seconds each took (the first checkpoint's include compiling) and the size entropy of its
clusters; and, of the prototype clusters
(each image counted in its nearest prototype's), their purity (each cluster as its majority label: the
best ACC any grouping of them could reach) and the normalized entropy of their usage with the number
unused (what the collapse warning looks at). With `--confusion`, each readout's contingency
table follows its line: one row per true class, the clusters as columns in their Hungarian order (the
diagonal is what ACC counts), so the digits a run mixes can be read off.
"""
import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from scipy.optimize import linear_sum_assignment

from jaxclust import collapse, configs, engine, methods, metrics, parallel
from jaxclust.data import sources
from jaxclust.methods import online


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--step", type=int, nargs="*", default=None, help="checkpoint steps (default: the latest)")
  parser.add_argument("--neighbors", type=int, default=None, help="readout_neighbors (default: the config's)")
  parser.add_argument("--confusion", action="store_true", help="print each readout's contingency table")
  args = parser.parse_args()
  workdir = args.workdir.absolute()
  saved = json.loads((workdir / "config.json").read_text())
  if saved.get("method") not in ("swav", "deepcluster"):
    raise SystemExit(f"{str(workdir)!r} is a {saved.get('method')!r} workdir, not swav or deepcluster")
  defaults = json.loads(configs.get_config(saved["method"], saved["dataset"]).to_json())
  config = ml_collections.ConfigDict({**defaults, **saved})  # settings newer than the run: their defaults
  if args.neighbors is not None:
    config.readout_neighbors = args.neighbors
  data = sources.load(config.dataset, data_dir=config.data_dir or None)
  if data.y is None:
    raise SystemExit(f"{config.dataset!r} has no labels to compare against")
  y, n = np.asarray(data.y), len(data.y)
  clusters = config.n_clusters or int(y.max()) + 1
  manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  steps = args.step or [manager.latest_step()]
  scorer = methods.get(config.method).scorer(config)
  x = jnp.asarray(np.asarray(data.x, np.float32))
  for step in steps:
    state = restore(manager, step, config, workdir, data.x.shape[1:], n)
    codes = parallel.fetch(scorer.code(state, x, n))
    purity = sum(np.bincount(y[codes == c]).max() for c in np.unique(codes)) / n
    usage = collapse.usage(codes, config.prototypes, "entropy", "unused")  # what the collapse monitor warns on
    tables = []
    line = (f"{workdir.name} checkpoint {step}: prototype purity {purity:.4f}, usage entropy "
            f"{usage['entropy']:.4f} ({usage['unused']} unused)")
    for readout in ("kmeans", "knn"):
      config.readout = readout
      tick = time.perf_counter()
      labels, _ = online.labels(config, scorer, state, x, n, clusters)
      seconds = time.perf_counter() - tick  # the first call of each readout includes compiling it
      scores = metrics.evaluate(y, labels)
      scores["size_entropy"] = collapse.usage(labels, clusters, "entropy", "empty")["entropy"]
      name = f"knn {config.readout_neighbors}" if readout == "knn" else readout
      line += f" | {name}: " + " ".join(f"{key}={float(value):.4f}" for key, value in scores.items())
      line += f" ({seconds:.0f} s)"
      if args.confusion:
        tables.append((name, np.unique(y), metrics.contingency(y, labels)))
    print(line, flush=True)
    for name, classes, table in tables:
      print(_matched(name, classes, table), flush=True)


def restore(manager, step, config, workdir, shape, n):
  """Checkpoint ``step``'s state of a run of ``config`` on ``n`` images of ``shape``, on one device."""
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  # Checkpoints written before the engine have no "rows": those runs padded nothing on one device.
  run = engine.Run(config, workdir, parallel.make_mesh(1), config.prototypes, n, tuple(shape), meta.get("rows", n))
  template = methods.get(config.method).stages(run)[-1].template(run)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


def _matched(name, classes, table):
  """``table`` (true ``classes`` x clusters, :func:`metrics.contingency`) as text, the clusters reordered so
  each class's Hungarian match (the one ACC uses) sits on the diagonal."""
  rows, columns = linear_sum_assignment(table, maximize=True)
  order = list(columns[np.argsort(rows)]) + [c for c in range(table.shape[1]) if c not in columns]
  ordered = table[:, order]
  width = max(len(str(int(ordered.max()))), 5)
  lines = [f"  {name}: rows are the true classes, columns the clusters matched to them"]
  lines += [f"  {label:>5} " + " ".join(f"{int(v):>{width}}" for v in row) for label, row in zip(classes, ordered)]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
