"""The report of a finished run: ``WORKDIR/report.html``, one self-contained page (its images embedded as
data URIs), and the PNGs it shows under ``WORKDIR/report/``.

At the end of every fit the engine calls :func:`save`, which keeps what later renders cannot get without
the dataset and the network (``report/data.npz``: a sample of at most 5,000 rows of the space the clusters
live in, as principal components, with their clusters, labels and confidence; the per-cluster feature
profile of vector data; the grids of each cluster's most typical and most ambiguous images), then
:func:`render`, which builds the page from those files and the run's summary.json, config.json,
labels.npy, true_labels.npy and metrics.jsonl. ``jaxclust report --workdir DIR`` renders again.

The space is the method's embedding (:attr:`jaxclust.engine.Readout.embedding`: the autoencoder's z for
DEC, IDEC and VaDE, the backbone's features for SCAN, the unit embedding for SwAV and DeepCluster-v2) or,
where a method gives none, the input rows themselves (when they have at most 1,024 features).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from jaxclust import figures, reporting, seeding
from jaxclust import metrics as cluster_metrics
from jaxclust import workdir as workdirs

FOLDER = "report"
DATA = "data.npz"
MAP_ROWS = 5000  # rows of the 2-D map: enough to see the clusters, few enough to draw in a tenth of a second
COMPONENTS = 50  # principal components kept of the sample (UMAP's usual input)
INPUT_FEATURES = 1024  # the widest input rows used as the space when a method gives no embedding
PER_CLUSTER = 8  # images per cluster in each grid
SHOWN = 20  # clusters in the image grids and the profile (the largest, when there are more)
FEATURES = 40  # features in the profile heatmap (the most separating, when there are more)
_NO_SPACE = "the method gives no usable embedding, and the input rows are too wide or were not held"
_OLD = "the run finished before jaxclust saved report data (report/data.npz)"
_HEALTH = ("size_entropy", "prototype_entropy", "embedding_spread", "prototype_span", "batch_spread", "changed")


def space(embedding, rows) -> tuple[str, np.ndarray | None]:
  """``(name, [m, e])``: the rows the report and the label-free scores measure clusters in: the method's
  ``embedding``, else the input ``rows`` flattened when they are narrow enough; ``("", None)`` otherwise."""
  for name, x in (("embedding", embedding), ("input rows", rows)):
    if x is None or (name == "input rows" and math.prod(x.shape[1:]) > INPUT_FEATURES):
      continue
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if np.all(np.isfinite(x)):  # scores of non-finite rows mean nothing (and would stop the run's end)
      return name, x
  return "", None


def save(workdir, *, labels, k: int, seed: int, y=None, rows=None, embedding=None, confidence=None) -> None:
  """What the report shows of the data and the network, to ``WORKDIR/report/`` (the lead process's part
  of the end of fit). ``labels [n]``; ``y [n]`` the true labels or None; ``rows`` the input rows of the
  first ``len(rows)`` labels (images ``[m, H, W, C]`` or vectors ``[m, d]``, or None); ``embedding``
  ``[m, e]`` and ``confidence [n]`` as the method's readout gives them."""
  folder = workdirs.path(workdir) / FOLDER
  folder.mkdir(parents=True, exist_ok=True)
  labels = np.asarray(labels)
  name, points = space(embedding, rows)
  data = {"space": np.asarray(name), "k": np.asarray(k)}
  rng = np.random.default_rng(seed)
  if points is not None:
    m = len(points)
    index = np.sort(rng.choice(m, min(m, MAP_ROWS), replace=False))
    data.update(index=index, labels=labels[index], **_principal_components(points[index]))
    if y is not None:
      data["y"] = np.asarray(y)[index]
    if confidence is not None:
      data["confidence"] = np.asarray(confidence, np.float32)[index]
    umap = _umap(data["components"], seed)
    if umap is not None:
      data["umap"] = umap
  if rows is not None and rows.ndim == 2:
    data.update(_profile(np.asarray(rows, np.float32), labels[:len(rows)], k))
  if rows is not None and rows.ndim == 4:
    data["ranking"] = np.asarray(_image_grids(folder, rows, labels, k, points, confidence,
                                              _names(workdirs.path(workdir))))
  workdirs.save_npz(folder / DATA, **data)


