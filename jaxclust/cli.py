"""Command line: ``jaxclust fit dec --dataset digits`` (deep clustering), ``jaxclust kmeans ...``.

``fit`` runs or resumes a method in a workdir (checkpoints, metrics.jsonl, summary.json); settings
come from :mod:`jaxclust.configs`, a ``--config`` file and ``--set key=value`` overrides.
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


def _fit(args) -> int:
  import ast
  import runpy

  from jaxclust import configs, train

  if args.config:
    config = runpy.run_path(args.config)["get_config"]()
  else:
    config = configs.get_config(args.method, args.dataset)
  config.method, config.dataset = args.method, args.dataset
  if args.data_dir:
    config.data_dir = args.data_dir
  for assignment in args.set or []:
    name, _, text = assignment.partition("=")
    if not _:
      raise ValueError(f"--set {assignment!r} must look like key=value, e.g. cluster.tol=0.01")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    target, *path = name.split(".")[::-1]
    node = config
    for part in reversed(path):
      if part not in node:
        raise ValueError(f"--set {name}: unknown setting {part!r}")
      node = node[part]
    if target not in node:
      raise ValueError(f"--set {name}: unknown setting {target!r}; available: {sorted(node.keys())}")
    node[target] = type(node[target])(value) if isinstance(node[target], (int, float)) and not isinstance(node[target], bool) else value
  workdir = args.workdir or f"workdirs/{config.method}_{config.dataset.replace('/', '_')}_seed{config.seed}"
  train.fit(config, workdir)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxclust", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  fit = sub.add_parser("fit", help="train (or resume) a deep clustering method in a workdir")
  fit.add_argument("method", choices=("dec", "idec", "vade"))
  fit.add_argument("--dataset", default="digits",
                   help="digits (bundled), mnist, fashion_mnist, usps (with --data-dir), tfds:NAME, or a .npy/.npz/.csv file")
  fit.add_argument("--data-dir", default=None)
  fit.add_argument("--config", default=None, help="a Python file defining get_config()")
  fit.add_argument("--workdir", default=None, help="default: workdirs/METHOD_DATASET_seedSEED")
  fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. pretrain.epochs=10")
  km = sub.add_parser("kmeans", help="k-means on a dataset, with ACC/NMI/ARI against its labels")
  km.add_argument("--dataset", default="digits", choices=_DATASETS)
  km.add_argument("--k", type=int, default=None, help="clusters (default: number of classes)")
  km.add_argument("--n-init", type=int, default=10, help="restarts, run batched")
  km.add_argument("--seed", type=int, default=0)
  km.add_argument("--spherical", action="store_true", help="cosine k-means")
  args = parser.parse_args(argv)
  try:
    return _fit(args) if args.command == "fit" else _kmeans(args)
  except ValueError as e:
    print(f"jaxclust: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
