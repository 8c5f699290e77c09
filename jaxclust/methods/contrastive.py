"""Contrastive pretraining, then k-means: the two-step baseline (`jaxclust fit simclr`, `jaxclust fit moco`).

The field's standard reference point for deep clustering: a network trained by a contrastive pretext
alone, SimCLR (Chen et al., ICML 2020; :mod:`jaxclust.methods.simclr`) or MoCo v2 (Chen et al. 2020;
:mod:`jaxclust.methods.moco`), whose features are then clustered. The method's name says the pretext
(``pretext.method`` follows it); the pretext stage is SCAN's (:func:`jaxclust.methods.scan_epochs.pretext_stage`,
the same views, optimizer and schedules, on the devices or streamed), and so are the recipes' pretext settings.

The readout (``readout.method``) only reads the trained network, so changing it never changes training:

- ``"kmeans"``: spherical k-means (``readout.restarts`` restarts, the lowest inertia) of the unit features
  into the clusters reported; a new row joins the nearest centroid (``centroids.npy``).
- ``"knn"``: the features over-clustered by spherical k-means into ``readout.clusters`` clusters, grouped into
  the clusters reported by the nearest neighbours of their members (:mod:`jaxclust.readout`, the grouping
  SwAV and DeepCluster-v2 read out with); a new row joins its nearest over-cluster's group
  (``centroids.npy``, ``groups.npy``).

``pretext.init_from`` starts from another run's finished pretext (a SCAN, SimCLR or MoCo workdir with the
same network) instead of training one: one pretext, many readouts.

``readout.features`` picks the backbone's pooled features ("backbone", the linear-evaluation features of
the papers) or the projection head's output ("projection"). With seed labels (:mod:`jaxclust.seeding`)
the k-means starts from the labelled classes' mean features (Seeded-KMeans).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxclust import configs, engine, parallel, readout as readouts, seeding
from jaxclust import workdir as workdirs
from jaxclust.data import augment_vectors
from jaxclust.kernels.kmeans import kmeans
from jaxclust.methods import networks, scan_epochs
from jaxclust.models import heads
from jaxclust.validation import check_count

READOUTS = ("kmeans", "knn")
FILES = ("centroids", "groups")


def network(config):
  """The backbone and the projection head of the pretext."""
  return heads.Pretext(networks.backbone(config),
                       heads.ProjectionHead(config.pretext.head_hidden, config.pretext.head_out))


def view_options(config):
  """The pretext's views, hashable (:func:`jaxclust.methods.scan_epochs.view_options` without the strong view,
  which only SCAN's self-labeling uses)."""
  if networks.vectors(config):
    return (scan_epochs.VECTORS, *augment_vectors.options(config))
  return (tuple(config.augment.crop_scale), config.augment.flip_p, 0, 0.0)