def _principal_components(x) -> dict:
  """``components [m, p]``: ``x [m, e]`` centred and projected on its ``p <= 50`` principal axes;
  ``explained [p]``, the share of the variance each holds. An eigendecomposition of the ``[e, e]``
  covariance: faster than an SVD of ``x`` for the 5,000 rows kept."""
  x = np.asarray(x, np.float64)
  x = x - x.mean(0)
  values, vectors = np.linalg.eigh(x.T @ x)
  order = np.argsort(values)[::-1][:COMPONENTS]
  total = values.sum()
  explained = values[order] / total if total > 0 else np.zeros(len(order))
  return {"components": (x @ vectors[:, order]).astype(np.float32), "explained": explained.astype(np.float32)}


def _umap(components, seed: int):
  """A 2-D UMAP of the components when umap-learn is installed (an optional extra), else None."""
  try:
    import umap
  except ImportError:
    return None
  return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(components), np.float32)


def _profile(rows, labels, k: int, chunk: int = 65536) -> dict:
  """Per cluster, the mean of every feature as a z-score of that feature over all ``rows [m, d]``. Sums in
  float64 over row chunks: a float64 copy of a large table would not fit beside it."""
  sums, squares = np.zeros((k, rows.shape[1])), np.zeros(rows.shape[1])
  for start in range(0, len(rows), chunk):
    block, ids = rows[start:start + chunk].astype(np.float64), labels[start:start + chunk]
    sums += sparse.csr_matrix((np.ones(len(ids)), (ids, np.arange(len(ids)))), shape=(k, len(ids))) @ block
    squares += np.sum(block * block, axis=0)
  sizes = np.bincount(labels, minlength=k)
  mean = sums.sum(0) / len(rows)
  std = np.sqrt(np.maximum(squares / len(rows) - mean * mean, 0.0))
  means = sums / np.maximum(sizes, 1)[:, None]
  spread = std > 1e-6 * np.maximum(np.abs(mean), 1.0)  # a constant feature separates nothing
  z = np.where(spread, (means - mean) / np.where(spread, std, 1.0), 0.0)
  return {"profile": np.where(sizes[:, None] > 0, z, 0.0).astype(np.float32), "profile_sizes": sizes}


def _names(path) -> list:
  """Each cluster's name from a seeded run's seeding.json (:mod:`jaxclust.seeding`), else all None."""
  saved = path / seeding.SAVED
  return workdirs.read_json(saved)["names"] if saved.exists() else None


def _image_grids(folder, images, labels, k: int, points, confidence, names=None) -> str:
  """Each shown cluster's most typical and most ambiguous images, to typical.png and ambiguous.png (and the
  typical ones to the workdir's exemplars.png); returns how members were ranked."""
  m = len(images)
  if confidence is not None:
    ranking = "confidence"
    typical = ambiguous = np.asarray(confidence, np.float32)[:m]
  elif points is not None:  # a method without probabilities: distances to the centroids in its space
    ranking = "distance to the cluster's center"
    m = min(m, len(points))
    own, other = (np.asarray(a) for a in cluster_metrics.center_distances(points[:m], labels[:m], k=k))
    typical = -own
    ambiguous = (other - own) / np.maximum(np.maximum(own, other), 1e-12)  # the simplified silhouette
  else:
    ranking = "none (first members shown)"
    typical = ambiguous = -np.arange(m, dtype=np.float32)
  labels = labels[:m]
  sizes = np.bincount(labels, minlength=k)
  shown = np.sort(np.argsort(-sizes, kind="stable")[:SHOWN])
  shown = shown[sizes[shown] > 0]
  position = np.full(k, -1)
  position[shown] = np.arange(len(shown))
  names = [f"cluster {c}{'' if not names or names[c] is None else ' ' + str(names[c])} ({sizes[c]})" for c in shown]
  for file, score in (("typical.png", typical), ("ambiguous.png", None if ranking.startswith("none") else
                                                 -ambiguous)):
    if score is None:
      continue
    grid = reporting.exemplar_grid(images, position[labels], score, len(shown), PER_CLUSTER)
    png = figures.image_grid(grid, names, PER_CLUSTER)
    workdirs.write_bytes(folder / file, png)
    if file == "typical.png":
      workdirs.write_bytes(folder.parent / "exemplars.png", png)
  return ranking


