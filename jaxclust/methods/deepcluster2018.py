"""DeepCluster (Caron, Bojanowski, Joulin & Douze, ECCV 2018): k-means of the network's features as its
classification targets, alternated every epoch. (`deepcluster` is the SwAV paper's DeepCluster-v2, another
algorithm: :mod:`jaxclust.methods.deepcluster`.)

Each epoch:

1. the features of every image (evaluation mode, un-augmented; the output of the MLP on the backbone, before
   its last ReLU) are computed on the devices;
2. reduced to ``pca_dim`` dimensions (256 in the paper), whitened and l2-normalized
   (:func:`jaxclust.pca`, row-sharded);
3. clustered by k-means into ``clusters`` groups (10,000 for ImageNet in the paper: over-clustering), with
   the paper's rule for empty clusters (:func:`jaxclust.kmeans` ``empty="split"``: a non-empty cluster is
   drawn by size and split in two);
4. the classifier on top (``ReLU``, then a linear layer to ``clusters`` outputs) is re-initialized, with a fresh
   optimizer state, since the new clusters' numbering has nothing to do with the old one's;
5. the network trains one epoch of ``n`` images sampled uniformly over the clusters (an equal number from
   each non-empty cluster, with replacement where a cluster is smaller: the paper's sampler, against a
   trivial parametrization that a few large clusters would otherwise favour), each under a random crop and
   flip, with the cross-entropy of its cluster.

``sobel=True`` puts the paper's fixed input filter first: the images to grayscale (the mean of the channels),
then the horizontal and vertical Sobel gradients as two channels. The record of an epoch holds the NMI between
its clusters and the previous epoch's (the paper's measure of the targets' stability) and, on labelled data,
the NMI with the labels.

The clusters of a run are those of a last clustering of the trained network's features; reported as fewer
clusters than ``clusters`` (``n_clusters``), they are grouped as SwAV's and DeepCluster-v2's over-clusters are
(``readout``: spherical k-means of the reduced features, or the neighbours of each cluster's members;
:mod:`jaxclust.readout`). Vector rows train the MLP backbone on :mod:`jaxclust.data.augment_vectors`' views.

With ``input="tf.data"`` the images stream from a :class:`jaxclust.data.stream.Source` (an array, or a tfds
dataset never loaded whole): the feature pass reads the stream in order, and since a stream cannot draw rows
at random, every image is seen once per epoch (views made on the host) with its loss weighted by
``n / (clusters used x its cluster's size)``, so that each cluster weighs the same, as the paper's sampler
makes them (not in the paper).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from jaxclust import configs, engine, epochs, parallel, readout as readouts
from jaxclust import metrics as cluster_metrics
from jaxclust import workdir as workdirs
from jaxclust.data import augment, augment_tf, augment_vectors, stream
from jaxclust.kernels.kmeans import kmeans
from jaxclust.kernels.pca import pca, pca_transform
from jaxclust.methods import networks
from jaxclust.validation import check_count

_SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], np.float32)


def sobel(images):
  """The paper's fixed input filter: ``[B, H, W, C]`` to grayscale (the channels' mean), then its horizontal and
  vertical Sobel gradients, ``[B, H, W, 2]`` (zero padding)."""
  gray = jnp.mean(images.astype(jnp.float32), axis=-1, keepdims=True)
  kernel = jnp.stack([_SOBEL_X, _SOBEL_X.T], axis=-1)[:, :, None, :]  # HWIO: [3, 3, 1, 2]
  return jax.lax.conv_general_dilated(gray, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Body(nn.Module):
  """The network under the classifier: the optional Sobel filter, the backbone, then an MLP whose last layer's
  output (before its ReLU) is the feature clustered."""
  backbone: nn.Module
  widths: tuple = (4096, 4096)
  sobel: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.sobel:
      x = sobel(x)
    h = self.backbone(x, train)
    for i, width in enumerate(self.widths):
      h = nn.Dense(width, name=f"mlp_{i}")(nn.relu(h) if i else h)
    return h


class Top(nn.Module):
  """The classifier re-initialized every epoch: ReLU, then a linear layer to the clusters."""
  clusters: int

  @nn.compact
  def __call__(self, h):
    return nn.Dense(self.clusters, name="out")(nn.relu(h))


class DeepClusterState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # {"body": ..., "top": ...}
  batch_stats: Any
  opt_body: Any
  opt_top: Any  # re-initialized with the top every epoch
  assignments: jax.Array  # [rows] int32: the last epoch's clusters (the NMI with the next; checkpointed)


def cluster_features(features, *, dim: int, clusters: int, rng, max_iter: int = 20, mask=None):
  """Steps 2-3: ``(codes [n], centers [clusters, dim], z [n, dim], (mean, projection))``: the features PCA-reduced,
  whitened, l2-normalized (``z``) and clustered by k-means with the paper's empty-cluster rule. ``projection``
  ``[dim, d]`` maps centered features to the whitened axes."""
  out = pca(features, dim)
  z = pca_transform(features, out, whiten=True, normalize=True)
  weights = None if mask is None else mask.astype(jnp.float32)
  found = kmeans(z, clusters, rng=rng, max_iter=max_iter, empty="split", sample_weight=weights)
  projection = out.components / jnp.sqrt(out.explained_variance)[:, None]
  return found.labels, found.centers, z, (out.mean, projection)


def uniform_sample(codes, clusters: int, n: int, rng: np.random.Generator) -> np.ndarray:
  """``[n]`` row indices sampled uniformly over the non-empty clusters of ``codes``: ``n // used + 1`` rows of
  each (with replacement where the cluster has fewer), shuffled, the first ``n`` kept."""
  codes = np.asarray(codes)
  used = np.flatnonzero(np.bincount(codes, minlength=clusters))
  per = n // len(used) + 1
  picks = [rng.choice(members, per, replace=len(members) < per)
           for members in (np.flatnonzero(codes == c) for c in used)]
  out = np.concatenate(picks)
  rng.shuffle(out)
  return out[:n].astype(np.int32)


def cluster_weights(assignments, index, clusters: int):
  """``n / (used x size of the cluster)`` of the rows ``index``, from every row's cluster (``assignments``, -1 on
  padding rows): a pass over every row once then weighs each non-empty cluster ``n / used``, as the uniform
  sampler draws ``n / used`` rows of each."""
  valid = assignments >= 0
  sizes = jnp.zeros(clusters, jnp.float32).at[jnp.where(valid, assignments, 0)].add(valid.astype(jnp.float32))
  used = jnp.sum(sizes > 0)
  return jnp.sum(sizes) / (used * jnp.maximum(sizes[jnp.maximum(assignments[index], 0)], 1.0))


def train_step(state: DeepClusterState, batch, rng, *, body, top, tx, augment):
  """One step on ``{"image", "target", "mask"}`` (rows the uniform sampler drew): ``augment(rng, images)``, the
  cross-entropy of each image's cluster (padding masked out); the body and the top each with their optimizer.
  A streamed batch ``{"views": (view, _), "index", "mask"}`` (host-made views of rows in turn) takes its targets
  from ``state.assignments`` and weighs each image by :func:`cluster_weights`."""
  rng = jax.random.fold_in(rng, state.step)
  mask = batch["mask"]
  if "views" in batch:
    views, index = batch["views"][0], batch["index"]
    targets = jnp.maximum(state.assignments[index], 0)
    weight = mask * cluster_weights(state.assignments, index, top.clusters)
  else:
    views, targets, weight = augment(rng, batch["image"]), batch["target"], mask.astype(jnp.float32)

  def loss_fn(params):
    h, updates = body.apply({"params": params["body"], "batch_stats": state.batch_stats}, views, train=True,
                            mutable=["batch_stats"])
    logits = top.apply({"params": params["top"]}, h).astype(jnp.float32)
    per_image = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss = jnp.sum(weight * per_image) / jnp.maximum(jnp.sum(weight), 1e-12)
    return loss, updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  body_updates, opt_body = tx.update(grads["body"], state.opt_body, state.params["body"])
  top_updates, opt_top = tx.update(grads["top"], state.opt_top, state.params["top"])
  params = {"body": optax.apply_updates(state.params["body"], body_updates),
            "top": optax.apply_updates(state.params["top"], top_updates)}
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_body=opt_body,
                       opt_top=opt_top), {"loss": loss}


# -- The run: what the engine (jaxclust.engine) calls.

FILES = ("pca_mean", "pca_projection", "kmeans_centers", "centroids", "groups")


def body_network(config) -> Body:
  return Body(networks.backbone(config), widths=tuple(config.mlp_head), sobel=bool(config.sobel))


def optimizer(config):
  """SGD with momentum 0.9 and weight decay (the paper: learning rate 0.05, weight decay 1e-5), constant."""
  return epochs.same(optax.chain, epochs.same(optax.add_decayed_weights, config.weight_decay),
                     epochs.same(optax.sgd, config.learning_rate, momentum=0.9))


def prepare(config, data, mesh) -> engine.Prepared:
  source, shape, n, classes = networks.training_rows(config, data)
  clusters = check_count(config.clusters, "clusters", low=2, high=n, high_name="n_samples")
  k = check_count(config.n_clusters or classes or clusters, "n_clusters", low=2, high=clusters, high_name="clusters")
  check_count(config.epochs, "epochs", low=1)
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
  if not config.mlp_head:
    raise ValueError("mlp_head=() : DeepCluster clusters the output of an MLP on the backbone; give it at least "
                     "one layer")
  check_count(config.pca_dim, "pca_dim", low=1, high=min(n, int(config.mlp_head[-1])),
              high_name="min(n_samples, mlp_head[-1])")
  if config.readout not in readouts.READOUTS:
    raise ValueError(f"readout={config.readout!r} must be 'kmeans' or 'knn'")
  if networks.vectors(config):
    if config.sobel:
      raise ValueError("sobel=True filters images; vector rows (backbone='mlp') need sobel=False")
    check_count(config.views.neighbors, "views.neighbors", low=1, high=n - 1, high_name="n_samples - 1")
  if source is not None:
    return engine.Prepared(k, None, source, n, tuple(shape))
  return engine.Prepared(k, np.asarray(data.x, np.float32))


def stages(run):
  """One stage of ``epochs`` epochs, each reclustering then training (see the module's docstring)."""
  config = run.config
  body, top, tx = body_network(config), Top(config.clusters), optimizer(config)
  example = jnp.zeros((2, *run.shape))
  vectors = networks.vectors(config)
  view = ("vectors", *augment_vectors.options(config)) if vectors else (
      tuple(config.crop_scale), float(config.flip_p))
  cache = {}

  def fresh(rng):
    variables = body.init(rng, example, train=False)
    top_params = top.init(jax.random.fold_in(rng, 1), jnp.zeros((1, config.mlp_head[-1])))["params"]
    return DeepClusterState(step=jnp.int32(0), params={"body": variables["params"], "top": top_params},
                            batch_stats=variables.get("batch_stats", {}), opt_body=tx.init(variables["params"]),
                            opt_top=tx.init(top_params), assignments=jnp.full((run.rows,), -1, jnp.int32))

  def start(run, previous):
    return parallel.put(jax.jit(fresh)(jax.random.fold_in(run.key, 0)), run.mesh)

  def template(run):
    return parallel.put(jax.jit(fresh)(jax.random.key(0)), run.mesh)

  def epoch(run, state, epoch):
    rng = jax.random.fold_in(run.key, 1_000_000 + epoch)
    codes, _, _, _ = _cluster(run, body, state, jax.random.fold_in(rng, 1))
    previous = parallel.fetch(state.assignments)[:run.n]
    top_params = jax.jit(top.init)(jax.random.fold_in(rng, 2), jnp.zeros((1, config.mlp_head[-1])))["params"]
    assignments = np.full(run.rows, -1, np.int32)
    assignments[:run.n] = codes
    # Only the new parts are placed: the body's parameters and optimizer state stay on the devices.
    fresh = parallel.put(jax.tree.map(np.asarray, (top_params, tx.init(top_params), assignments)), run.mesh)
    state = state.replace(params={**state.params, "top": fresh[0]}, opt_top=fresh[1], assignments=fresh[2])
    if run.source is not None:  # every image once, weighted by its cluster's size (the module's docstring)
      host = _host_view(run.shape, *view)
      step = epochs.host_step(train_step, body=body, top=top, tx=tx, augment=None)
      state, m = epochs.host_epoch(step, state, jax.random.fold_in(rng, 3), stream.source_view_batches(
          run.source, views=(host, host), batch_size=config.batch_size, seed=config.seed, epoch=epoch, mesh=run.mesh))
    else:
      sample = uniform_sample(codes, config.clusters, run.n, np.random.default_rng([config.seed, epoch]))
      aux = parallel.put((sample, assignments), run.mesh)
      if vectors:
        if "views" not in cache:
          cache["views"] = augment_vectors.placed_context(run.x, run.n, config.views.neighbors, run.mesh)
        aux = (*aux, cache["views"])
      state, m = _epoch(body, top, tx, config.batch_size, run.n, run.shape, view, epochs.shard(run.mesh))(
          state, run.x, aux, jax.random.fold_in(rng, 3))
    used = int(np.count_nonzero(np.bincount(codes, minlength=config.clusters)))
    record = {"loss": float(m["loss"]), "clusters_used": used}
    if epoch:  # the paper's Fig. 2(b): how much the targets moved since the previous epoch
      record["nmi_previous"] = float(cluster_metrics.nmi(previous, codes))
    record.update(engine.warn_collapse(codes, config.clusters, "k-means clusters"))
    if run.y is not None:
      record["nmi_labels"] = float(cluster_metrics.nmi(run.y, codes))
    return state, record

  return (engine.Stage("deepcluster", config.epochs, start, template, epoch),)


def _cluster(run, body, state, rng):
  """Steps 1-3 on the run's rows: ``(codes [n] host, centers, z [n, dim], (mean, projection))``."""
  if run.source is None:
    features = _features(body, _variables(state), run.x, run.n, run.config.chunk_size)
  else:  # a pass over the stream in dataset order
    size = -(-run.config.chunk_size // run.mesh.size) * run.mesh.size
    (features,), y, _ = stream.predict_in_order(
        lambda b: (_features(body, _variables(state), b, size, size),), run.source, size=None, batch_size=size,
        mesh=run.mesh)
    if run.y is None and y is not None:
      run.y = y
    features = jnp.asarray(features)
  codes, centers, z, affine = cluster_features(features, dim=run.config.pca_dim, clusters=run.config.clusters,
                                               rng=rng, max_iter=run.config.kmeans_iterations)
  return np.asarray(parallel.fetch(codes)), centers, z, affine


def readout(run, state) -> engine.Readout:
  """The clusters of a last clustering of the trained network; grouped (``readout``) when fewer are reported."""
  config = run.config
  body = body_network(config)
  codes, centers, z, (mean, projection) = _cluster(run, body, state, jax.random.fold_in(run.key, 9_000_000))
  files = {"pca_mean": np.asarray(mean), "pca_projection": np.asarray(projection),
           "kmeans_centers": np.asarray(centers), "centroids": None, "groups": None}
  if run.k == config.clusters:
    labels = codes
  else:
    unit = np.asarray(centers) / np.maximum(np.linalg.norm(np.asarray(centers), axis=1, keepdims=True), 1e-12)
    labels, found = readouts.over_cluster(z, run.k, readout=config.readout, rng=jax.random.key(config.seed),
                                          codes=codes, neighbors=config.readout_neighbors, prototypes=unit)
    files.update(found)
  summary = {"clusters": config.clusters, "clusters_used": int(len(np.unique(codes))), "readout": config.readout}
  return engine.Readout(np.asarray(labels), files=files, summary=summary, embedding=np.asarray(parallel.fetch(z)),
                        y=None if run.source is None else run.y)


def assign(run, state, x) -> engine.Assignment:
  """New rows: their reduced features' nearest k-means center (its group, or the nearest read-out centroid,
  when fewer clusters are reported); the confidence is a softmax of the negative squared distances to the
  centers at temperature 0.1 (summed over a group; against the read-out centroids for readout "kmeans")."""
  config, x = run.config, jnp.asarray(x)
  load = lambda name: jnp.asarray(workdirs.load_npy(run.workdir / f"{name}.npy"))
  features = _features(body_network(config), _variables(state), x, len(x), config.chunk_size)
  z = (features - load("pca_mean")) @ load("pca_projection").T
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  if run.k != config.clusters and config.readout == "kmeans":
    p = np.asarray(jax.nn.softmax(z @ load("centroids").T / 0.1))
    labels = np.argmax(p, -1)
  else:
    centers = load("kmeans_centers")
    p = np.asarray(jax.nn.softmax(-jnp.sum((z[:, None] - centers[None]) ** 2, -1) / 0.1))
    labels = np.argmax(p, -1)  # the nearest center
    if run.k != config.clusters:
      groups = np.asarray(load("groups"))
      labels = groups[labels]
      p = np.stack([p[:, groups == g].sum(-1) for g in range(run.k)], -1)
  return engine.Assignment(labels, p[np.arange(len(labels)), labels], np.asarray(parallel.fetch(z)))


def _variables(state) -> dict:
  return {"params": state.params["body"], "batch_stats": state.batch_stats}


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _features(body, variables, x, n, chunk):
  return epochs.chunked(lambda b: body.apply(variables, b), x, n, chunk).astype(jnp.float32)


@epochs.compiled
def _host_view(image_shape, crop_scale, flip_p):
  """The crop-and-flip view made by tf.data on the host (``input="tf.data"``): ``(image, seed) -> view``."""
  return functools.partial(augment_tf.simclr_view, size=tuple(image_shape[:2]), scale=crop_scale, flip_p=flip_p,
                           jitter_p=0.0, grayscale_p=0.0)


@epochs.compiled
def _epoch(body, top, tx, batch_size, n, image_shape, view, sharding):
  """``epoch(state, x, aux, rng)`` over ``n`` positions of the sampled rows ``aux[0]``, each trained on its
  cluster ``aux[1][row]``; vector rows take their views' context as ``aux[2]``."""
  if view[0] == "vectors":
    views = augment_vectors.batch_view(view[1:])
  else:
    views = augment.batch(augment.simclr_view, size=image_shape[:2], scale=view[0], flip_p=view[1], jitter_p=0.0,
                          grayscale_p=0.0)
  step = functools.partial(train_step, body=body, top=top, tx=tx, augment=views)

  def one(state, x, aux, index, mask, rng):
    rows = aux[0][index]
    if view[0] == "vectors":
      partner_rng, rng = jax.random.split(rng)
      images = augment_vectors.take(x, aux[2], rows, partner_rng)
      if sharding is not None:
        xs, partners, mask = jax.lax.with_sharding_constraint((images.x, images.partner, mask), sharding)
        images = images._replace(x=xs, partner=partners)
    else:
      images, _, mask = epochs.gather(x, rows, mask, sharding)
    return step(state, {"image": images, "target": aux[1][rows], "mask": mask}, rng)

  return epochs.epoch_runner(one, batch_size, n, loop=None if view[0] != "vectors" else False)


def step_flops(config, shape, k: int) -> dict:
  """Model FLOPs per training image of an epoch (``jaxclust bench steps``): one crop forward and backward through
  the body and the classifier (3 forward passes), and the epoch's feature pass (one forward of the body)."""
  del k
  from jaxclust.models import flops
  body, top = body_network(config), Top(config.clusters)
  variables = jax.eval_shape(lambda: body.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))
  forward = flops.forward_flops(body, variables, (1, *shape), train=False)
  top_vars = jax.eval_shape(lambda: top.init(jax.random.key(0), jnp.zeros((1, config.mlp_head[-1]))))
  classifier = flops.forward_flops(top, top_vars, (1, config.mlp_head[-1]))
  return {"deepcluster": 4 * forward + 3 * classifier}


# Settings and recipes.


def config() -> ml_collections.ConfigDict:
  """The paper's ImageNet settings, on a ResNet-50 (the paper's networks are AlexNet and VGG-16): the Sobel
  filter, a 4096-4096 MLP, PCA to 256, 10,000 clusters, batch 256, SGD 0.05 with weight decay 1e-5, 500 epochs."""
  c = configs.shared()
  c.backbone, c.stem, c.dtype, c.cnn_channels = "resnet50", "imagenet", "float32", (32, 64, 128)
  c.sobel, c.mlp_head = True, (4096, 4096)
  c.pca_dim, c.clusters, c.kmeans_iterations = 256, 10_000, 20
  c.epochs, c.batch_size, c.learning_rate, c.weight_decay = 500, 256, 0.05, 1e-5
  c.crop_scale, c.flip_p = (0.08, 1.0), 0.5  # random resized crops and horizontal flips
  # Fewer clusters reported (n_clusters) than `clusters`: grouped by "kmeans" (spherical k-means of the reduced
  # features) or "knn" (the clusters' members' readout_neighbors nearest neighbours: jaxclust.readout).
  c.readout, c.readout_neighbors = "kmeans", 20
  c.chunk_size = 1024  # images per chunk of the feature pass
  return c


def _images(c, n, shape):
  """The paper's recipe (640M images seen on ImageNet); 1 cluster per 128 images as 10,000 of 1.28M; 32-pixel
  images the CIFAR stem."""
  if shape is not None and max(shape[:2]) <= 64:
    c.stem = "cifar"
  if n is not None:
    c.clusters = max(10, min(10_000, n // 128))
  c.epochs = configs.epochs_for(c.epochs, 1_281_167, n)


def _small_images(c, n, shape):
  """The small CNN of the small-image recipes (16/32/64, no Sobel, no flips), a 512-512 MLP, PCA to 128,
  100 clusters, 50 epochs of 70,000 images (3.5M seen). Not tuned on any dataset."""
  del shape
  c.backbone, c.cnn_channels, c.sobel, c.flip_p, c.crop_scale = "small_cnn", (16, 32, 64), False, 0.0, (0.2, 1.0)
  c.mlp_head, c.pca_dim, c.clusters, c.epochs, c.learning_rate = (512, 512), 128, 100, 50, 0.05
  c.epochs = configs.epochs_for(c.epochs, 70_000, n)


def _digits(c, n, shape):
  """1,797 8x8 images: a quick demonstration (lengths in epochs)."""
  del n, shape
  c.backbone, c.sobel, c.flip_p, c.crop_scale = "small_cnn", False, 0.0, (0.3, 1.0)
  c.mlp_head, c.pca_dim, c.clusters, c.epochs, c.batch_size = (256, 256), 64, 50, 30, 128


def _vectors(c, n, shape):
  """The MLP on z-scored features with vector views (noise, masking, neighbour mixing), a 256-256 head, PCA to
  64, 1 cluster per 100 rows (10 to 1,000), 100 epochs of 10,000 rows (1M seen). Not tuned on any dataset."""
  del shape
  from jaxclust.models import mlp
  c.backbone, c.mlp_widths, c.standardize, c.sobel = "mlp", mlp.WIDTHS, True, False
  del c["crop_scale"], c["flip_p"]
  c.views = ml_collections.ConfigDict({"noise": 0.1, "mask": 0.2, "mix": 0.5, "neighbors": 5})
  c.mlp_head, c.pca_dim = (256, 256), 64
  c.clusters = max(10, min(1000, (n or 10_000) // 100))
  c.batch_size = min(256, max(8, (n or 256) // 8 * 8))
  c.epochs = configs.epochs_for(100, 10_000, n)
  c.checkpoint_every = max(1, c.epochs // 20)


RECIPES = {
    "vectors": configs.Recipe("the MLP on z-scored features with vector views, 1M rows seen (not tuned)", _vectors),
    "small_images": configs.Recipe("a small CNN, 100 clusters, 3.5M images seen (not tuned)", _small_images),
    "images": configs.Recipe("the paper's recipe on a ResNet-50: Sobel, PCA 256, 1 cluster per 128 images, 640M "
                             "images seen at ImageNet's size", _images),
    "digits": configs.Recipe("a quick demonstration on the 1,797 8x8 digits", _digits),
}
