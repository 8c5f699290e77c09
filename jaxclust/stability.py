"""How stable a run's clusters are: the same method again with other seeds or on subsamples, or (cheaply) k-means
of the run's embedding with other seeds, compared with the run.

- pairwise ARI and NMI between all labelings (the run first);
- per-cluster stability (Hennig 2007): for each of the run's clusters, the Jaccard index of its best match in
  each other labeling, on the rows both labeled, averaged over the other labelings (above 0.75: stable; below
  0.5: dissolved, in Hennig's reading);
- a consensus labeling: each labeling matched to the run's clusters (Hungarian, scipy), then each row's most
  frequent cluster, and its agreement (the share of the labelings that give it).

Reruns start from the run's finished earlier stage where the method has one (its module's ``REUSE`` setting:
the pretrained autoencoder of DEC, IDEC and VaDE, SCAN's pretext) and go into a folder of their own: the run
is only read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxclust import metrics


@dataclasses.dataclass
class Stability:
  names: list  # one per labeling, the run first
  labels: np.ndarray  # [R, n] int, -1 where a labeling left a row out (subsamples)
  ari: np.ndarray  # [R, R] on the rows both labeled
  nmi: np.ndarray  # [R, R]
  cluster_jaccard: np.ndarray  # [k] per cluster of the run: mean best-match Jaccard over the other labelings
  consensus: np.ndarray  # [n] the consensus cluster (in the run's numbering)
  agreement: np.ndarray  # [n] share of the labelings (of those with the row) that give it

  def summary(self) -> dict:
    upper = np.triu_indices(len(self.names), 1)
    return {"labelings": self.names, "mean_ari": float(self.ari[upper].mean()),
            "mean_nmi": float(self.nmi[upper].mean()), "ari": self.ari.round(6).tolist(),
            "nmi": self.nmi.round(6).tolist(), "cluster_jaccard": self.cluster_jaccard.round(6).tolist(),
            "mean_agreement": float(self.agreement.mean()),
            "rows_agreed_by_all": float(np.mean(self.agreement == 1.0))}


def compare(labels, names) -> Stability:
  """:class:`Stability` of ``labels [R, n]`` (ints, -1: row not labeled), the first being the reference."""
  labels = np.asarray(labels, np.int64)
  if labels.ndim != 2 or len(labels) < 2 or len(names) != len(labels):
    raise ValueError(f"compare needs at least 2 labelings [R, n] with a name each, got shape {labels.shape}")
  r = len(labels)
  ari, nmi = np.eye(r), np.eye(r)
  for a in range(r):
    for b in range(a + 1, r):
      both = (labels[a] >= 0) & (labels[b] >= 0)
      ari[a, b] = ari[b, a] = metrics.ari(labels[a][both], labels[b][both])
      nmi[a, b] = nmi[b, a] = metrics.nmi(labels[a][both], labels[b][both])
  reference = labels[0]
  k = int(reference.max()) + 1
  jaccard = np.zeros((r - 1, k))
  votes = np.zeros((len(reference), k))
  votes[np.arange(len(reference)), reference] += 1
  for b in range(1, r):
    both = (reference >= 0) & (labels[b] >= 0)
    table = _table(reference[both], labels[b][both], k, int(labels[b].max()) + 1)
    sizes_a, sizes_b = table.sum(1, keepdims=True), table.sum(0, keepdims=True)
    union = sizes_a + sizes_b - table
    jaccard[b - 1] = np.max(np.where(union > 0, table / np.maximum(union, 1), 0.0), axis=1)
    rows, cols = linear_sum_assignment(-table)  # each of this labeling's clusters -> one of the run's
    mapping = np.full(table.shape[1], -1)
    mapping[cols] = rows
    mapped = np.where(labels[b] >= 0, mapping[np.maximum(labels[b], 0)], -1)
    present = mapped >= 0  # clusters beyond the run's k have no match: they vote for none
    votes[np.flatnonzero(present), mapped[present]] += 1
  consensus = votes.argmax(1)
  counted = (labels >= 0).sum(0)
  agreement = votes[np.arange(len(consensus)), consensus] / np.maximum(counted, 1)
  return Stability(list(names), labels, ari, nmi, jaccard.mean(0), consensus, agreement)


def _table(a, b, ka: int, kb: int) -> np.ndarray:
  table = np.zeros((ka, kb))
  np.add.at(table, (a, b), 1)
  return table


def recluster(embedding, k: int, runs: int, seed: int) -> np.ndarray:
  """``[runs, n]``: k-means of ``embedding [n, e]`` with ``runs`` seedings, in one compiled call."""
  import jax

  from jaxclust.kernels.kmeans import kmeans_range
  z = np.asarray(embedding, np.float32).reshape(len(embedding), -1)
  out = kmeans_range(z, [k], rng=jax.random.key(seed), runs=runs)
  return np.asarray(out.labels)[:, 0]


def plot(result: Stability, path) -> None:
  """Pairwise ARI and per-cluster Jaccard as a PNG at ``path``."""
  from etils import epath

  from jaxclust import figures
  epath.Path(path).write_bytes(figures.stability(result.ari, result.names, result.cluster_jaccard))


def run(workdir, *, runs: int = 3, seeds=None, subsample: float | None = None, cheap: bool = False, output=None,
        training=None, log=print) -> Stability:
  """Compares the finished run in ``workdir`` with ``runs`` others (or one per seed of ``seeds``) and writes
  ``stability.json``, ``consensus.npy`` (``label``, ``agreement``) and ``stability.png`` to ``output`` (default:
  the workdir's path with ``-stability`` appended; the reruns go there too, one folder each, and are read, not
  trained again, when already finished). ``subsample``: each rerun on that share of the rows (seeded), compared
  on the rows both labeled. ``cheap``: no reruns; k-means of the run's embedding with ``runs`` seedings.
  ``training``: the training rows, for a run fitted on arrays in memory (otherwise its dataset is read again)."""
  import ml_collections

  from jaxclust import engine, methods
  from jaxclust import workdir as workdirs
  from jaxclust.data import sources
  path = workdirs.path(workdir)
  summary = workdirs.open(path)
  if summary is None:
    raise ValueError(f"{path} holds no finished run (no summary.json); run `jaxclust fit` to completion first")
  if seeds is None:
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
      raise ValueError(f"runs={runs!r} must be an integer >= 1")
    seeds = [int(summary.get("seed", 0)) + 1 + i for i in range(runs)]
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("seeds must name at least one seed")
  if subsample is not None and not (isinstance(subsample, (int, float)) and 0 < subsample < 1):
    raise ValueError(f"subsample={subsample!r} must be a share of the rows in (0, 1)")
  if cheap and subsample is not None:
    raise ValueError("cheap re-clusters the run's own embedding of every row: it takes no subsample")
  output = workdirs.path(output) if output is not None else path.parent / (path.name + "-stability")
  if output == path:
    raise ValueError(f"output {output} is the run's own workdir: the run is only read; choose another folder")
  output.mkdir(parents=True, exist_ok=True)
  base = workdirs.load_npy(path / "labels.npy")
  labelings, names = [base], ["the run"]
  if cheap:
    embedding = engine.predict(path, engine.training_rows(path, training)).embedding
    labelings += list(recluster(embedding, int(summary["k"]), len(seeds), seeds[0]))
    names += [f"k-means of the embedding, seeding {i + 1}" for i in range(len(seeds))]
  else:
    config = ml_collections.ConfigDict(workdirs.read_json(path / "config.json"))
    config.n_clusters, config.report = int(summary["k"]), False
    reuse = getattr(methods.get(config.method), "REUSE", None)
    if reuse and not _get(config, reuse):
      config.update_from_flattened_dict({reuse: str(path)})
    rows = engine.training_rows(path, training) if subsample is not None or config.dataset == "array" else None
    for seed in seeds:
      rerun = config.copy_and_resolve_references()
      rerun.seed = seed
      name = f"seed{seed}" + (f"-subsample{subsample:g}" if subsample is not None else "")
      data, index = None, np.arange(len(base))
      if rows is not None:
        if subsample is not None:
          keep = max(2, int(round(subsample * len(base))))
          index = np.sort(np.random.default_rng(seed).choice(len(base), keep, replace=False))
        data = sources.from_arrays(rows[index])
      log(f"stability: {config.method} seed {seed}" + (f" on {len(index)} rows" if subsample else "")
          + f" -> {output / name}" + (f" (from {reuse}={path})" if reuse else ""))
      engine.fit(rerun, output / name, data=data, log=lambda line: None)
      labels = np.full(len(base), -1)
      labels[index] = workdirs.load_npy(output / name / "labels.npy")
      labelings.append(labels)
      names.append(name)
  result = compare(np.stack(labelings), names)
  workdirs.write_json(output / "stability.json", result.summary())
  table = np.zeros(len(base), [("label", np.int64), ("agreement", np.float32)])
  table["label"], table["agreement"] = result.consensus, result.agreement
  with (output / "consensus.npy").open("wb") as f:
    np.save(f, table)
  plot(result, output / "stability.png")
  return result


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config.get(part) if config is not None else None
  return config
