"""Configurations (ml_collections): each method's settings and its recipes, chosen by the kind and size of the data.

``get_config(method, dataset, n=..., shape=...)`` returns a ``ConfigDict``: the method's own settings
(``config()`` in its module, :mod:`jaxclust.methods`), then a recipe from the module's ``RECIPES``. The
recipe is chosen by the data's kind (:func:`data_kind`: ``vectors``, ``small_images`` up to 64 pixels a
side, larger ``images``), or named (``recipe=``, the CLI's ``--recipe``). A recipe states its training
length in images seen at a reference size; on ``n`` rows its epochs are that many images
(:func:`epochs_for`), so a small dataset is not under-trained. The datasets the recipes were measured on
(:data:`MEASURED`) keep exactly the settings they were measured with. The CLI then overrides settings
(``--set cluster.tol=0.01``) or takes a file (``--config FILE.py`` defining ``get_config()``). Library
code never reads a config: each method module unpacks it into plain arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import ml_collections

from jaxclust import methods

METHODS = tuple(methods.REGISTRY)  # every method, in the registry's order

# One line per setting, by its dotted name, for ``jaxclust fit METHOD --help``. Every setting of every
# method needs one (tests/test_cli.py checks), so a new setting is documented where it is added.
HELP = {
    # Shared by every method.
    "method": "the method (the command's METHOD)",
    "recipe": "the recipe these settings started from (`jaxclust recipes`; the command's --recipe)",
    "dataset": "what to cluster (the command's --dataset)",
    "data_dir": "folder with the dataset's files (the command's --data-dir)",
    "seed": "random seed of initialization, batches and augmentation",
    "n_clusters": "clusters to find; 0 = the number of classes in the dataset's labels; auto = chosen on the input "
                  "rows without labels, by choose-k's rule over k = 2..30",
    "input": "'device' (data kept on the devices) or 'tf.data' (batches from a host tf.data pipeline)",
    "checkpoint_every": "epochs (DEC/IDEC: target refreshes) between checkpoints",
    "keep_checkpoints": "checkpoints kept in the workdir; older ones are deleted",
    "report": "write report.html and its figures at the end of the fit (false: labels and summary only)",
    "labels": "a .npy or .csv file of the rows' labels, for evaluation only (the command's --labels)",
    "seed_labels": "a .csv of `index,label` rows: a few labelled rows that start, name and keep their clusters "
                   "(the command's --seed-labels)",
    "image_size": "image folders: read images at this size x this size; 0 = the size most of them have",
    "skip_bad_files": "image folders: skip and count unreadable image files instead of stopping (--skip-bad-files)",
    # DEC / IDEC / VaDE: the autoencoder.
    "standardize": "z-score every feature with the training data's mean and standard deviation",
    "model": "autoencoder: 'mlp' (the papers' fully connected one) or 'conv' (DEC/IDEC on images)",
    "hidden": "widths of the mlp encoder's hidden layers (the decoder mirrors them)",
    "conv_channels": "channels of the conv encoder's stride-2 3x3 convolutions",
    "latent": "dimension of the embedding that is clustered",
    "pretrain.epochs": "autoencoder pretraining epochs",
    "pretrain.batch_size": "autoencoder pretraining batch size",
    "pretrain.learning_rate": "Adam learning rate of autoencoder pretraining",
    "pretrain.loss": "reconstruction loss: 'mse' or 'bce' (Bernoulli logits, for data in [0, 1]); VaDE: 'auto' "
                     "follows vade.likelihood",
    "vade.likelihood": "the decoder's likelihood: 'bernoulli' (data in [0, 1]), 'gaussian' (unit variance, any real "
                       "data) or 'auto' (chosen by the data's range and recorded in config.json)",
    "pretrain.init_from": "a workdir whose pretrained autoencoder to start from (skips pretraining)",
    # DEC / IDEC clustering stage (VaDE uses only kmeans_n_init).
    "cluster.batch_size": "DEC/IDEC clustering batch size",
    "cluster.optimizer": "optimizer of the DEC/IDEC clustering stage: 'sgd' (with cluster.momentum) or 'adam'",
    "cluster.learning_rate": "learning rate of the DEC/IDEC clustering stage",
    "cluster.momentum": "SGD momentum of the DEC/IDEC clustering stage (unused by 'adam')",
    "cluster.update_interval": "steps between refreshes of the DEC target distribution P",
    "cluster.tol": "stop when fewer than this fraction of labels change between refreshes",
    "cluster.max_steps": "most DEC/IDEC clustering steps",
    "cluster.kmeans_n_init": "k-means restarts on the embeddings that start the clusters (VaDE: its GMM)",
    "cluster.gamma": "weight of IDEC's reconstruction loss (0 = DEC, the decoder is dropped)",
    # VaDE.
    "vade.epochs": "VaDE training epochs (after pretraining)",
    "vade.batch_size": "VaDE batch size",
    "vade.learning_rate": "VaDE's initial Adam learning rate",
    "vade.lr_decay": "factor applied to VaDE's learning rate every lr_decay_epochs",
    "vade.lr_decay_epochs": "epochs between VaDE learning-rate decays",
    "vade.min_learning_rate": "floor of VaDE's decayed learning rate",
    # SCAN, SwAV, DeepCluster-v2: the network.
    "backbone": "network: 'small_cnn', 'resnet18', 'resnet34', 'resnet50' (images) or 'mlp' (vector rows)",
    "stem": "ResNet stem: 'cifar' (one 3x3 convolution) or 'imagenet' (7x7 stride 2 and max-pool)",
    "dtype": "compute dtype of the network: 'float32' or 'bfloat16'",
    "cnn_channels": "channels of the small_cnn backbone's convolution blocks",
    "mlp_widths": "widths of the mlp backbone's Dense-BatchNorm-ReLU layers (the last is the feature dimension)",
    # The vector views of SCAN, SwAV and DeepCluster-v2 (the vectors recipes; jaxclust/data/augment_vectors.py).
    "views.count": "SwAV/DeepCluster-v2: vector views of every row, the first two get codes or fill the bank",
    "views.noise": "Gaussian noise added to a view, as a fraction of each feature's standard deviation",
    "views.mask": "probability that a view's feature is replaced by the feature's mean",
    "views.mix": "a view moves toward a nearest neighbour by a weight drawn per row from U(0, mix)",
    "views.neighbors": "nearest neighbours (Euclidean, on the input rows) a view may move toward",
    # SCAN.
    "augment.crop_scale": "(low, high) area fraction of SCAN's random resized crops",
    "augment.flip_p": "probability of a horizontal flip in SCAN's views",
    "pretext.method": "pretext task: 'simclr' or 'moco' (MoCo v2)",
    "pretext.epochs": "pretext (contrastive) training epochs",
    "pretext.batch_size": "pretext batch size",
    "pretext.temperature": "temperature of the contrastive loss",
    "pretext.optimizer": "pretext optimizer: 'sgd' or 'lars'",
    "pretext.learning_rate": "pretext learning rate (cosine schedule)",
    "pretext.weight_decay": "pretext weight decay",
    "pretext.head_hidden": "hidden width of the projection head",
    "pretext.head_out": "output dimension of the projection head",
    "pretext.momentum": "MoCo: momentum of the key encoder's moving average",
    "pretext.queue_size": "MoCo: negative keys kept in the queue",
    "pretext.warmup_epochs": "linear learning-rate warm-up epochs before the cosine schedule",
    "pretext.init_from": "a SCAN workdir whose finished pretext to start from (skips the pretext)",
    "mine.neighbors": "nearest neighbours mined for every image",
    "mine.chunk_size": "rows per chunk of the forward passes and the neighbour search",
    "mine.features": "what neighbours are mined on: 'projection' (head output) or 'backbone' (pooled features)",
    "scan.epochs": "SCAN clustering-stage epochs",
    "scan.batch_size": "SCAN clustering-stage batch size",
    "scan.learning_rate": "Adam learning rate of the SCAN stage",
    "scan.weight_decay": "weight decay of the SCAN stage",
    "scan.entropy_weight": "weight of the entropy term that spreads images over the clusters",
    "scan.heads": "clustering heads trained together; the one with the lowest loss is kept",
    "scan.update_backbone": "train the backbone too (false: the heads alone, on frozen features)",
    "scan.augment": "feed augmented views of the image and its neighbour (false: the images as they are)",
    "selflabel.epochs": "self-labeling epochs (0 skips the stage)",
    "selflabel.batch_size": "self-labeling batch size",
    "selflabel.learning_rate": "Adam learning rate of self-labeling",
    "selflabel.weight_decay": "weight decay of self-labeling",
    "selflabel.threshold": "confidence above which an image's prediction becomes its label",
    "selflabel.strong_ops": "random RandAugment-style ops in the strong view",
    "selflabel.cutout": "side of the Cutout square as a fraction of the image side (0: off)",
    # SwAV / DeepCluster-v2.
    "crops": "multi-crop views: ((count, size, (low, high) area fraction), ...), large crops first",
    "prototypes": "prototypes (trainable cluster centres) per set",
    "temperature": "softmax temperature of the prototype scores",
    "batch_size": "training batch size",
    "epochs": "training epochs",
    "readout": "how fewer clusters than prototypes are read out: 'kmeans' or 'knn'",
    "readout_neighbors": "neighbours per embedding of the 'knn' readout",
    "eval_every": "epochs between the readouts logged while over-clustering",
    "optimizer": "optimizer: 'lars' or 'adam'",
    "learning_rate": "peak learning rate (after warm-up, then a cosine decay)",
    "final_lr_fraction": "final learning rate as a fraction of the peak",
    "weight_decay": "weight decay",
    "warmup_epochs": "linear learning-rate warm-up epochs",
    "head_hidden": "hidden width of the projection head",
    "head_out": "output dimension of the projection head (the embedding)",
    "flip_p": "probability of a horizontal flip of every crop",
    "freeze_prototypes_steps": "SwAV: steps at the start during which the prototypes are not updated",
    "queue_length": "SwAV: past embeddings queued to stabilize small-batch assignments (0: none)",
    "queue_start_epoch": "SwAV: epoch from which the queue is used",
    "sinkhorn_epsilon": "SwAV: entropy weight of the Sinkhorn-Knopp assignment",
    "prototype_sets": "DeepCluster-v2: sets of prototypes, each from its own k-means",
    "bank_crops": "DeepCluster-v2: crops whose embeddings the memory bank keeps",
    "bank_source": "DeepCluster-v2: bank filled while 'training' or refilled at each 'epoch_end'",
    "kmeans_warm_start": "DeepCluster-v2: start each epoch's k-means from the last epoch's centroids",
    # simclr, moco: the two-step methods (jaxclust/methods/contrastive.py).
    "readout.method": "how the pretext's features become clusters: 'kmeans' (spherical k-means into n_clusters) or "
                      "'knn' (readout.clusters k-means clusters grouped by their members' nearest neighbours)",
    "readout.features": "the features read out: 'backbone' (pooled backbone output) or 'projection' (the head's)",
    "readout.restarts": "k-means restarts of the readout (the lowest inertia is kept)",
    "readout.clusters": "k-means clusters of the 'knn' readout (0: ten per cluster reported)",
    "readout.neighbors": "neighbours per row of the 'knn' readout",
    "readout.chunk_size": "images per chunk of the feature pass",
    # cc: Contrastive Clustering.
    "instance_temperature": "temperature of the instance-level NT-Xent over the rows of the two views (paper: 0.5)",
    "cluster_temperature": "temperature of the cluster-level NT-Xent over the assignment columns (paper: 1.0)",
    "instance_dim": "output width of the instance head",
    "chunk_size": "images per chunk of a pass over the dataset",
    # deepcluster2018: DeepCluster (Caron et al. 2018).
    "sobel": "the paper's fixed input filter: grayscale, then horizontal and vertical Sobel gradients",
    "mlp_head": "widths of the MLP on the backbone; the last layer's output (before its ReLU) is clustered",
    "pca_dim": "dimensions the features are PCA-reduced and whitened to before k-means (paper: 256)",
    "clusters": "k-means clusters each epoch, the classifier's outputs (paper: 10,000 for ImageNet)",
    "kmeans_iterations": "Lloyd iterations of each epoch's k-means",
    "crop_scale": "area range of the random resized crops",
    "vade.gmm_restarts": "GMM fits on the pretrained embedding, each from its own k-means; the most likely one "
                         "starts the mixture",
}


def flatten(config, prefix: str = "") -> list[tuple[str, object]]:
  """``[(dotted name, value), ...]`` of every setting in ``config``, nested groups included."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(flatten(value, f"{prefix}{key}."))
    else:
      out.append((prefix + key, value))
  return out