def prepare(config, data, mesh) -> engine.Prepared:
  """The images (or vector rows) on the devices, or streamed (``input="tf.data"``), as SCAN's pretext takes
  them; settings that cannot work are refused here, before the workdir is claimed."""
  if config.pretext.method != config.method:
    raise ValueError(f"pretext.method={config.pretext.method!r}, but `fit {config.method}` trains the "
                     f"{config.method} pretext: run `jaxclust fit {config.pretext.method}` instead")
  source, shape, n, classes = networks.training_rows(config, data)
  k = config.n_clusters or classes
  if not k:
    raise ValueError(f"dataset {config.dataset!r} has no labels: set n_clusters")
  k = check_count(k, "n_clusters", low=1, high=n, high_name="n_samples")
  r = config.readout
  if r.method not in READOUTS:
    raise ValueError(f"readout.method={r.method!r} must be one of {', '.join(READOUTS)}")
  if r.features not in ("backbone", "projection"):
    raise ValueError(f"readout.features={r.features!r} must be 'backbone' or 'projection'")
  check_count(r.restarts, "readout.restarts", low=1)
  if r.method == "knn":
    if r.clusters:
      check_count(r.clusters, "readout.clusters", low=k, high=n, high_name="n_samples")
    check_count(r.neighbors, "readout.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  if networks.vectors(config):
    check_count(config.views.neighbors, "views.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  check_count(config.pretext.epochs, "pretext.epochs", low=1)
  check_count(config.pretext.get("warmup_epochs", 0), "pretext.warmup_epochs", low=0, high=config.pretext.epochs,
              high_name="pretext.epochs")
  if config.pretext.batch_size % mesh.size:
    raise ValueError(f"pretext.batch_size={config.pretext.batch_size} is not divisible by the {mesh.size} devices")
  scan_epochs.pretext_options(config)  # a queue that batches do not fill fails here
  if config.pretext.get("init_from"):  # a source without a finished pretext fails before the workdir exists
    scan_epochs.pretext_source(config)[0].close()
  if source is not None:
    return engine.Prepared(k, None, source, n, tuple(shape))
  return engine.Prepared(k, np.asarray(data.x, np.float32))


def stages(run):
  """One stage: the pretext. The clusters are read out of the trained network (:func:`readout`)."""
  config = run.config
  cache = {}

  def context():
    if not networks.vectors(config):
      return None
    if "views" not in cache:
      cache["views"] = augment_vectors.placed_context(run.x, run.n, config.views.neighbors, run.mesh)
    return cache["views"]

  return (scan_epochs.pretext_stage(run, network(config), jnp.zeros((2, *run.shape)), view_options(config),
                                    context),)


def over_clusters(config, k: int) -> int:
  """How many clusters the readout's k-means makes: ``k``, or for readout "knn" ``readout.clusters``
  (0: ten per cluster reported)."""
  if config.readout.method == "kmeans":
    return k
  return config.readout.clusters or 10 * k


def readout(run, state) -> engine.Readout:
  """The clusters of the unit features (k-means, or k-means over-clusters grouped by neighbours)."""
  config, r = run.config, run.config.readout
  z = _unit(scan_epochs.over_images(run, _what(config), network(config), _variables(state)))
  clusters = min(over_clusters(config, run.k), run.n)
  rng = jax.random.fold_in(run.key, 5)
  if run.seeds is not None and r.method == "kmeans":
    centers, codes = seeding.kmeans(parallel.fetch(z)[:run.n], run.seeds, run.k, seed=config.seed)
    centers, inertia = _unit(jnp.asarray(centers)), None
  else:
    out = kmeans(z, clusters, rng=rng, n_init=r.restarts, spherical=True)
    centers, codes, inertia = _unit(out.centers), parallel.fetch(out.labels)[:run.n], float(out.inertia)
  centers = np.asarray(parallel.fetch(centers))
  summary = {"readout": r.method, "features": r.features, "readout_clusters": int(clusters)}
  if inertia is not None:
    summary["kmeans_inertia"] = inertia
  if r.method == "kmeans":
    labels, groups = np.asarray(codes), None
  else:
    groups = readouts.neighbor_groups(z, jnp.asarray(codes), r.neighbors, run.k, centers)
    labels = groups[np.asarray(codes)]
  return engine.Readout(labels, files={"centroids": centers, "groups": groups}, summary=summary,
                        y=None if run.source is None else run.y, embedding=parallel.fetch(z)[:run.n])


def assign(run, state, x) -> engine.Assignment:
  """New rows ``x`` under a finished run: the nearest centroid (or its group, readout "knn"); the confidence is
  the softmax of the cosine similarities at the pretext temperature (summed over a group's clusters)."""
  config = run.config
  x = jnp.asarray(x)
  model = network(config)
  fn = scan_epochs.features if _what(config) == "features" else scan_epochs.projections
  z = _unit(fn(model, _variables(state), x, len(x), scan_epochs.chunk_size(config)))
  centroids = workdirs.load_npy(run.workdir / "centroids.npy")
  p = np.asarray(jax.nn.softmax(z @ jnp.asarray(centroids).T / config.pretext.temperature))
  codes = np.argmax(p, -1)
  if config.readout.method == "kmeans":
    return engine.Assignment(codes, p[np.arange(len(codes)), codes], parallel.fetch(z))
  groups = workdirs.load_npy(run.workdir / "groups.npy")
  grouped = np.stack([p[:, groups == g].sum(-1) for g in range(run.k)], -1)
  labels = groups[codes]
  return engine.Assignment(labels, grouped[np.arange(len(labels)), labels], parallel.fetch(z))


def _what(config) -> str:
  return "features" if config.readout.features == "backbone" else "projections"


def _variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


@jax.jit
def _unit(v):
  v = v.astype(jnp.float32)
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def step_flops(config, shape, k: int) -> dict:
  """Model FLOPs per training image of the pretext stage (``jaxclust bench steps``): SimCLR's two views forward
  and backward (3 forward passes each), MoCo's query view forward and backward and its key view forward."""
  del k
  from jaxclust.models import flops
  model = network(config)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))
  forward = flops.forward_flops(model, variables, (1, *shape), train=False)
  return {"pretext": forward * (6 if config.pretext.method == "simclr" else 4)}


