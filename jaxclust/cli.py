"""Command line: ``jaxclust fit dec --dataset digits`` (deep clustering), ``jaxclust kmeans ...``.

``fit`` runs or resumes a method in a workdir (checkpoints, metrics.jsonl, summary.json); settings
come from :mod:`jaxclust.configs`, a ``--config`` file and ``--set key=value`` overrides.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np

from jaxclust import methods
from jaxclust.validation import Diverged

def _kmeans(args) -> int:
  import jax
  import jaxclust
  from jaxclust.data import sources

  data = sources.load(args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                      skip_bad_files=args.skip_bad_files)
  if args.labels:
    data = sources.with_labels(data, args.labels, what=f"--dataset {args.dataset}")
  x = data.x.reshape(data.x.shape[0], -1)  # images become rows of pixels
  if args.k is None and data.y is None:
    raise ValueError(f"--dataset {args.dataset} has no labels to count clusters from: give --k (or --labels FILE)")
  k = len(np.unique(data.y)) if args.k is None else args.k
  print(f"dataset={args.dataset} n={x.shape[0]} d={x.shape[1]} k={k} n_init={args.n_init} "
        f"devices={jax.device_count()} ({jax.default_backend()})")
  print(f"data: {sources.reading_line(data.info)}")
  start = time.perf_counter()
  out = jaxclust.kmeans(x, k, rng=jax.random.key(args.seed), n_init=args.n_init,
                        spherical=args.spherical)
  labels = np.asarray(out.labels)
  seconds = time.perf_counter() - start
  balance = jaxclust.metrics.cluster_balance(out.labels, k=k)
  print(f"inertia={float(out.inertia):.4f} n_iter={int(out.n_iter)} converged={bool(out.converged)} "
        f"time={seconds:.2f}s (compilation included)")
  line = f"size_entropy={float(balance['normalized_entropy']):.4f}"
  if data.y is not None:
    scores = jaxclust.metrics.evaluate(data.y, labels)
    line = f"ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f} " + line
  print(line)
  return 0


def make_config(method: str, dataset: str, *, data_dir=None, config_file=None, settings=(), recipe=None):
  """The ``fit`` configuration: the recipe for the data (``recipe``: a named one; or ``config_file``'s
  ``get_config()``) with ``key=value`` overrides.

  Raises:
    ValueError: a config file that is missing, fails or defines no ``get_config()``; a setting that
      does not exist or a value that does not fit its type, naming the setting.
  """
  from jaxclust import configs

  if config_file:
    config = _read_config_file(config_file, method)
  else:
    from jaxclust.data import sources
    # The recipe is chosen by the size the images will be read at: --set image_size=S counts already.
    size = [_parse_setting("image_size", a.partition("=")[2], 0) for a in settings if a.startswith("image_size=")]
    n, shape = (None, None) if dataset in configs.MEASURED and recipe is None else sources.describe(
        dataset, data_dir=data_dir, image_size=size[-1] if size else 0)
    config = configs.get_config(method, dataset, recipe=recipe, n=n, shape=shape)
  config.method, config.dataset = method, dataset
  if data_dir:
    config.data_dir = data_dir
  for assignment in settings:
    name, equals, text = assignment.partition("=")
    if not equals:
      raise ValueError(f"--set {assignment!r} must look like key=value, e.g. cluster.tol=0.01")
    if name == "recipe":
      raise ValueError(f"--set {assignment}: a recipe sets many settings; choose it with --recipe {text}")
    try:
      node, target = configs.locate(config, name)
    except ValueError as e:
      raise ValueError(f"--set {e}") from None
    node[target] = _parse_setting(name, text, node[target])
  return config


def _read_config_file(path, method: str):
  """``get_config()`` of the Python file ``path``; every way the file can fail is one ValueError naming it."""
  import runpy

  if not Path(path).is_file():
    raise ValueError(f"--config {path}: no such file")
  try:
    namespace = runpy.run_path(str(path))
  except SyntaxError as e:
    raise ValueError(f"--config {path}: syntax error on line {e.lineno}: {e.msg}") from e
  except Exception as e:  # the user's code: whatever it raises is the file's fault, reported as such
    raise ValueError(f"--config {path} failed while running: {type(e).__name__}: {e}") from e
  if not callable(namespace.get("get_config")):
    raise ValueError(f"--config {path} defines no get_config() function")
  try:
    config = namespace["get_config"]()
  except Exception as e:
    raise ValueError(f"--config {path}: get_config() raised {type(e).__name__}: {e}") from e
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"--config {path}: get_config() returned {type(config).__name__}, expected an "
                     "ml_collections.ConfigDict")
  if config.get("method", method) != method:  # another method's settings would fail deep in its driver
    raise ValueError(f"--config {path} is a {config.method!r} config, not {method!r}")
  return config


def _parse_setting(name: str, text: str, default):
  """``text`` as a value of ``default``'s type: ``--set`` is typed by the setting it changes."""
  import ast

  def refuse(expected):
    return ValueError(f"--set {name}={text!r}: expected {expected} (default {default!r})")

  if name == "n_clusters" and text.strip().lower() == "auto":
    return -1  # chosen on the data by engine.fit

  if isinstance(default, bool):
    if text.strip().lower() not in ("true", "false"):
      raise refuse("true or false")
    return text.strip().lower() == "true"
  if isinstance(default, int):
    number = _number(text)
    # 1e3 is accepted as 1000 (it is whole); 2.7 is refused, never truncated to 2.
    if number is None or not float(number).is_integer():
      raise refuse("an integer")
    return int(number)
  if isinstance(default, float):
    number = _number(text)
    if number is None:
      raise refuse("a finite number")
    return float(number)
  if isinstance(default, str):
    try:  # a quoted string, as in Python: 'conv' or "conv"
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
    return value if isinstance(value, str) else text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = None
  if isinstance(default, tuple):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      value = (value,)  # hidden=500: one layer
    if not isinstance(value, (tuple, list)):
      raise refuse("a comma-separated tuple, e.g. " + ",".join(map(str, default)))
    flat = [v for v in default if not isinstance(v, tuple)]
    if default and len(flat) == len(default) and all(isinstance(v, int) and not isinstance(v, bool) for v in default):
      if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise refuse("a tuple of integers, e.g. " + ",".join(map(str, default)))
    elif default and len(flat) == len(default):
      if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise refuse("a tuple of numbers, e.g. " + ",".join(map(str, default)))
      value = tuple(float(v) for v in value)
    return tuple(value)
  if value is None and text.strip() not in ("None", "none"):
    return text
  return value