KINDS = ("vectors", "small_images", "images")
SMALL = 64  # images up to this many pixels a side are small: the small-CNN recipes
IMAGE_RECIPES = ("small_images", "images", "digits")  # recipes that refuse rows that are not images

# The named datasets the recipes were measured or published on: (recipe, shape). Each keeps the settings
# it was measured with: the recipe's lengths at its reference size, whatever the dataset's own size.
MEASURED = {
    "digits": ("digits", (8, 8, 1)),  # scikit-learn's 1,797 8x8 digits: the few-minute demonstration
    "mnist": ("small_images", (28, 28, 1)),  # the small-image recipes were chosen on MNIST
    "fashion_mnist": ("small_images", (28, 28, 1)),
    "usps": ("small_images", None),  # 16x16 images, measured with MNIST's settings (28-pixel crops)
    "tfds:cifar10": ("images", (32, 32, 3)),  # SCAN's official configs
    "tfds:cifar100_20": ("images", (32, 32, 3)),
    "tfds:stl10": ("images", (96, 96, 3)),
    "tfds:imagenet2012": ("images", None),  # SwAV's paper recipe
}


class Recipe(NamedTuple):
  """A method's settings for one kind of data.

  Attributes:
    about: one line: what it is for and where it was measured.
    apply: ``(config, n, shape) -> None`` sets the recipe's settings in ``config`` for ``n`` rows of
      ``shape`` (``n`` None: the lengths at the recipe's reference size; ``shape`` None: the reference's).
  """
  about: str
  apply: Callable[[ml_collections.ConfigDict, int | None, tuple | None], None]


