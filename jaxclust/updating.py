"""Updating a finished run with new data: assignment, mini-batch k-means of the centers, drift, versions.

``update(workdir, x)`` (the command line's ``jaxclust update``, the API's ``partial_fit``) takes new rows:

1. assigns them under the run's current version (the method's ``assign``);
2. moves the centers by one mini-batch k-means step (Sculley 2010, :func:`jaxclust.kernels.minibatch
   .minibatch_update`): each center becomes the running mean of every row it has absorbed, the training rows
   counted as its cluster's size. Methods whose clusters are centers in their embedding (DEC, IDEC: the
   Student-t centers; VaDE: the mixture means; a method module's ``with_centers``) predict with the moved
   centers from then on. The others (SCAN's heads, SwAV's and DeepCluster-v2's prototypes) keep their
   assignment; their cluster means in the embedding are moved and tracked for drift;
3. reports drift: the share of new rows whose outlier score is above the training rows' 99th percentile
   (about 1% when nothing changed), how far each center moved (in units of the training rows' median
   distance to their center), the shift of cluster sizes (total variation between the training and the new
   shares), and candidate new clusters: groups of outliers connected in their mutual nearest-neighbour graph;
4. saves the update as a version, ``WORKDIR/updates/0001/`` (``update.json`` with the figures above,
   ``labels.npy``, ``outlier.npy``, ``candidates.npy`` (-1, or the row's candidate group), ``centers.npy``,
   ``counts.npy``, ``means.npy``). Nothing of the original run is modified; ``predict`` uses the latest
   version (``version=0``: the run as trained);
5. with ``finetune``, trains the method's own objective on the new rows and a replayed sample of the training
   rows, from the run's earlier stage, the replayed rows seeding their current clusters (:func:`update`).
"""

from __future__ import annotations

import datetime
import math
import time

import ml_collections
import numpy as np
from scipy.sparse import csgraph, csr_matrix

from jaxclust import engine
from jaxclust import workdir as workdirs

FOLDER = "updates"
OUTLIER = 0.99  # an outlier: farther from its center than 99% of the training rows
NEIGHBORS = 10  # the mutual nearest-neighbour graph of the outliers


def versions(workdir) -> list[int]:
  """The update versions saved in ``workdir``, oldest first (empty before any update)."""
  folder = workdirs.path(workdir) / FOLDER
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / "update.json").exists())


def version_folder(workdir, version: int):
  return workdirs.path(workdir) / FOLDER / f"{version:04d}"


