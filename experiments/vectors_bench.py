"""The vector-data measurements of experiments/vectors.md: `jaxclust fit` runs on scikit-learn's tabular datasets
(written by experiments/vectors_data.py), each a CLI run in its own workdir, and k-means on the same z-scored rows.

    python experiments/vectors_bench.py DATA_DIR OUT_DIR METHOD DATASET SEED [SETTING=VALUE ...]
    python experiments/vectors_bench.py DATA_DIR OUT_DIR kmeans DATASET SEED

Prints one line: method, dataset, seed, ACC/NMI/ARI, wall seconds, and the command. n_clusters is the number of
classes (SwAV and DeepCluster-v2 would otherwise report one cluster per prototype).
"""

import json
import pathlib
import subprocess
import sys
import time
import zlib

import numpy as np


def kmeans(path, seed):
  import jax
  from jaxclust import metrics
  from jaxclust.kernels.kmeans import kmeans as run
  data = np.load(path)
  x, y = data["x"], data["y"]
  z = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
  start = time.perf_counter()
  labels = np.asarray(run(jax.numpy.asarray(z), len(np.unique(y)), rng=jax.random.key(seed), n_init=10).labels)
  return {**metrics.evaluate(y, labels), "wall_seconds": time.perf_counter() - start}


def main(data_dir, out_dir, method, dataset, seed, *settings):
  path = pathlib.Path(data_dir) / f"{dataset}.npz"
  if method == "kmeans":
    summary, command = kmeans(path, int(seed)), f"jaxclust.kmeans(z-scored {dataset}, k=classes, n_init=10)"
  else:
    classes = len(np.unique(np.load(path)["y"]))
    workdir = pathlib.Path(out_dir) / f"{method}_{dataset}_{seed}_{zlib.crc32(' '.join(settings).encode()) % 10**6}"
    args = ["fit", method, "--dataset", str(path), "--workdir", str(workdir), "--set", f"seed={seed}",
            "--set", f"n_clusters={classes}"] + [a for s in settings for a in ("--set", s)]
    command = "jaxclust " + " ".join(args)
    if not (workdir / "summary.json").exists():
      subprocess.run([str(pathlib.Path(sys.executable).with_name("jaxclust"))] + args, check=True,
                     stdout=subprocess.DEVNULL)
    summary = json.loads((workdir / "summary.json").read_text())
  print(f"{method} {dataset} seed={seed} acc={summary['acc']:.4f} nmi={summary['nmi']:.4f} ari={summary['ari']:.4f} "
        f"wall={summary['wall_seconds']:.0f}s settings={' '.join(settings) or '-'} | {command}", flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