def render(workdir) -> str:
  """Writes ``WORKDIR/report.html`` and its PNGs from a finished run's files; returns the page's path.

  Raises:
    ValueError: ``workdir`` does not exist or holds no finished run.
  """
  path = workdirs.path(workdir)
  if not path.exists():
    raise ValueError(f"--workdir {workdir} does not exist")
  if workdirs.open(path) is None:
    raise ValueError(f"{path} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  if not (path / "labels.npy").exists():
    raise ValueError(f"{path} holds a summary.json but no labels.npy: not a workdir of a finished jaxclust run")
  start = time.perf_counter()
  summary = workdirs.read_json(path / "summary.json")
  config = workdirs.read_json(path / "config.json") if (path / "config.json").exists() else {}
  labels = workdirs.load_npy(path / "labels.npy")
  y = workdirs.load_npy(path / "true_labels.npy") if (path / "true_labels.npy").exists() else None
  folder = path / FOLDER
  folder.mkdir(parents=True, exist_ok=True)
  data = workdirs.load_npz(folder / DATA) if (folder / DATA).exists() else None
  k = int(summary["k"])
  page = _Page(folder)
  page.add(_facts(summary))
  page.add(_quality(summary, data))
  page.add(*_sizes(page, labels, k, summary))
  page.add(*_seeded(path, labels, k, y))
  page.add(*_map(page, data, k))
  page.add(*_exemplars(page, folder, data))
  page.add(*_truth(page, summary, labels, y))
  page.add(*_training(page, path / "metrics.jsonl"))
  page.add(*_stability(page, path.parent / (path.name + "-stability")))
  page.add(f"<h2>Settings</h2><details><summary>config.json</summary><pre>"
           f"{html.escape(json.dumps(config, indent=2))}</pre></details>")
  title = f"{summary['method']} on {summary['dataset']}"
  page.add(f"<p class=note>Rendered in {time.perf_counter() - start:.2f} s by <code>jaxclust report</code>.</p>")
  workdirs.write_text(path / "report.html", _HTML.format(title=html.escape(title), body="\n".join(page.parts)))
  return str(path / "report.html")


class _Page:
  """The page's parts in order, and its figures: each written to ``report/NAME.png`` and embedded."""

  def __init__(self, folder):
    self.folder, self.parts = folder, []

  def add(self, *parts):
    self.parts.extend(part for part in parts if part)

  def image(self, name: str, png: bytes, alt: str, write: bool = True) -> str:
    if write:
      workdirs.write_bytes(self.folder / f"{name}.png", png)
    return (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}" '
            f'title="{FOLDER}/{name}.png">')