def _number(text: str):
  """``text`` as an int or finite float, or None."""
  try:
    return int(text)
  except ValueError:
    pass
  try:
    value = float(text)
  except ValueError:
    return None
  return value if np.isfinite(value) else None


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
  from jaxclust import engine

  config = make_config(args.method, args.dataset, data_dir=args.data_dir, config_file=args.config,
                       settings=args.set or [], recipe=args.recipe)
  if args.labels:
    config.labels = args.labels
  if args.seed_labels:
    from jaxclust import seeding
    seeding.read(args.seed_labels)  # a missing or malformed file fails before the data are loaded
    config.seed_labels = args.seed_labels
  if args.skip_bad_files:
    config.skip_bad_files = True
  workdir = args.workdir or f"workdirs/{config.method}_{config.dataset.replace('/', '_')}_seed{config.seed}"
  _check_workdir(workdir)
  engine.fit(config, workdir, stop_after=args.stage)
  return 0


def _check_workdir(workdir: str) -> None:
  """Refuses a local workdir that cannot become a run's folder, before any data is loaded."""
  if "://" in workdir:  # a URL (gs://...): only the library's workdir code can judge it
    return
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise ValueError(f"--workdir {workdir} is a file; expected a folder (an existing one or a new one)")
  existing = path
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    raise ValueError(f"--workdir {workdir}: {existing} is a file, so no folder can be made under it")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir}: folder {existing} is not writable")


_OUTPUTS = (".npy", ".csv")


