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


def make_config(method: str, dataset: str, *, data_dir=None, config_file=None, settings=()):
  """The ``fit`` configuration: defaults (or ``config_file``'s ``get_config()``) with ``key=value`` overrides."""
  import ast
  import runpy

  from jaxclust import configs

  config = runpy.run_path(config_file)["get_config"]() if config_file else configs.get_config(method, dataset)
  config.method, config.dataset = method, dataset
  if data_dir:
    config.data_dir = data_dir
  for assignment in settings:
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
    if isinstance(node[target], bool):
      if text.lower() not in ("true", "false"):
        raise ValueError(f"--set {name}={text!r}: expected true or false")
      value = text.lower() == "true"
    elif isinstance(node[target], (int, float)):
      value = type(node[target])(value)
    node[target] = value
  return config


def _initialize_distributed(args) -> None:
  """``jax.distributed.initialize`` for a multi-process ``fit``, before anything starts JAX's backends.

  With no ``--coordinator``, JAX detects the cluster (Cloud TPU pod slices, SLURM, Open MPI); with
  one, every process names the same coordinator and process count and its own index."""
  explicit = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
              "--process-id": args.process_id}
  given = [name for name, value in explicit.items() if value is not None]
  if given and len(given) < 3:
    missing = sorted(set(explicit) - set(given))
    raise ValueError(f"{', '.join(given)} also need {', '.join(missing)} (all three name one process of the job)")
  if args.coordinator_bind is not None and not given:
    raise ValueError(f"--coordinator-bind={args.coordinator_bind!r} needs --coordinator")
  if not (args.distributed or given):
    return
  if given:
    if args.num_processes < 1:
      raise ValueError(f"--num-processes={args.num_processes} must be at least 1")
    if not 0 <= args.process_id < args.num_processes:
      raise ValueError(f"--process-id={args.process_id} must be in [0, {args.num_processes})")
    if ":" not in args.coordinator:
      raise ValueError(f"--coordinator={args.coordinator!r} must be HOST:PORT")
  import jax
  jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                             process_id=args.process_id, coordinator_bind_address=args.coordinator_bind)


def _fit(args) -> int:
  _initialize_distributed(args)
  from jaxclust import train

  config = make_config(args.method, args.dataset, data_dir=args.data_dir, config_file=args.config,
                       settings=args.set or [])
  workdir = args.workdir or f"workdirs/{config.method}_{config.dataset.replace('/', '_')}_seed{config.seed}"
  if config.method == "scan":
    from jaxclust import scan_train
    scan_train.fit(config, workdir, stage=args.stage)
  elif config.method in ("swav", "deepcluster"):
    if args.stage:
      raise ValueError(f"--stage is for scan; {config.method} has one stage")
    from jaxclust import online_train
    online_train.fit(config, workdir)
  elif args.stage:
    raise ValueError(f"--stage is for scan; {config.method} runs its stages in one go")
  else:
    train.fit(config, workdir)
  return 0


def _predict(args) -> int:
  from jaxclust import train
  from jaxclust.data import sources

  import json
  from pathlib import Path
  data = sources.load(args.input, data_dir=args.data_dir)
  config_path = Path(args.workdir) / "config.json"
  method = json.loads(config_path.read_text()).get("method") if config_path.exists() else None
  if method == "scan":
    from jaxclust import scan_train
    labels = scan_train.predict(args.workdir, data.x)
  elif method in ("swav", "deepcluster"):
    from jaxclust import online_train
    labels = online_train.predict(args.workdir, data.x)
  else:
    labels = train.predict(args.workdir, data.x)
  if args.output:
    np.save(args.output, labels)
  counts = np.bincount(labels)
  print(f"{len(labels)} rows -> clusters with sizes {counts.tolist()}" + (f"; saved to {args.output}" if args.output else ""))
  if data.y is not None:
    import jaxclust
    scores = jaxclust.metrics.evaluate(data.y, labels)
    print(f"ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f} (against the input's labels)")
  return 0


def _eval(args) -> int:
  import json
  from pathlib import Path

  import jaxclust
  from jaxclust.data import sources

  workdir = Path(args.workdir)
  if not (workdir / "summary.json").exists():
    raise ValueError(f"{workdir} holds no finished run (no summary.json)")
  summary = json.loads((workdir / "summary.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  data = sources.load(config["dataset"], data_dir=config["data_dir"] or None)
  labels = np.load(workdir / "labels.npy")
  line = f"{summary['method']} on {summary['dataset']} (seed {summary['seed']}): n={len(labels)} k={summary['k']}"
  if data.y is not None:
    scores = jaxclust.metrics.evaluate(data.y, labels)
    line += f" ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f}"
  balance = jaxclust.metrics.cluster_balance(labels, k=summary["k"])
  line += f" size_entropy={float(balance['normalized_entropy']):.4f} wall={summary['wall_seconds']:.1f}s"
  if "train_seconds" in summary:  # the epochs' time over every process of a resumed run; older runs lack it
    line += f" train={summary['train_seconds']:.1f}s"
  print(line)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="jaxclust", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  fit = sub.add_parser("fit", help="train (or resume) a deep clustering method in a workdir")
  fit.add_argument("method", choices=("dec", "idec", "vade", "scan", "swav", "deepcluster"))
  fit.add_argument("--stage", default=None, choices=("pretext", "mine", "scan", "selflabel"),
                   help="scan only: stop once this stage is done (earlier stages run or resume first)")
  fit.add_argument("--dataset", default="digits",
                   help="digits (bundled), mnist, fashion_mnist, usps (with --data-dir), tfds:NAME, or a .npy/.npz/.csv file")
  fit.add_argument("--data-dir", default=None)
  fit.add_argument("--config", default=None, help="a Python file defining get_config()")
  fit.add_argument("--workdir", default=None, help="default: workdirs/METHOD_DATASET_seedSEED")
  fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. pretrain.epochs=10")
  fit.add_argument("--distributed", action="store_true",
                   help="one process of a multi-process job (every host runs the same command): "
                        "jax.distributed.initialize() detects Cloud TPU pods, SLURM and Open MPI")
  fit.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address, for jobs JAX cannot detect (with --num-processes, --process-id)")
  fit.add_argument("--num-processes", type=int, default=None)
  fit.add_argument("--process-id", type=int, default=None)
  fit.add_argument("--coordinator-bind", default=None, metavar="HOST:PORT",
                   help="where process 0 listens (default: JAX's, every interface at the coordinator's port)")
  km = sub.add_parser("kmeans", help="k-means on a dataset, with ACC/NMI/ARI against its labels")
  km.add_argument("--dataset", default="digits", choices=_DATASETS)
  km.add_argument("--k", type=int, default=None, help="clusters (default: number of classes)")
  km.add_argument("--n-init", type=int, default=10, help="restarts, run batched")
  km.add_argument("--seed", type=int, default=0)
  km.add_argument("--spherical", action="store_true", help="cosine k-means")
  pred = sub.add_parser("predict", help="assign new data to the clusters of a finished run")
  pred.add_argument("--workdir", required=True)
  pred.add_argument("--input", required=True, help="a .npy/.npz/.csv file or a dataset name, with the run's features")
  pred.add_argument("--data-dir", default=None)
  pred.add_argument("--output", default=None, help="where to save the labels (.npy)")
  ev = sub.add_parser("eval", help="metrics of a finished run")
  ev.add_argument("--workdir", required=True)
  args = parser.parse_args(argv)
  commands = {"fit": _fit, "kmeans": _kmeans, "predict": _predict, "eval": _eval}
  try:
    return commands[args.command](args)
  except ValueError as e:
    print(f"jaxclust: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