def bench_peers(config, shape, k: int) -> dict:
  """The PyTorch peer of the pretext step (``jaxclust bench steps --peers``)."""
  del k
  return {"pretext": scan_epochs.pretext_peer(config, shape)}


# Settings and recipes: the pretext settings of SCAN's recipe for the same kind of data.


def config() -> ml_collections.ConfigDict:
  """SCAN's pretext settings (SimCLR as in SCAN's CIFAR configs: ResNet-18, batch 512, temperature 0.1, SGD
  0.4, 500 epochs) and the readout."""
  from jaxclust.methods import scan
  base = scan.config()
  c = configs.shared()
  for key in ("backbone", "stem", "dtype", "cnn_channels", "augment", "pretext"):
    c[key] = base[key]
  # readout.method: "kmeans" (spherical k-means into the clusters reported) or "knn" (readout.clusters
  # k-means over-clusters, 0: ten per cluster reported, grouped by their members' readout.neighbors nearest
  # neighbours). restarts: the k-means restarts (the lowest inertia kept). chunk_size: images per pass chunk.
  c.readout = ml_collections.ConfigDict({"method": "kmeans", "features": "backbone", "restarts": 10,
                                         "clusters": 0, "neighbors": 20, "chunk_size": 1024})
  return c


def _from_scan(recipe: str):
  """A recipe that takes SCAN's recipe ``recipe``'s network, views and pretext settings, and for MoCo v2 its
  temperature (0.2), learning rate (0.03 per 256 images) and a queue that the data can fill."""

  def apply(c, n, shape):
    from jaxclust.methods import scan
    base = scan.config()
    base.method = c.method
    scan.RECIPES[recipe].apply(base, n, shape)
    for key in ("backbone", "stem", "dtype", "cnn_channels", "mlp_widths", "standardize", "augment", "views",
                "checkpoint_every"):
      if key in base:
        c[key] = base[key]
      elif key in c:
        del c[key]
    c.pretext = base.pretext
    c.readout.chunk_size = base.mine.chunk_size
    c.pretext.method = c.method
    if c.method == "moco":
      batch = c.pretext.batch_size
      c.pretext.temperature = 0.2
      c.pretext.learning_rate = 0.03 * batch / 256
      rows = n or _REFERENCE[recipe]
      c.pretext.queue_size = batch * max(1, min(65536 // batch, rows // (2 * batch)))

  return apply


# The setting that starts a run from another finished run's pretext (reruns reuse it: jaxclust stability).
REUSE = "pretext.init_from"

_REFERENCE = {"vectors": 10_000, "small_images": 70_000, "images": 50_000, "digits": 1797}

RECIPES = {
    "vectors": configs.Recipe("SCAN's vectors pretext: the MLP on z-scored features, vector views, 1M rows seen; "
                              "k-means of the backbone's features", _from_scan("vectors")),
    "small_images": configs.Recipe("SCAN's small-image pretext, chosen on MNIST: a small CNN, 3.5M images seen; "
                                   "k-means of the backbone's features", _from_scan("small_images")),
    "images": configs.Recipe("SCAN's official CIFAR-10/STL-10 pretext: ResNet-18, 25M images seen",
                             _from_scan("images")),
    "digits": configs.Recipe("a quick demonstration on the 1,797 8x8 digits", _from_scan("digits")),
}