def update(workdir, x, *, min_group: int = 0, finetune: bool = False, replay: int | None = None, training=None,
           log=print) -> dict:
  """Assigns the new rows ``x`` (shaped and scaled as the training data) under the latest version of the
  finished run in ``workdir``, updates its centers, reports drift and saves version N+1; returns its
  ``update.json``. ``min_group``: the fewest outliers a candidate new cluster has (default: 1% of the new rows,
  at least 10).

  ``finetune``: the version also trains the method's own objective on the new rows plus ``replay`` (default: as
  many as there are new rows, at most all) training rows drawn at random (``training``: the run's training rows,
  else its dataset read again): a run in ``updates/NNNN/run`` that starts from this run's finished earlier stage
  (its ``REUSE`` setting: the pretrained autoencoder, the pretext) and takes the replayed rows' current clusters
  as seed labels (:mod:`jaxclust.seeding`), so the clusters keep their numbers. Predictions then come from it.
  """
  home = workdirs.path(workdir)
  done = versions(home)
  previous = done[-1] if done else 0
  method, run, state = engine.restore(home, version=None)  # the latest version's model
  tuned = run.workdir != home  # the latest version is a fine-tuned run: its own model and reference
  out = engine._assign(method, run, state, x, "the new rows")
  z = np.asarray(out.embedding, np.float32).reshape(len(out.embedding), -1)
  order = engine.seeded_order(run.workdir, run.k)
  if not (run.workdir / engine.OUTLIERS).exists():
    raise ValueError(f"{run.workdir} has no {engine.OUTLIERS} (a run finished before fit saved it, or a streamed "
                     "run without an embedding of its rows): its drift cannot be measured; fit it again")
  reference = workdirs.load_npz(run.workdir / engine.OUTLIERS)
  base = _current(run, method, state, home, 0 if tuned else previous, order)
  outlier = engine.outlier_scores(z, reference)

  from jaxclust.kernels import minibatch
  means = minibatch.minibatch_update(minibatch.MiniBatchState(base["means"], base["mean_counts"], 0), z)
  if base["centers"] is not None:  # the method's own centers (raw cluster numbers)
    moved = minibatch.minibatch_update(minibatch.MiniBatchState(base["centers"], base["counts"], 0), z)
    centers, counts = np.asarray(moved.centers), np.asarray(moved.counts)
    movement = np.linalg.norm(centers - base["centers"], axis=1)[np.argsort(order)]  # by reported number
    labels = order[np.asarray(engine._assign(method, run, method.with_centers(run, state, centers), x,
                                             "the new rows").labels)]
  else:
    centers = counts = None
    movement = np.linalg.norm(np.asarray(means.centers) - base["means"], axis=1)
    labels = order[np.asarray(out.labels)]
  scale = float(np.interp(0.5, np.linspace(0, 1, len(reference["quantiles"])), reference["quantiles"]))
  sizes = np.bincount(labels, minlength=run.k)
  before = base["sizes"] / max(base["sizes"].sum(), 1)
  groups = candidate_groups(z, outlier > OUTLIER, min_group or max(10, math.ceil(0.01 * len(z))))
  report = {
      "version": previous + 1, "previous": previous, "rows": int(len(z)),
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "outlier_share": float(np.mean(outlier > OUTLIER)),
      "outlier_share_expected": 1 - OUTLIER,
      "center_movement": [float(v) for v in movement / max(scale, 1e-12)],
      "max_center_movement": float(np.max(movement) / max(scale, 1e-12)),
      "sizes": sizes.tolist(),
      "size_shift": float(0.5 * np.abs(sizes / max(len(z), 1) - before).sum()),
      "candidate_clusters": [{"group": int(g), "rows": int(np.sum(groups == g)),
                              "mean_outlier": float(outlier[groups == g].mean()),
                              "nearest_cluster": int(np.bincount(labels[groups == g]).argmax())}
                             for g in range(int(groups.max()) + 1)],
  }
  folder = version_folder(home, previous + 1)
  if folder.exists() and run.lead:  # a version cut short (no update.json): never resumed, its data may differ
    folder.rmtree()
  if finetune:
    labels, report["finetuned"] = _finetune(home, run, x, folder / "run", replay, training, log)
    sizes = np.bincount(labels, minlength=run.k)
    report.update(sizes=sizes.tolist(), size_shift=float(0.5 * np.abs(sizes / max(len(z), 1) - before).sum()))
  if run.lead:
    folder.mkdir(parents=True, exist_ok=True)
    workdirs.save_npy(folder / "labels.npy", labels)
    workdirs.save_npy(folder / "outlier.npy", outlier)
    workdirs.save_npy(folder / "candidates.npy", groups)
    workdirs.save_npy(folder / "means.npy", np.asarray(means.centers))
    workdirs.save_npy(folder / "mean_counts.npy", np.asarray(means.counts))
    workdirs.save_npy(folder / "sizes.npy", base["sizes"] + sizes)
    if centers is not None:
      workdirs.save_npy(folder / "centers.npy", centers)
      workdirs.save_npy(folder / "counts.npy", counts)
    workdirs.write_json(folder / "update.json", report)  # last: a version is complete once this exists
  log(f"saved to {folder}")
  log(summary_line(report))
  return report


def summary_line(report: dict) -> str:
  groups = report["candidate_clusters"]
  return (f"version {report['version']}: {report['rows']} new rows, sizes {report['sizes']}; outliers "
          f"{report['outlier_share']:.4f} (about {report['outlier_share_expected']:.2f} without drift); centers moved "
          f"at most {report['max_center_movement']:.3f} (in median distances to a center); size shift "
          f"{report['size_shift']:.4f}; candidate new clusters: "
          + (", ".join(f"{g['rows']} rows near cluster {g['nearest_cluster']}" for g in groups) or "none"))


