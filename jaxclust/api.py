"""The Python API: scikit-learn-style estimators, one per method, over the training engine.

``DEC(n_clusters=10).fit(X)`` runs exactly what ``jaxclust fit dec`` runs (:func:`jaxclust.engine.fit`): the
same recipe for the data, checkpoints in a workdir (a temporary one unless ``workdir`` is given), resume,
the health checks and the report. ``X`` is an array (``[n, d]`` rows or ``[n, H, W(, C)]`` images, numpy or
JAX), or what the command line's ``--dataset`` takes (a file, an image folder, a ``tfds:`` name).

Settings are the configs' (``jaxclust fit METHOD --help``), as keyword arguments: ``pretrain__epochs=10``
or ``pretrain={"epochs": 10}``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from jaxclust import configs, engine, methods
from jaxclust import metrics as cluster_metrics
from jaxclust import workdir as workdirs
from jaxclust.data import sources


class Estimator:
  """A deep clustering method as an estimator; the subclasses name the method.

  Args:
    n_clusters: clusters to find; 0: the number of classes of ``y`` (or of the dataset's labels); ``"auto"``:
      chosen on ``X`` without labels (:func:`jaxclust.choose_k` over k = 2..30).
    workdir: where the run's checkpoints, labels, summary and report go (default: a new temporary folder).
      A workdir holding a finished run with the same settings is read, not trained again.
    seed: random seed of initialization, batches and augmentation.
    recipe: the recipe to start from (``jaxclust recipes``); default: the one for the data's kind and size.
    verbose: print the run's progress lines.
    **settings: any setting of the method, nested ones as ``group__name=value`` or ``group={...}``.

  Attributes (after :meth:`fit`): ``labels_`` ``[n]``, ``n_clusters_``, ``cluster_names_`` (with seed labels:
  each cluster's name, None where unnamed; else None), ``summary_`` (summary.json),
  ``workdir_``, ``config_``; ``cluster_centers_`` for methods with centers (DEC, IDEC: the Student-t
  centers; VaDE: the mixture means), in the space of :meth:`transform`.
  """
  method = ""

  def __init__(self, n_clusters: int = 0, *, workdir=None, seed: int = 0, recipe: str | None = None,
               verbose: bool = False, **settings):
    self.n_clusters, self.workdir, self.seed, self.recipe, self.verbose = n_clusters, workdir, seed, recipe, verbose
    self.settings = settings

  def get_params(self, deep: bool = True) -> dict:
    del deep
    return {"n_clusters": self.n_clusters, "workdir": self.workdir, "seed": self.seed, "recipe": self.recipe,
            "verbose": self.verbose, **self.settings}

  def set_params(self, **params):
    for key, value in params.items():
      if key in ("n_clusters", "workdir", "seed", "recipe", "verbose"):
        setattr(self, key, value)
      else:
        self.settings[key] = value
    return self

  def __repr__(self) -> str:
    shown = {k: v for k, v in self.get_params().items() if v not in (None, False) and not (k == "n_clusters" and v == 0)}
    return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

  def fit(self, X, y=None, seed_labels=None):
    """Trains (or resumes, or reads a finished run in ``workdir``) on ``X``; ``y``, labels for evaluation only.

    ``seed_labels``: a few labelled rows that start, name and keep their clusters (:mod:`jaxclust.seeding`):
    ``{row: label}``, ``[n]`` labels with -1 or None where unlabelled, or a ``.csv`` of ``index,label`` rows.
    """
    reading = {key: value for key, value in _flat_settings(self.settings) if key in ("image_size", "skip_bad_files")}
    name, data = _data(X, y, **reading)
    n, shape = (data.x.shape[0], data.x.shape[1:]) if data is not None else sources.describe(
        name, image_size=reading.get("image_size", 0))
    config = configs.get_config(self.method, name, recipe=self.recipe, n=n, shape=shape)
    config.seed, config.n_clusters = int(self.seed), -1 if self.n_clusters == "auto" else int(self.n_clusters)
    for key, value in _flat_settings(self.settings):
      _override(config, key, value)
    self.workdir_ = str(workdirs.path(self.workdir or tempfile.mkdtemp(prefix=f"jaxclust-{self.method}-")))
    if seed_labels is not None:
      config.seed_labels = _seed_file(seed_labels, self.workdir_)
    self.summary_ = engine.fit(config, self.workdir_, data=data, log=print if self.verbose else (lambda _: None))
    self.config_ = config
    self._training = None if data is None else data.x  # for kneighbors (a name or path is read again)
    self.labels_ = workdirs.load_npy(workdirs.path(self.workdir_) / "labels.npy")
    self.n_clusters_ = int(self.summary_["k"])
    self.cluster_names_ = engine.cluster_names(self.workdir_)
    return self

  def fit_predict(self, X, y=None) -> np.ndarray:
    return self.fit(X, y).labels_

  def assign(self, X) -> engine.Assignment:
    """``labels``, ``confidence`` (the method's probability of each row's cluster), ``embedding`` and
    ``outlier`` (the share of training rows nearer to their cluster mean; above 0.99: an outlier) of ``X``."""
    self._check_fitted()
    if isinstance(X, (str, os.PathLike)):  # an image folder is read at the size the run was trained on
      X = sources.load_like(os.fspath(X), self.summary_["shape"]).x
    return engine.predict(self.workdir_, X)

  def kneighbors(self, X, n_neighbors: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, indices)``, each ``[m, n_neighbors]``: the training rows nearest to each row of ``X`` in
    the method's embedding (Euclidean, exact), nearest first; their clusters are ``labels_[indices]``."""
    self._check_fitted()
    if isinstance(X, (str, os.PathLike)):
      X = sources.load_like(os.fspath(X), self.summary_["shape"]).x
    out = engine.predict(self.workdir_, X, neighbors=n_neighbors, training=getattr(self, "_training", None))
    return out.neighbor_distances, out.neighbors

  def stability(self, runs: int = 3, *, seeds=None, subsample: float | None = None, cheap: bool = False,
                output=None):
    """:class:`jaxclust.stability.Stability` of this fit against ``runs`` reruns (other seeds, from this run's
    pretraining or pretext where the method has one; ``subsample``: on that share of the rows) or, ``cheap``,
    k-means of its embedding; written to ``output`` (default: the workdir's path + ``-stability``)."""
    from jaxclust import stability
    self._check_fitted()
    return stability.run(self.workdir_, runs=runs, seeds=seeds, subsample=subsample, cheap=cheap, output=output,
                         training=getattr(self, "_training", None), log=print if self.verbose else (lambda _: None))

  def partial_fit(self, X, *, finetune: bool = False, replay: int | None = None) -> "Estimator":
    """Updates the fitted run with new rows ``X`` (:func:`jaxclust.updating.update`): assigns them, moves the
    centers by mini-batch k-means, reports drift (``update_``: outliers, center movement, size shift,
    candidate new clusters) and saves a version under the workdir's ``updates/``; later predictions use it.
    ``finetune``: also trains the method on ``X`` and ``replay`` replayed training rows (default: as many)."""
    from jaxclust import updating
    self._check_fitted()
    if isinstance(X, (str, os.PathLike)):
      X = sources.load_like(os.fspath(X), self.summary_["shape"]).x
    self.update_ = updating.update(self.workdir_, X, finetune=finetune, replay=replay,
                                   training=getattr(self, "_training", None),
                                   log=print if self.verbose else (lambda _: None))
    return self

  def predict(self, X) -> np.ndarray:
    """The cluster of each row of ``X`` (rows shaped and scaled as the training data)."""
    return self.assign(X).labels

  def transform(self, X) -> np.ndarray:
    """The rows of ``X`` in the space the method clusters in (the autoencoder's embedding, the backbone's
    features, the unit embedding of SwAV / DeepCluster-v2)."""
    return self.assign(X).embedding

  def score(self, X, y) -> dict:
    """``{"acc", "nmi", "ari"}`` of the predicted clusters of ``X`` against the labels ``y``."""
    return cluster_metrics.evaluate(np.asarray(y), self.predict(X))

  @property
  def cluster_centers_(self) -> np.ndarray:
    self._check_fitted()
    module = methods.get(self.method)
    if not hasattr(module, "centers"):
      raise AttributeError(f"{type(self).__name__} has no cluster centers: transform(X) gives the embedding, and "
                           "assign(X) each row's cluster and confidence")
    _, run, state = engine.restore(self.workdir_, version=None)  # moved by partial_fit, if it ran
    return np.asarray(module.centers(run, state))

  def _check_fitted(self):
    if not hasattr(self, "workdir_"):
      raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")


def _data(X, y, **reading):
  """``(dataset name, Dataset or None)``: arrays become a :class:`jaxclust.data.sources.Dataset`; a name or
  path is loaded by the engine unless labels ``y`` come with it (``reading``: how an image folder is read)."""
  if isinstance(X, (str, os.PathLike)):
    name = os.fspath(X)
    if y is None:
      return name, None
    return name, sources.from_arrays(sources.load(name, **reading).x, y, name=name)
  return "array", sources.from_arrays(X, y)


def _seed_file(seed_labels, workdir: str) -> str:
  """The path of a seed file: ``seed_labels`` itself when it is one, else the labels written into the workdir
  (the run's own copy, so that resuming with the same labels finds the same settings)."""
  from jaxclust import seeding
  if isinstance(seed_labels, (str, os.PathLike)):
    return os.fspath(seed_labels)
  index, labels = seeding.from_arrays(seed_labels)
  if not len(index):
    raise ValueError("seed_labels has no labelled rows (every entry is -1 or None)")
  path = workdirs.path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  seeding.write(path / seeding.FILE, index, labels)
  return os.fspath(path / seeding.FILE)


def _flat_settings(settings: dict, prefix: str = ""):
  """``(dotted name, value)`` of keyword settings: ``a__b=1`` and ``a={"b": 1}`` are both ``a.b``."""
  for key, value in settings.items():
    name = prefix + key.replace("__", ".")
    if isinstance(value, dict):
      yield from _flat_settings(value, name + ".")
    else:
      yield name, value


def _override(config, name: str, value) -> None:
  """Sets setting ``name`` to ``value``, of the type of its default (an int where a float is expected is
  taken; a list where a tuple is)."""
  if name in ("method", "dataset", "recipe", "seed", "n_clusters"):
    raise ValueError(f"{name} is an argument of the estimator (or of fit), not a setting")
  node, key = configs.locate(config, name)
  default = node[key]
  if isinstance(default, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  expected = type(default)
  if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
    raise ValueError(f"{name}={value!r}: expected {expected.__name__} like the default {default!r}")
  node[key] = value


class DEC(Estimator):
  """DEC (Xie et al. 2016): an autoencoder's embedding sharpened toward its Student-t clusters."""
  method = "dec"


class IDEC(Estimator):
  """IDEC (Guo et al. 2017): DEC keeping the decoder's reconstruction loss."""
  method = "idec"


class VaDE(Estimator):
  """VaDE (Jiang et al. 2017): a variational autoencoder with a Gaussian-mixture prior."""
  method = "vade"


class SCAN(Estimator):
  """SCAN (Van Gansbeke et al. 2020): a contrastive pretext, neighbour consistency, self-labeling."""
  method = "scan"


class SwAV(Estimator):
  """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over multi-crop views."""
  method = "swav"


class DeepClusterV2(Estimator):
  """DeepCluster-v2 (Caron et al. 2020): k-means of a memory bank every epoch, the targets of a prototype
  classifier."""
  method = "deepcluster"


class SimCLR(Estimator):
  """SimCLR pretraining (Chen et al. 2020), then spherical k-means (or the kNN readout) of its features."""
  method = "simclr"


class MoCo(Estimator):
  """MoCo v2 pretraining (Chen et al. 2020), then spherical k-means (or the kNN readout) of its features."""
  method = "moco"


class ContrastiveClustering(Estimator):
  """Contrastive Clustering (Li et al. 2021): instance- and cluster-level contrast of two views, one stage."""
  method = "cc"


class DeepCluster(Estimator):
  """DeepCluster (Caron et al. 2018): k-means of PCA-whitened features every epoch as the targets of a classifier
  re-initialized each time, images sampled uniformly over the clusters."""
  method = "deepcluster2018"
