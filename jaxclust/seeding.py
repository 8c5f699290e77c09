"""Seeding a run with a few labels: the labelled rows name the clusters, start them, and keep their label.

A seed file (the command line's ``--seed-labels FILE``, the setting ``seed_labels``) has one ``index,label`` row
per labelled training row (a header line is allowed). Labels that are all integers are cluster numbers: label
3 is cluster 3 and must be below ``n_clusters``. Otherwise labels are names: the sorted names become clusters
0, 1, ... and name them. Either way there may be more clusters than labelled classes, so that categories
nobody labelled can still appear.

What every method gets (:func:`name_clusters`, called by the engine at the end of a fit): the clusters are
renumbered so that each labelled class's rows fall in the cluster of its number (a Hungarian match of
clusters to classes on the labelled rows), the labelled rows keep their label, and the names are saved
(``seeding.json``) for predict, the report and the API. What a method does with them during training is its
own (each method module's docstring): DEC and IDEC start their centers from the labelled rows' embeddings
(:func:`initial_centers`, then k-means from there: Seeded-KMeans, Basu, Banerjee & Mooney 2002) and hold the
labelled rows' targets at their class; VaDE starts its mixture the same way; SCAN trains its heads first on
the labelled rows and their mined neighbours (:func:`jaxclust.methods.scan.seed_heads`); DeepCluster-v2 starts
each epoch's k-means from the labelled classes' mean bank embeddings and holds the labelled rows' targets at
their class's prototype; SwAV starts each labelled class's prototype at its rows' mean embedding
(:func:`jaxclust.methods.swav.seed_prototypes`) and holds their Sinkhorn codes at it.
"""

from __future__ import annotations

import csv
import io
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

FILE = "seed_labels.csv"  # the run's own copy of its seed labels, in its workdir
SAVED = "seeding.json"  # the renumbering of a seeded run's clusters and their names, for predict


class Seeds(NamedTuple):
  """Labelled rows: ``index [s]`` rows of the training data, ``cluster [s]`` their cluster in ``[0, k)``;
  ``names`` ``[k]``, each cluster's name (None where no row was labelled with it)."""
  index: np.ndarray
  cluster: np.ndarray
  names: tuple


def read(path) -> tuple[np.ndarray, list[str]]:
  """``(index, label)`` rows of seed file ``path`` (a local path or a URL), unchecked against any data
  (:func:`resolve` checks them)."""
  from jaxclust import workdir as workdirs
  file = workdirs.path(path)
  if not file.is_file():
    raise ValueError(f"seed labels file {path} does not exist" if not file.exists()
                     else f"seed labels file {path} is not a file")
  try:
    text = file.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read seed labels file {path}: {e}") from e
  rows = [[v.strip() for v in row] for row in csv.reader(io.StringIO(text)) if any(v.strip() for v in row)]
  if rows and not _integer(rows[0][0]):
    rows = rows[1:]  # a header line
  if not rows:
    raise ValueError(f"seed labels file {path} has no rows; expected lines `index,label`")
  for line, row in enumerate(rows, 1):
    if len(row) != 2 or not _integer(row[0]):
      raise ValueError(f"seed labels file {path}, row {line}: expected `index,label` with an integer index, "
                       f"got {','.join(row)!r}")
  return np.asarray([int(row[0]) for row in rows], np.int64), [row[1] for row in rows]


def write(path, index, labels) -> None:
  """A seed file (a local path or a URL) of ``index,label`` rows with a header."""
  from jaxclust import workdir as workdirs
  text = io.StringIO()
  out = csv.writer(text, lineterminator="\n")
  out.writerow(["index", "label"])
  out.writerows(zip((int(i) for i in index), (str(v) for v in labels)))
  workdirs.write_text(workdirs.path(path), text.getvalue())


def from_arrays(seed_labels) -> tuple[np.ndarray, list[str]]:
  """The API's ``seed_labels``: a mapping ``{row: label}``, or ``[n]`` labels with -1 (or None) on the
  unlabelled rows (scikit-learn's semi-supervised convention)."""
  if isinstance(seed_labels, dict):
    pairs = sorted(seed_labels.items())
    return np.asarray([int(i) for i, _ in pairs], np.int64), [str(v) for _, v in pairs]
  values = np.asarray(seed_labels, dtype=object).reshape(-1)
  labelled = [i for i, v in enumerate(values) if v is not None and _text(v) != "-1"]
  return np.asarray(labelled, np.int64), [_text(values[i]) for i in labelled]


