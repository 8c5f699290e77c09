"""Command line: ``jaxclust kmeans --dataset digits`` clusters a bundled dataset and prints metrics.

The deep methods (DEC, IDEC, VaDE, SCAN, SwAV, DeepCluster-v2) will join as ``jaxclust fit``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

_DATASETS = ("digits",)


def _load(name: str):
  if name == "digits":  # 1797 8x8 handwritten digits, shipped inside scikit-learn: no download
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32) / 16.0, y
  raise ValueError(f"unknown dataset {name!r}; available: {', '.join(_DATASETS)}")


def _kmeans(args) -> int:
  import jax
  import jaxclust

  x, y = _load(args.dataset)
  k = len(np.unique(y)) if args.k is None else args.k
  print(f"dataset={args.dataset} n={x.shape[0]} d={x.shape[1]} k={k} n_init={args.n_init} "
        f"devices={jax.device_count()} ({jax.default_backend()})")
  start = time.perf_counter()
  out = jaxclust.kmeans(x, k, rng=jax.random.key(args.seed), n_init=args.n_init,
                        spherical=args.spherical)
  labels = np.asarray(out.labels)
  seconds = time.perf_counter() - start
  scores = jaxclust.metrics.evaluate(y, labels)
  balance = jaxclust.metrics.cluster_balance(out.labels, k=k)
  print(f"inertia={float(out.inertia):.4f} n_iter={int(out.n_iter)} converged={bool(out.converged)} "
        f"time={seconds:.2f}s (compilation included)")
  print(f"ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f} "
        f"size_entropy={float(balance['normalized_entropy']):.4f}")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxclust", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  km = sub.add_parser("kmeans", help="k-means on a dataset, with ACC/NMI/ARI against its labels")
  km.add_argument("--dataset", default="digits", choices=_DATASETS)
  km.add_argument("--k", type=int, default=None, help="clusters (default: number of classes)")
  km.add_argument("--n-init", type=int, default=10, help="restarts, run batched")
  km.add_argument("--seed", type=int, default=0)
  km.add_argument("--spherical", action="store_true", help="cosine k-means")
  args = parser.parse_args(argv)
  try:
    return _kmeans(args)
  except ValueError as e:
    print(f"jaxclust: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