def candidate_groups(z, outliers, min_group: int) -> np.ndarray:
  """``[m]`` int: for the ``outliers`` rows of ``z``, the connected groups of their mutual ``NEIGHBORS``-nearest
  neighbour graph (among outliers) with at least ``min_group`` rows, numbered from 0 by size; -1 elsewhere."""
  out = np.full(len(z), -1, np.int64)
  rows = np.flatnonzero(outliers)
  if len(rows) < max(min_group, 2):
    return out
  from jaxclust.kernels.knn import knn
  k = min(NEIGHBORS, len(rows) - 1)
  found = np.asarray(knn(z[rows], k + 1, metric="euclidean").indices)[:, 1:]  # column 0: the row itself
  graph = csr_matrix((np.ones(found.size), (np.repeat(np.arange(len(rows)), k), found.reshape(-1))),
                     shape=(len(rows), len(rows)))
  mutual = graph.multiply(graph.T)
  _, component = csgraph.connected_components(mutual, directed=False)
  sizes = np.bincount(component)
  big = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] >= min_group]
  for number, c in enumerate(big):
    out[rows[component == c]] = number
  return out


def finetuned(workdir, version: int):
  """The fine-tuned run of update ``version`` of ``workdir``, or None (a version without ``--finetune``)."""
  run = version_folder(workdir, version) / "run"
  return run if version and (run / "summary.json").exists() else None


def _finetune(home, run, x, folder, replay, training, log) -> tuple[np.ndarray, dict]:
  """The fine-tuning run of an update (see :func:`update`); ``(the new rows' labels, its figures)``."""
  from jaxclust import methods, seeding
  from jaxclust.data import sources
  start = time.perf_counter()
  config = ml_collections.ConfigDict(workdirs.read_json(home / "config.json"))
  config.n_clusters, config.report, config.labels = run.k, False, ""
  reuse = getattr(methods.get(config.method), "REUSE", None)
  if reuse and not _setting(config, reuse):  # the run's own earlier stage, unless it took another run's
    config.update_from_flattened_dict({reuse: str(home)})
  old = engine.training_rows(home, training)
  count = min(len(old), len(x) if replay is None else int(replay))
  if count < 1:
    raise ValueError(f"replay={replay}: fine-tuning replays at least one training row")
  pick = np.sort(np.random.default_rng(config.seed + len(versions(home)) + 1).choice(len(old), count, replace=False))
  current = engine.predict(home, old[pick]).labels  # the latest version's clusters of the replayed rows
  rows = np.concatenate([np.asarray(x, np.float32).reshape(len(x), *old.shape[1:]), np.asarray(old[pick], np.float32)])
  folder.mkdir(parents=True, exist_ok=True)
  seeding.write(folder / seeding.FILE, len(x) + np.arange(count), current)
  config.seed_labels = str(folder / seeding.FILE)
  summary = engine.fit(config, folder, data=sources.from_arrays(rows), log=lambda _: None)
  labels = workdirs.load_npy(folder / "labels.npy")[:len(x)]
  log(f"fine-tuned {config.method} on {len(x)} new and {count} replayed rows in {folder}")
  return labels, {"new_rows": int(len(x)), "replayed_rows": int(count), "from": reuse and str(_setting(config, reuse)),
                  "seconds": time.perf_counter() - start, "train_seconds": summary.get("train_seconds")}


def _setting(config, dotted: str):
  from jaxclust import configs
  node, key = configs.locate(config, dotted)
  return node[key]


def _current(run, method, state, home, version: int, order) -> dict:
  """The centers, counts and cluster means the next update starts from: version ``version``'s, or the
  training run's (centers from the method, counts and sizes from the training labels, means from the
  outlier reference)."""
  if version:
    folder = version_folder(home, version)
    has = (folder / "centers.npy").exists()
    return {"centers": workdirs.load_npy(folder / "centers.npy") if has else None,
            "counts": workdirs.load_npy(folder / "counts.npy") if has else None,
            "means": workdirs.load_npy(folder / "means.npy"), "mean_counts": workdirs.load_npy(folder / "mean_counts.npy"),
            "sizes": workdirs.load_npy(folder / "sizes.npy")}
  sizes = np.bincount(workdirs.load_npy(run.workdir / "labels.npy"), minlength=run.k)
  means = workdirs.load_npz(run.workdir / engine.OUTLIERS)["means"]
  centers = np.asarray(method.centers(run, state)) if hasattr(method, "with_centers") else None
  return {"centers": centers, "counts": None if centers is None else sizes[order].astype(np.float32),
          "means": np.where(np.isfinite(means), means, 0.0).astype(np.float32), "mean_counts": sizes.astype(np.float32),
          "sizes": sizes}