def _seeded(path, labels, k, y):
  """A seeded run's named clusters: size, and with true labels the most common one and its share."""
  names = _names(path)
  if names is None:
    return ()
  sizes = np.bincount(labels, minlength=k)
  rows = []
  for c in range(k):
    cells = [str(c), html.escape("" if names[c] is None else str(names[c])), str(sizes[c])]
    if y is not None:
      members = np.asarray(y)[labels == c]
      values, counts = np.unique(members, return_counts=True) if len(members) else ([], [])
      cells.append(f"{html.escape(str(values[np.argmax(counts)]))} ({counts.max() / len(members):.3f})"
                   if len(members) else "-")
    rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
  head = ["cluster", "name", "rows"] + (["most common true label (share)"] if y is not None else [])
  labelled = sum(v is not None for v in names)
  return ("<h2>Named clusters</h2>",
          f"<p>{labelled} of {k} clusters are named after the seed labels (<code>{seeding.FILE}</code>); the labelled "
          "rows keep their class; the rest were free to form clusters of their own.</p>",
          "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _stability(page, folder):
  """The results of ``jaxclust stability`` in its default folder (``WORKDIR-stability``), when it was run."""
  if not (folder / "stability.json").exists():
    return ()
  s = workdirs.read_json(folder / "stability.json")
  weak = [j for j, v in enumerate(s["cluster_jaccard"]) if v < 0.5]
  line = (f"<p>{len(s['labelings'])} labelings ({html.escape(', '.join(s['labelings']))}): mean pairwise ARI "
          f"{s['mean_ari']:.4f}, NMI {s['mean_nmi']:.4f}; rows every labeling agrees on: {s['rows_agreed_by_all']:.4f}. "
          f"Clusters whose best match elsewhere has a Jaccard index below 0.5 (they dissolve): "
          f"{', '.join(map(str, weak)) or 'none'}. From <code>{html.escape(str(folder))}</code>.</p>")
  png = (folder / "stability.png").read_bytes() if (folder / "stability.png").exists() else None
  return "<h2>Stability</h2>", line, png and page.image("stability", png, "stability", write=False)


def _number(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _facts(summary) -> str:
  rows = [("method", summary["method"]), ("dataset", summary["dataset"]),
          ("rows", f"{summary['n']} of shape {tuple(summary['shape'])}"), ("clusters", summary["k"]),
          ("seed", summary["seed"]), ("devices", f"{summary['devices']} in {summary['processes']} process(es)"),
          ("training", f"{summary.get('train_seconds', 0.0):.1f} s ({summary['wall_seconds']:.1f} s wall)")]
  table = "".join(f"<tr><th>{name}</th><td>{_number(value)}</td></tr>" for name, value in rows)
  warning = ("<p class=warn>Collapsed: the cluster-size entropy is below 0.1 or fewer than half of the clusters are "
             "used; try a lower learning rate or another seed.</p>" if summary.get("collapsed") else "")
  return f"<h1>jaxclust report: {html.escape(summary['method'])} on {html.escape(summary['dataset'])}</h1>" \
         f"<table>{table}</table>{warning}"


def _quality(summary, data) -> str:
  names = (("silhouette", "in [-1, 1], higher is better: how much closer rows are to their own cluster than to "
            "the next (on a sample of 2,000 rows)"),
           ("davies_bouldin", "0 or more, lower is better: each cluster's spread against its distance to the most "
            "similar cluster"),
           ("calinski_harabasz", "higher is better: the spread between clusters against the spread within them"))
  found = [(name, summary[name], meaning) for name, meaning in names if name in summary]
  space_name = summary.get("quality_space", "")
  if not found:
    why = _OLD if data is None else "fewer than two clusters are in use" if space_name else _NO_SPACE
    return f"<h2>Label-free quality</h2><p>Not computed: {why}.</p>"
  where = ("the method's embedding (the space it clusters in)" if space_name == "embedding" else
           "the input rows (the method gives no usable embedding)")
  rows = "".join(f"<tr><th>{name}</th><td>{value:.4f}</td><td>{meaning}</td></tr>" for name, value, meaning in found)
  return f"<h2>Label-free quality</h2><p>Measured in {where}.</p><table>{rows}</table>"


def _sizes(page, labels, k, summary):
  counts = np.bincount(labels, minlength=k)
  line = (f"<p>{int(np.sum(counts > 0))} of {k} clusters used; sizes {counts.min()} to {counts.max()}; normalized "
          f"size entropy {summary['size_entropy']:.3f} (1: all equal).</p>")
  return "<h2>Cluster sizes</h2>", line, page.image("sizes", figures.sizes(counts), "cluster sizes")


def _map(page, data, k):
  if data is None or "components" not in data:
    why = _OLD if data is None else _NO_SPACE
    return "<h2>Map of the embedding</h2>", f"<p>No rows to map: {why}.</p>"
  if "umap" in data:
    points, how = data["umap"], "UMAP"
  else:
    points = data["components"][:, :2]
    if points.shape[1] < 2:
      points = np.c_[points, np.zeros(len(points))]
    how = f"PCA ({100 * float(data['explained'][:2].sum()):.0f}% of the variance)"
  where = "embedding" if str(data["space"]) == "embedding" else "input rows (the method gives no usable embedding)"
  title = f"{how} of {len(points)} sampled rows of the {where}"
  png = figures.embedding_map(points, data["labels"], k, data.get("y"), title=title)
  return "<h2>Map of the embedding</h2>", f"<p>{html.escape(title)}.</p>", page.image("map", png, title)


def _exemplars(page, folder, data):
  if data is not None and "profile" in data:
    return _profile_section(page, data)
  if data is None or "ranking" not in data:
    return ()
  ranking = str(data["ranking"])
  parts = ["<h2>Exemplars</h2>", f"<p>Members ranked by {html.escape(ranking)}; one row per cluster that has "
           f"members (the {SHOWN} largest when there are more).</p>"]
  for name, what in (("typical", "Most typical members"), ("ambiguous", "Most ambiguous members")):
    if (folder / f"{name}.png").exists():
      parts += [f"<h3>{what}</h3>", page.image(name, (folder / f"{name}.png").read_bytes(), what, write=False)]
  return parts


def _profile_section(page, data):
  """The heatmap of the most separating features and, per cluster, its features furthest from the rest."""
  z, sizes = data["profile"], data["profile_sizes"]
  n = sizes.sum()
  # (cluster mean - mean of the other rows) / spread = z * n / (n - n_c): ranks a cluster's features as z does.
  separation = z * (n / np.maximum(n - sizes, 1))[:, None]
  clusters = np.sort(np.argsort(-sizes, kind="stable")[:SHOWN])
  clusters = clusters[sizes[clusters] > 0]
  strength = np.abs(separation[clusters]).max(0)
  features = np.sort(np.argsort(-strength, kind="stable")[:FEATURES])
  png = figures.profile(z[np.ix_(clusters, features)], clusters, [str(f) for f in features])
  items = []
  for c in clusters:
    top = np.argsort(-np.abs(separation[c]), kind="stable")[:5]
    items.append(f"<li>cluster {c} ({sizes[c]} rows): " + ", ".join(
        f"feature {f} {separation[c, f]:+.2f}" for f in top) + "</li>")
  return ("<h2>Cluster profiles</h2>",
          f"<p>Each cluster's mean of each feature as a z-score (red: above the feature's mean over all rows, blue: "
          f"below); the {len(features)} features that separate the clusters most (features are numbered by column, "
          "from 0).</p>", page.image("profile", png, "cluster profiles"),
          "<p>Features furthest from the rest of the rows, per cluster (difference of means in units of the "
          "feature's spread):</p><ul>" + "".join(items) + "</ul>")


def _truth(page, summary, labels, y):
  if y is None:
    return ()
  scores = cluster_metrics.evaluate(y, labels)
  table = cluster_metrics.contingency(y, labels)
  classes, clusters = np.unique(y), np.unique(labels)
  rows, cols = linear_sum_assignment(table, maximize=True)
  matched = list(cols[np.argsort(rows)])
  rest = sorted(set(range(len(clusters))) - set(matched), key=lambda c: (np.argmax(table[:, c]), c))
  order = matched + rest
  png = figures.confusion(table[:, order], classes, clusters[order])
  line = " ".join(f"{name.upper()} {scores[name]:.4f}" for name in ("acc", "nmi", "ari"))
  return ("<h2>Against the true labels</h2>",
          f"<p>{line} (ACC under the best one-to-one matching of clusters to labels, Hungarian).</p>",
          page.image("confusion", png, "confusion matrix"))


def _training(page, file):
  """Loss, agreement with the labels and the collapse figures per stage, from metrics.jsonl."""
  if not file.exists():
    return ()
  last = {}
  for line in file.read_text().splitlines():
    record = json.loads(line)
    if "seconds" in record:  # an epoch's (or interval's) record; an epoch redone after a kill counts once
      last[(record["stage"], record.get("epoch"), record.get("step"))] = record
  stages = {}
  for record in last.values():
    stages.setdefault(record["stage"], []).append(record)
  panels = []
  for stage, records in stages.items():
    x_name = "step" if "step" in records[0] else "epoch"
    records.sort(key=lambda r: r.get(x_name, 0))
    row = []
    for title, keys in (("loss", ("loss",)), ("against the labels", ("acc", "nmi", "ari")),
                        ("cluster health", _HEALTH)):
      series = {}
      for key in keys:
        points = [(r.get(x_name, 0), r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
          series[key] = tuple(np.asarray(p) for p in zip(*points))
      if series:
        row.append((title, series, x_name))
    if row:
      panels.append((stage, row))
  if not panels:
    return ()
  return "<h2>Training</h2>", page.image("curves", figures.curves(panels), "training curves")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jaxclust: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222;
       background: #fff; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ text-align: left; padding: 0.2em 0.8em 0.2em 0; vertical-align: top; font-size: 0.95em; }}
th {{ font-weight: 600; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }}
.warn {{ color: #a40000; font-weight: 600; }}
.note {{ color: #777; font-size: 0.85em; }}
pre {{ font-size: 0.8em; background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
</style></head>
<body>
{body}
</body></html>
"""