def resolve(index, labels, *, n: int, k: int, what: str = "the seed labels") -> Seeds:
  """Checks ``(index, labels)`` against ``n`` training rows and ``k`` clusters; each error names the value."""
  index = np.asarray(index, np.int64)
  bad = index[(index < 0) | (index >= n)]
  if bad.size:
    raise ValueError(f"{what}: row index {int(bad[0])} is not a row of the training data (0..{n - 1})")
  seen = {}
  for i, label in zip(index.tolist(), labels):
    if seen.setdefault(i, label) != label:
      raise ValueError(f"{what}: row {i} is labelled both {seen[i]!r} and {label!r}")
  if all(_integer(v) for v in labels):
    cluster = np.asarray([int(v) for v in labels], np.int64)
    out = cluster[(cluster < 0) | (cluster >= k)]
    if out.size:
      raise ValueError(f"{what}: class {int(out[0])} is out of range: integer labels are cluster numbers, "
                       f"0..{k - 1} for n_clusters={k}")
    names = tuple(str(c) if c in set(cluster.tolist()) else None for c in range(k))
  else:
    classes = sorted(set(labels))
    if len(classes) > k:
      raise ValueError(f"{what} name {len(classes)} classes but n_clusters={k}: set n_clusters to at least "
                       f"{len(classes)}")
    number = {name: c for c, name in enumerate(classes)}
    cluster = np.asarray([number[v] for v in labels], np.int64)
    names = tuple(classes) + (None,) * (k - len(classes))
  first = np.unique(index, return_index=True)[1]  # a row listed twice with one label counts once
  return Seeds(index[first], cluster[first].astype(np.int32), names)


def vector(seeds: Seeds | None, rows: int) -> np.ndarray:
  """``[rows]`` int32: each row's seeded cluster, -1 where unlabelled (and on padding rows)."""
  out = np.full((rows,), -1, np.int32)
  if seeds is not None:
    out[seeds.index] = seeds.cluster
  return out


def initial_centers(z, seeds: Seeds, k: int, *, seed: int) -> np.ndarray:
  """``[k, e]`` starting centers: the mean embedding of each labelled class (at its cluster's number), the
  other clusters' by k-means++ sampling (D^2, Arthur & Vassilvitskii 2007) given the seeded ones."""
  z = np.asarray(z, np.float64).reshape(len(z), -1)
  centers = np.zeros((k, z.shape[1]))
  seeded = np.zeros(k, bool)
  for c in np.unique(seeds.cluster):
    centers[c], seeded[c] = z[seeds.index[seeds.cluster == c]].mean(0), True
  rng = np.random.default_rng(seed)
  squares = (z * z).sum(1)
  nearest = np.maximum(squares[:, None] - 2 * z @ centers[seeded].T + (centers[seeded] ** 2).sum(1), 0).min(1)
  for c in np.flatnonzero(~seeded):
    p = nearest / nearest.sum() if nearest.sum() > 0 else np.full(len(z), 1 / len(z))
    centers[c] = z[rng.choice(len(z), p=p)]
    nearest = np.minimum(nearest, ((z - centers[c]) ** 2).sum(-1))
  return centers.astype(np.float32)


def kmeans(z, seeds: Seeds, k: int, *, seed: int):
  """Seeded k-means of the embedding ``z``: Lloyd (:func:`jaxclust.kernels.kmeans.kmeans`) from
  :func:`initial_centers` (Seeded-KMeans, Basu et al. 2002); ``(centers [k, e], labels [n])`` with the
  labelled rows given their class."""
  import jax
  from jaxclust.kernels.kmeans import kmeans as lloyd
  z = np.asarray(z, np.float32).reshape(len(z), -1)
  out = lloyd(z, k, rng=jax.random.key(seed), init=initial_centers(z, seeds, k, seed=seed))
  labels = np.asarray(out.labels).copy()
  labels[seeds.index] = seeds.cluster
  return np.asarray(out.centers), labels


def name_clusters(labels, seeds: Seeds, k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(labels renumbered, order)``: ``order[c]`` is the number of cluster ``c``, chosen so that the labelled
  rows fall in their class's cluster as often as possible (Hungarian match on the labelled rows; clusters no
  labelled row decides keep their number where they can); then every labelled row is given its class."""
  labels = np.asarray(labels)
  agree = np.zeros((k, k))
  np.add.at(agree, (labels[seeds.index], seeds.cluster), 1.0)
  rows, cols = linear_sum_assignment(-(agree * (k + 1) + np.eye(k)))  # agreement first, then the same number
  order = np.empty(k, np.int64)
  order[rows] = cols
  out = order[labels]
  out[seeds.index] = seeds.cluster
  return out, order


def _integer(v) -> bool:
  try:
    int(str(v).strip())
    return True
  except ValueError:
    return False


def _text(v) -> str:
  if isinstance(v, (float, np.floating)) and float(v).is_integer():
    return str(int(v))
  return str(v)