def _check_output(output: str, suffixes=_OUTPUTS, flag: str = "--output") -> None:
  """Refuses an output file (``predict --output``) that could not be written, before any data is loaded."""
  path = Path(output)
  kinds = " or ".join(suffixes)
  if path.suffix.lower() not in suffixes:
    raise ValueError(f"{flag} {output}: expected a file name ending in {kinds}, got {path.suffix or 'no extension'}")
  if path.is_dir():
    raise ValueError(f"{flag} {output} is a folder; expected a file name ending in {kinds}")
  if path.parent.exists() and not path.parent.is_dir():
    raise ValueError(f"{flag} {output}: {path.parent} is a file, not a folder")
  if not path.parent.is_dir():
    raise ValueError(f"{flag} {output}: folder {path.parent} does not exist")
  if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
    raise ValueError(f"{flag} {output} is not writable")


def _write_predictions(output: str, out, names=None) -> None:
  """Labels, confidence and outlier score to exactly ``output``: .npy (a structured array with those three
  fields), or .csv with a ``label,confidence,outlier`` header (outlier empty for a run without its reference);
  a seeded run's cluster ``names`` (:mod:`jaxclust.seeding`) add a ``name`` after ``label`` (empty if unnamed)."""
  outlier = np.full(len(out.labels), np.nan, np.float32) if out.outlier is None else out.outlier
  k = 0 if out.neighbors is None else out.neighbors.shape[1]
  named = None if names is None else np.asarray(["" if v is None else str(v) for v in names])[out.labels]
  if Path(output).suffix.lower() == ".npy":
    fields = [("label", np.int64)] + ([] if named is None else [("name", named.dtype)])
    fields += [("confidence", np.float32), ("outlier", np.float32)]
    if k:
      fields += [("neighbors", np.int64, (k,)), ("neighbor_distances", np.float32, (k,)),
                 ("neighbor_labels", np.int64, (k,))]
    table = np.zeros(len(out.labels), fields)
    table["label"], table["confidence"], table["outlier"] = out.labels, out.confidence, outlier
    if named is not None:
      table["name"] = named
    if k:
      table["neighbors"], table["neighbor_distances"] = out.neighbors, out.neighbor_distances
      table["neighbor_labels"] = out.neighbor_labels
    with open(output, "wb") as f:  # np.save(name) would append .npy to a name lacking it
      np.save(f, table)
  else:
    header = ["label"] + ([] if named is None else ["name"]) + ["confidence", "outlier"] + [f"{name}_{j + 1}" for name in ("neighbor", "neighbor_distance",
                                                                                 "neighbor_label") for j in range(k)]
    with open(output, "w") as f:
      f.write(",".join(header) + "\n")
      for i, (label, p, o) in enumerate(zip(out.labels, out.confidence, outlier)):
        row = [str(int(label))] + ([] if named is None else [_csv_field(named[i])])
        row += [f"{float(p):.6f}", "" if np.isnan(o) else f"{float(o):.6f}"]
        if k:
          row += [str(int(j)) for j in out.neighbors[i]] + [f"{float(d):.6f}" for d in out.neighbor_distances[i]]
          row += [str(int(j)) for j in out.neighbor_labels[i]]
        f.write(",".join(row) + "\n")


def _csv_field(text: str) -> str:
  return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(ch in text for ch in ',"\n') else text