def data_kind(shape) -> str:
  """``"vectors"`` for rows of rank 1 or 2 (features, time series), ``"small_images"`` for ``[H, W, C]``
  rows at most :data:`SMALL` pixels a side, ``"images"`` above."""
  shape = tuple(shape)
  if len(shape) < 3:
    return "vectors"
  return "small_images" if max(shape[:2]) <= SMALL else "images"


def epochs_for(epochs: int, reference: int, n: int | None, *, most: int = 10) -> int:
  """``epochs`` of ``reference`` rows as epochs of ``n`` rows: the same images seen, at least 1 epoch and at
  most ``most`` times ``epochs`` (a dataset of a few hundred rows would otherwise loop for thousands of
  epochs). ``n`` None: ``epochs``."""
  if n is None or epochs == 0:
    return epochs
  return max(1, min(most * epochs, math.ceil(epochs * reference / n)))


def get_config(method: str, dataset: str = "digits", *, recipe: str | None = None, n: int | None = None,
               shape=None) -> ml_collections.ConfigDict:
  """``method``'s settings for ``dataset``: a measured dataset's recipe (:data:`MEASURED`) as measured;
  otherwise ``recipe`` or the recipe of the data's kind, for ``n`` rows of ``shape``.

  Raises:
    ValueError: an unknown method or recipe, or a dataset neither measured nor described by ``shape``.
  """
  from jaxclust import methods
  module = methods.get(method)
  c = module.config()
  c.method, c.dataset, c.recipe = method, dataset, ""
  if recipe is None and dataset in MEASURED and MEASURED[dataset][0] in module.RECIPES:
    recipe, shape, n = MEASURED[dataset][0], MEASURED[dataset][1], None
  elif recipe is None:
    if shape is None:
      raise ValueError(f"dataset {dataset!r}: its row shape is needed to choose a recipe (or name one with --recipe)")
    recipe = data_kind(shape)
  if recipe not in module.RECIPES:
    raise ValueError(f"recipe {recipe!r} is not one of {method}'s: {', '.join(module.RECIPES)} (see `jaxclust recipes`)")
  if shape is not None and recipe in IMAGE_RECIPES and data_kind(shape) == "vectors":
    hint = ("; a float [n, H, W] array is read as time series [n, T, C]: give grayscale images a channel axis, "
            "[n, H, W, 1], or an integer dtype" if len(tuple(shape)) == 2 else "")
    raise ValueError(f"recipe {recipe!r} is for images [n, H, W, C], but {dataset!r} has rows of shape "
                     f"{tuple(shape)}{hint}")
  module.RECIPES[recipe].apply(c, n, None if shape is None else tuple(shape))
  c.recipe = recipe
  return c


def locate(config, name: str) -> tuple[ml_collections.ConfigDict, str]:
  """The group holding the dotted setting ``name`` and its key there.

  Raises:
    ValueError: an unknown setting or group, or a setting named as a group (the message starts with the name).
  """
  *groups, target = name.split(".")
  node = config
  for depth, part in enumerate(groups):
    if part not in node:
      raise ValueError(f"{name}: unknown setting {part!r}")
    node = node[part]
    if not isinstance(node, ml_collections.ConfigDict):
      raise ValueError(f"{name}: {'.'.join(groups[:depth + 1])} is a setting, not a group of settings")
  if target not in node or isinstance(node[target], ml_collections.ConfigDict):
    raise ValueError(f"{name}: unknown setting {target!r}; available: {sorted(node.keys())}")
  return node, target


def shared(**settings) -> ml_collections.ConfigDict:
  """The settings every method has, then ``settings``."""
  c = ml_collections.ConfigDict()
  c.method, c.recipe, c.dataset, c.data_dir, c.seed = "", "", "", "", 0
  c.n_clusters = 0  # 0: the number of classes of the dataset
  # "device": the dataset sits on the devices (fastest while it fits in device memory). "tf.data": batches
  # come from a host tf.data pipeline.
  c.input = "device"
  c.checkpoint_every, c.keep_checkpoints = 1, 2
  c.labels = ""  # labels for evaluation only, read from a file: training never sees them
  c.seed_labels = ""  # a few labelled rows that seed, name and keep their clusters (jaxclust.seeding)
  c.image_size, c.skip_bad_files = 0, False  # how an image folder is read (jaxclust.data.folders)
  c.report = True  # report.html and its data at the end of the fit (jaxclust report draws it later)
  c.update(settings)
  return c


def recipes(method: str) -> dict[str, Recipe]:
  from jaxclust import methods
  return dict(methods.get(method).RECIPES)