def _predict(args) -> int:
  from jaxclust import engine
  from jaxclust import workdir as workdirs
  from jaxclust.data import sources

  if args.output:
    _check_output(args.output)
  summary = workdirs.open(workdirs.path(args.workdir))
  if summary is None:
    raise ValueError(f"{args.workdir} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  data = sources.load_like(args.input, summary["shape"], data_dir=args.data_dir, what="--input")
  if args.labels:
    data = sources.with_labels(data, args.labels, what=f"--input {args.input}")
  out = engine.predict(args.workdir, data.x, neighbors=args.neighbors, version=args.version)
  labels = out.labels
  names = engine.cluster_names(args.workdir)
  if args.output:
    _write_predictions(args.output, out, names)
  counts = np.bincount(labels, minlength=summary["k"])
  print(f"{len(labels)} rows -> clusters with sizes {counts.tolist()}" + (f"; saved to {args.output}" if args.output else ""))
  if names is not None:
    print("named clusters: " + ", ".join(f"{c}={v} ({counts[c]})" for c, v in enumerate(names) if v is not None))
  if args.neighbors:
    agree = float(np.mean(out.neighbor_labels == labels[:, None]))
    print(f"{args.neighbors} nearest training rows each: {agree:.4f} of them in the row's own cluster")
  if data.y is not None:
    import jaxclust
    scores = jaxclust.metrics.evaluate(data.y, labels)
    print(f"ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f} (against the input's labels)")
  return 0


def _update(args) -> int:
  from jaxclust import updating
  from jaxclust import workdir as workdirs
  from jaxclust.data import sources

  summary = workdirs.open(workdirs.path(args.workdir))
  if summary is None:
    raise ValueError(f"{args.workdir} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  if args.min_group < 0:
    raise ValueError(f"--min-group={args.min_group} must be at least 0")
  data = sources.load_like(args.input, summary["shape"], data_dir=args.data_dir, what="--input")
  if args.replay is not None and not args.finetune:
    raise ValueError(f"--replay={args.replay} needs --finetune")
  if args.replay is not None and args.replay < 1:
    raise ValueError(f"--replay={args.replay} must be at least 1")
  updating.update(args.workdir, data.x, min_group=args.min_group, finetune=args.finetune, replay=args.replay,
                  log=print)  # its last line: the version's figures
  return 0


def _bench(args) -> int:
  from jaxclust import bench

  if args.repeats < 1:
    raise ValueError(f"--repeats={args.repeats} must be at least 1")
  if args.json:
    _check_output(args.json, (".json",), "--json")
  if args.what == "steps":
    return _bench_steps(args)
  cases = [bench.parse_case(c) for c in args.case] if args.case else bench.default_cases(args.quick)
  tflops, source = bench.peak(args.dtype)
  rows = []
  for case in cases:
    rows.append(bench.run_case(case, repeats=args.repeats, peers=args.peers, tflops=tflops))
    print(bench.table(rows[-1:], source).splitlines()[-1], flush=True)
  print(bench.table(rows, source))
  if args.json:
    import json
    with open(args.json, "w") as f:
      json.dump({"peak_tflops": tflops, "peak_source": source, "rows": rows}, f, indent=2)
  return 0



def _bench_steps(args) -> int:
  """``jaxclust bench steps``: every method's (or ``--method``'s) training epochs on synthetic rows."""
  from jaxclust import bench
  chosen = args.method or list(methods.REGISTRY)
  for name in chosen:
    if name not in methods.REGISTRY:
      raise ValueError(f"--method {name!r} must be one of {', '.join(methods.REGISTRY)}")
  try:
    shape = tuple(int(v) for v in args.shape.split(","))
  except ValueError:
    shape = ()
  if not shape or min(shape) < 1:
    raise ValueError(f"--shape {args.shape!r} must be positive integers separated by commas, e.g. 28,28,1 or 64")
  for name in ("batch", "steps"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name}={getattr(args, name)} must be at least 1")
  if args.peer_python and not os.access(args.peer_python, os.X_OK):
    raise ValueError(f"--peer-python {args.peer_python!r} is not an executable Python")
  tflops, source = bench.peak(args.dtype)
  rows = []
  for method in chosen:
    found = bench.steps(method, shape=shape, batch=args.batch, steps=args.steps, repeats=args.repeats,
                        recipe=args.recipe, dtype=args.dtype, tflops=tflops,
                        peer_python=(args.peer_python or sys.executable) if args.peers else None)
    rows.extend(found)
    for line in bench.steps_table(found, source).splitlines()[4:]:
      print(line, flush=True)
  print(bench.steps_table(rows, source))
  if args.json:
    import json
    with open(args.json, "w") as f:
      json.dump({"peak_tflops": tflops, "peak_source": source, "rows": rows}, f, indent=2)
  return 0

def _recipes(args) -> int:
  """Every method's recipes (or ``args.method``'s), each with what it sets beyond the method's own settings."""
  from jaxclust import configs

  for method in [args.method] if args.method else configs.METHODS:
    base = dict(configs.flatten(methods.get(method).config()))
    print(f"{method}:")
    for name, recipe in configs.recipes(method).items():
      print(f"  {name}: {recipe.about}")
      config = configs.get_config(method, "", recipe=name)
      changed = [f"{key}={value!r}" for key, value in configs.flatten(config)
                 if key not in ("method", "dataset", "recipe") and base.get(key) != value]
      print("    sets " + (", ".join(changed) if changed else "nothing beyond the method's own settings"))
  kinds = ", ".join(configs.KINDS)
  print(f"A fit takes the recipe of its data's kind ({kinds}; images up to {configs.SMALL} pixels a side are small), "
        "its lengths in images seen scaled to the data's rows; the datasets the recipes were measured on keep "
        f"them as measured ({', '.join(configs.MEASURED)}). --recipe NAME chooses another.")
  return 0


def _report(args) -> int:
  """report.html of a finished run, drawn again from its workdir (neither the dataset nor the network)."""
  from jaxclust import report

  print(f"report: {report.render(args.workdir)}")
  return 0


def _eval(args) -> int:
  """The metrics of a finished run from what fit saved (labels, true labels): the dataset is not read."""
  import jaxclust
  from jaxclust import workdir as workdirs

  workdir = workdirs.path(args.workdir)
  summary = workdirs.open(workdir)
  if summary is None:
    raise ValueError(f"{workdir} holds no finished run (no summary.json)")
  labels = workdirs.load_npy(workdir / "labels.npy")
  line = f"{summary['method']} on {summary['dataset']} (seed {summary['seed']}): n={len(labels)} k={summary['k']}"
  if (workdir / "true_labels.npy").exists():
    scores = jaxclust.metrics.evaluate(workdirs.load_npy(workdir / "true_labels.npy"), labels)
    line += f" ACC={scores['acc']:.4f} NMI={scores['nmi']:.4f} ARI={scores['ari']:.4f}"
  elif "acc" in summary:  # a run finished before fit saved the true labels
    line += f" ACC={summary['acc']:.4f} NMI={summary['nmi']:.4f} ARI={summary['ari']:.4f}"
  balance = jaxclust.metrics.cluster_balance(labels, k=summary["k"])
  line += f" size_entropy={float(balance['normalized_entropy']):.4f} wall={summary['wall_seconds']:.1f}s"
  if "train_seconds" in summary:  # the epochs' time over every process of a resumed run; older runs lack it
    line += f" train={summary['train_seconds']:.1f}s"
  if summary.get("collapsed"):
    line += " collapsed=True"
  print(line)
  return 0


class _UsageError(Exception):
  """A command line that argparse refuses, reported as one line like every other user mistake."""


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # argparse's own prints the usage block, then exits
    raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _fit_epilog(argv) -> str:
  """The settings of the method named in ``fit``'s arguments ``argv``, with defaults and meanings."""
  from jaxclust import configs

  method, options, skip = None, {"--dataset": "digits", "--recipe": None, "--data-dir": None}, None
  for token in argv:
    if skip:
      options[skip], skip = token, None
    elif token.partition("=")[0] in options and "=" in token:
      options[token.partition("=")[0]] = token.partition("=")[2]
    elif token in options:
      skip = token
    elif token.startswith("-"):  # an option's value (--stage scan) is not the method
      skip = "(value)" if "=" not in token and token not in ("-h", "--help", "--distributed") else None
    elif method is None:
      method = token
  if method not in configs.METHODS:
    return "`jaxclust fit METHOD --help` lists the method's settings with their defaults and meanings."
  dataset = options["--dataset"]
  try:
    config = make_config(method, dataset, data_dir=options["--data-dir"], recipe=options["--recipe"])
  except ValueError as e:
    return f"(the settings for --dataset {dataset} cannot be shown: {e})"
  rows = [(name, repr(value), configs.HELP.get(name, "")) for name, value in configs.flatten(config)]
  name_width = max(len(name) for name, _, _ in rows)
  value_width = min(max(len(value) for _, value, _ in rows), 18)  # a longer value pushes its meaning on
  lines = [f"settings of {method} and their defaults for --dataset {dataset} (recipe {config.recipe}; change "
           "them with --set KEY=VALUE):"]
  lines += [f"  {name:<{name_width}}  {value:<{value_width}}  {meaning}" for name, value, meaning in rows]
  return "\n".join(lines)


_DATASETS = ("digits (bundled), mnist, fashion_mnist, usps (with --data-dir), tfds:NAME, a .npy/.npz/.csv file, "
             "or a folder of PNG/JPEG images (class subfolders are labels for evaluation)")
_LABELS = "the rows' labels for evaluation only: a .npy file or a .csv with one label a line (header optional)"
_SKIP = "image folders: skip unreadable image files (counted in the log and summary) instead of stopping"


def _choose_k(args) -> int:
  from jaxclust import k_choice, report
  from jaxclust import workdir as workdirs
  from jaxclust.data import sources
  ks = k_choice.parse_range(args.k)
  if (args.dataset is None) == (args.workdir is None):
    raise ValueError("choose-k needs --dataset D (its rows) or --workdir DIR (a finished run's embedding), one of them")
  if args.output is not None and not args.output.endswith(".png"):
    raise ValueError(f"--output {args.output} must be a .png file")
  if args.dataset is not None:
    data = sources.load(args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                        skip_bad_files=args.skip_bad_files)
    x, where = data.x.reshape(len(data.x), -1), f"the rows of {args.dataset}"
  else:
    path = workdirs.path(args.workdir)
    if workdirs.open(path) is None:
      raise ValueError(f"{path} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
    saved = path / report.FOLDER / report.DATA
    stored = workdirs.load_npz(saved) if saved.exists() else {}
    if "components" not in stored:
      raise ValueError(f"{path} has no embedding sample ({saved}): its run was fitted with report=false or gives "
                       "no usable embedding; use --dataset")
    x = stored["components"]
    where = f"the {stored['space']} of {path} ({len(x)} rows, {x.shape[1]} principal components, from {saved.name})"
  print(f"choose-k on {where}: k in {ks[0]}..{ks[-1]}, {args.runs} k-means runs per k, "
        f"{args.references} reference sets")
  start = time.perf_counter()
  choice = k_choice.choose_k(x, ks, seed=args.seed, runs=args.runs, references=args.references,
                             sample_size=args.sample_size)
  print(choice.table())
  picks = ", ".join(f"{name} {k}" for name, k in choice.by_criterion().items())
  print(f"each criterion alone: {picks}")
  print(f"{choice.rows} rows, {time.perf_counter() - start:.1f} s; rule: {k_choice.RULE}")
  if args.output:
    k_choice.plot(choice, args.output)
    print(f"curves: {args.output}")
  print(f"k={choice.k}")
  return 0


def _stability(args) -> int:
  from jaxclust import stability
  seeds = None
  if args.seeds is not None:
    try:
      seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
      raise ValueError(f"--seeds {args.seeds!r} must be comma-separated integers") from None
  result = stability.run(args.workdir, runs=args.runs, seeds=seeds, subsample=args.subsample, cheap=args.cheap,
                         output=args.output)
  s = result.summary()
  print(f"{len(result.names)} labelings ({', '.join(result.names)})")
  print(f"mean pairwise ARI={s['mean_ari']:.4f} NMI={s['mean_nmi']:.4f}; rows every labeling agrees on: "
        f"{s['rows_agreed_by_all']:.4f}; mean agreement with the consensus: {s['mean_agreement']:.4f}")
  jaccard = result.cluster_jaccard
  print("per-cluster stability (mean best-match Jaccard): " + " ".join(f"{j}:{v:.2f}" for j, v in enumerate(jaccard)))
  weak = [j for j, v in enumerate(jaccard) if v < 0.5]
  print(f"clusters below 0.5 (dissolve in other labelings): {weak or 'none'}")
  if args.output is None:
    print(f"`jaxclust report --workdir {args.workdir}` adds this to the run's report")
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _Parser(prog="jaxclust", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  fit = sub.add_parser("fit", help="train (or resume) a deep clustering method in a workdir",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_fit_epilog(argv[1:]) if argv[:1] == ["fit"] else None)
  fit.add_argument("method", choices=tuple(methods.REGISTRY))
  fit.add_argument("--stage", default=None,
                   help="stop once this stage is done (earlier stages run or resume first; rerun to go on): "
                        "dec, idec, vade: pretrain, cluster; scan: pretext, mine, scan, selflabel; swav: swav; "
                        "deepcluster: deepcluster")
  fit.add_argument("--dataset", default="digits", help=_DATASETS)
  fit.add_argument("--data-dir", default=None)
  fit.add_argument("--labels", default=None, metavar="FILE", help=_LABELS)
  fit.add_argument("--seed-labels", default=None, metavar="FILE",
                   help="a .csv of `index,label` rows, a few labelled training rows: they start the clusters, name "
                        "them (integer labels are cluster numbers) and keep their label; more clusters than "
                        "labelled classes are allowed")
  fit.add_argument("--skip-bad-files", action="store_true", help=_SKIP)
  fit.add_argument("--config", default=None, help="a Python file defining get_config()")
  fit.add_argument("--recipe", default=None,
                   help="start from this recipe instead of the one for the data's kind (`jaxclust recipes`)")
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
  km.add_argument("--dataset", default="digits", help=_DATASETS)
  km.add_argument("--data-dir", default=None)
  km.add_argument("--labels", default=None, metavar="FILE", help=_LABELS)
  km.add_argument("--image-size", type=int, default=0,
                  help="image folders: read images at this size x this size (default 0: the size most of them have)")
  km.add_argument("--skip-bad-files", action="store_true", help=_SKIP)
  km.add_argument("--k", type=int, default=None, help="clusters (default: number of classes; required without labels)")
  km.add_argument("--n-init", type=int, default=10, help="restarts, run batched")
  km.add_argument("--seed", type=int, default=0)
  km.add_argument("--spherical", action="store_true", help="cosine k-means")
  pred = sub.add_parser("predict", help="assign new data to the clusters of a finished run")
  pred.add_argument("--workdir", required=True)
  pred.add_argument("--input", required=True,
                    help="a .npy/.npz/.csv file, an image folder (read at the run's image size, rows in sorted path "
                         "order) or a dataset name, with the run's features")
  pred.add_argument("--data-dir", default=None)
  pred.add_argument("--labels", default=None, metavar="FILE", help=_LABELS)
  pred.add_argument("--output", default=None, help="where to save the labels: a .npy file, or .csv (a `label` column)")
  pred.add_argument("--neighbors", type=int, default=0, metavar="K",
                    help="also find each row's K nearest training rows (read again from the run's dataset) in the "
                         "method's embedding, with their distances and clusters (fields of --output)")
  pred.add_argument("--version", type=int, default=None,
                    help="the update (jaxclust update) to predict with; default the latest, 0 the run as trained")
  up = sub.add_parser("update", help="assign new data to a finished run, move its centers (mini-batch k-means), "
                                     "report drift and save the result as a new version under WORKDIR/updates")
  up.add_argument("--workdir", required=True)
  up.add_argument("--input", required=True, help="the new rows: a .npy/.npz/.csv file, an image folder or a dataset "
                                                 "name, with the run's features")
  up.add_argument("--data-dir", default=None)
  up.add_argument("--min-group", type=int, default=0,
                  help="the fewest outliers a candidate new cluster has (default: 1%% of the new rows, at least 10)")
  up.add_argument("--finetune", action="store_true",
                  help="also train the method's objective on the new rows and replayed training rows, from the run's "
                       "pretrained autoencoder or pretext, the replayed rows keeping their clusters (a run in the "
                       "version's folder)")
  up.add_argument("--replay", type=int, default=None, metavar="N",
                  help="with --finetune: training rows replayed (default: as many as the new rows)")
  ev = sub.add_parser("eval", help="metrics of a finished run")
  ev.add_argument("--workdir", required=True)
  rep = sub.add_parser("report", help="draw a finished run's report.html again (fit writes it at the end)")
  rep.add_argument("--workdir", required=True)
  ck = sub.add_parser("choose-k", help="score every number of clusters of a range without labels; the last line "
                                        "is the recommended one, k=N")
  ck.add_argument("--dataset", default=None, help=_DATASETS)
  ck.add_argument("--data-dir", default=None)
  ck.add_argument("--image-size", type=int, default=0,
                  help="image folders: read images at this size x this size (default 0: the size most of them have)")
  ck.add_argument("--skip-bad-files", action="store_true", help=_SKIP)
  ck.add_argument("--workdir", default=None,
                  help="a finished run: choose k in the space its report measures clusters in (up to 5,000 rows "
                       "of its embedding, in principal components; the run is only read)")
  ck.add_argument("--k", default="2..30", help="the ks to score: LOW..HIGH (inclusive) or a list, e.g. 2,4,8")
  ck.add_argument("--runs", type=int, default=4, help="k-means seedings per k (the best is scored; their agreement "
                                                     "is the stability)")
  ck.add_argument("--references", type=int, default=8, help="uniform reference sets of the gap statistic")
  ck.add_argument("--sample-size", type=int, default=10_000, help="rows used at most (a seeded sample)")
  ck.add_argument("--seed", type=int, default=0)
  ck.add_argument("--output", default=None, help="a .png of the criteria against k")
  st = sub.add_parser("stability", help="compare a finished run with reruns of other seeds or subsamples (or, "
                                         "--cheap, k-means of its embedding); the run is only read")
  st.add_argument("--workdir", required=True)
  st.add_argument("--runs", type=int, default=3, help="reruns (default 3), or k-means seedings with --cheap")
  st.add_argument("--seeds", default=None, help="the reruns' seeds, e.g. 1,2,3 (instead of --runs)")
  st.add_argument("--subsample", type=float, default=None, help="each rerun on this share of the rows, e.g. 0.8")
  st.add_argument("--cheap", action="store_true", help="no reruns: k-means of the run's embedding, --runs seedings, "
                                                       "in one device call")
  st.add_argument("--output", default=None, help="where the reruns and the results go (default: WORKDIR-stability)")
  be = sub.add_parser("bench", help="throughput on synthetic data: the kernels, with peers measured in the same "
                                    "run, or every method's training steps")
  be.add_argument("what", choices=("kernels", "steps"))
  be.add_argument("--method", action="append", default=[], help="steps: a method (repeatable; default: every one)")
  be.add_argument("--shape", default="28,28,1", help="steps: the rows' shape, H,W,C for images or D for vectors "
                                                     "(default 28,28,1)")
  be.add_argument("--batch", type=int, default=256, help="steps: every batch size of the recipe (default 256)")
  be.add_argument("--steps", type=int, default=10, help="steps: steps per epoch; the rows are batch x steps")
  be.add_argument("--recipe", default=None, help="steps: the recipe (default: the one for the shape's data kind)")
  be.add_argument("--case", action="append", default=[], metavar="KERNEL:n=N,d=D,k=K[,iters=I]",
                  help="a case (repeatable): kmeans, knn, sinkhorn (n = batch, k = prototypes) or gmm; default: the "
                       "issue's CPU shapes")
  be.add_argument("--quick", action="store_true", help="tiny default shapes (seconds), to check the command")
  be.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up; the median is reported")
  be.add_argument("--peers", action="store_true", help="kernels: also time scikit-learn, faiss-cpu and ott-jax where "
                  "installed; steps: the PyTorch steps of the same networks (ClustPy's DEC); each in a fresh process")
  be.add_argument("--peer-python", default=None, help="steps: the Python that runs the PyTorch peers (default: this "
                                                      "one), e.g. a virtual environment with torch and clustpy")
  be.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="the peak to compare with")
  be.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
  rec = sub.add_parser("recipes", help="the methods' recipes and what each sets")
  rec.add_argument("method", nargs="?", choices=tuple(methods.REGISTRY))
  commands = {"fit": _fit, "kmeans": _kmeans, "predict": _predict, "eval": _eval, "report": _report, "recipes": _recipes,
              "choose-k": _choose_k, "stability": _stability, "update": _update, "bench": _bench}
  try:
    args = parser.parse_args(argv)
    return commands[args.command](args)
  except SystemExit as e:  # --help: returned like every other outcome, so main() can be called in-process
    return e.code if isinstance(e.code, int) else 0
  except (ValueError, _UsageError) as e:
    print("jaxclust: error: " + " ".join(str(e).split("\n")), file=sys.stderr)  # one line, always
    return 2
  except Diverged as e:  # the loss or the parameters stopped being finite
    print("jaxclust: error: " + " ".join(str(e).split("\n")), file=sys.stderr)
    return 3


if __name__ == "__main__":
  sys.exit(main())
