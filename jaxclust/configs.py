"""Default configurations (ml_collections) per method and dataset: the papers' settings.

``get_config(method, dataset)`` returns a ``ConfigDict`` that the CLI overrides from the command
line (``--set cluster.tol=0.01``) or from a file (``--config FILE.py`` defining ``get_config()``).
Library code never reads it: each method module (:mod:`jaxclust.methods`) unpacks it into plain arguments.
"""

from __future__ import annotations

import ml_collections

METHODS = ("dec", "idec", "vade", "scan", "swav", "deepcluster")

# One line per setting, by its dotted name, for ``jaxclust fit METHOD --help``. Every setting of every
# method needs one (tests/test_cli.py checks), so a new setting is documented where it is added.
HELP = {
    # Shared by every method.
    "method": "the method (the command's METHOD)",
    "dataset": "what to cluster (the command's --dataset)",
    "data_dir": "folder with the dataset's files (the command's --data-dir)",
    "seed": "random seed of initialization, batches and augmentation",
    "n_clusters": "clusters to find; 0 = the number of classes in the dataset's labels",
    "input": "'device' (data kept on the devices) or 'tf.data' (batches from a host tf.data pipeline)",
    "checkpoint_every": "epochs (DEC/IDEC: target refreshes) between checkpoints",
    "keep_checkpoints": "checkpoints kept in the workdir; older ones are deleted",
    # DEC / IDEC / VaDE: the autoencoder.
    "standardize": "z-score every feature with the training data's mean and standard deviation",
    "model": "autoencoder: 'mlp' (the papers' fully connected one) or 'conv' (DEC/IDEC on images)",
    "hidden": "widths of the mlp encoder's hidden layers (the decoder mirrors them)",
    "conv_channels": "channels of the conv encoder's stride-2 3x3 convolutions",
    "latent": "dimension of the embedding that is clustered",
    "pretrain.epochs": "autoencoder pretraining epochs",
    "pretrain.batch_size": "autoencoder pretraining batch size",
    "pretrain.learning_rate": "Adam learning rate of autoencoder pretraining",
    "pretrain.loss": "reconstruction loss: 'mse' or 'bce' (Bernoulli logits, for data in [0, 1])",
    "pretrain.init_from": "a workdir whose pretrained autoencoder to start from (skips pretraining)",
    # DEC / IDEC clustering stage (VaDE uses only kmeans_n_init).
    "cluster.batch_size": "DEC/IDEC clustering batch size",
    "cluster.learning_rate": "SGD learning rate of the DEC/IDEC clustering stage",
    "cluster.momentum": "SGD momentum of the DEC/IDEC clustering stage",
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
    "backbone": "network: 'small_cnn', 'resnet18', 'resnet34' or 'resnet50'",
    "stem": "ResNet stem: 'cifar' (one 3x3 convolution) or 'imagenet' (7x7 stride 2 and max-pool)",
    "dtype": "compute dtype of the network: 'float32' or 'bfloat16'",
    "cnn_channels": "channels of the small_cnn backbone's convolution blocks",
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


def get_config(method: str, dataset: str = "digits") -> ml_collections.ConfigDict:
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
  if method == "scan":
    return _scan_config(dataset)
  if method in ("swav", "deepcluster"):
    return _online_config(method, dataset)
  c = ml_collections.ConfigDict()
  c.method = method
  c.dataset = dataset
  c.data_dir = ""
  c.seed = 0
  c.n_clusters = 0  # 0: the number of classes of the dataset
  # Z-score every feature with the training data's mean and standard deviation (tabular data and
  # embeddings); the images of the papers are only scaled to [0, 1], as the sources load them.
  c.standardize = False
  # "device": the dataset sits on the devices and each epoch is one compiled scan (fastest while it
  # fits in device memory). "tf.data": batches come from a host tf.data pipeline, one jitted step each.
  c.input = "device"
  # "mlp": the papers' d-500-500-2000-10 network (DEC, IDEC, VaDE). "conv" (DEC/IDEC, image data):
  # a small convolutional autoencoder with `conv_channels` stride-2 3x3 convolutions.
  c.model = "mlp"
  c.hidden = (500, 500, 2000)
  c.conv_channels = (32, 64)
  c.latent = 10

  # End-to-end autoencoder pretraining (IDEC / DEC-keras): Adam, batch 256.
  c.pretrain = ml_collections.ConfigDict({"epochs": 200, "batch_size": 256, "learning_rate": 1e-3,
                                          # VaDE's decoder outputs Bernoulli logits: pretrain it for them
                                          "loss": "bce" if method == "vade" else "mse",
                                          # a workdir whose pretrained autoencoder to start from
                                          "init_from": ""})
  # DEC / IDEC clustering stage (DEC official code): SGD 0.01 momentum 0.9, batch 256, target P
  # refreshed every 140 steps on MNIST, stop when fewer than 0.1% of labels change.
  c.cluster = ml_collections.ConfigDict({
      "batch_size": 256, "learning_rate": 0.01, "momentum": 0.9, "update_interval": 140, "tol": 0.001,
      "max_steps": 20_000, "kmeans_n_init": 20, "gamma": 0.1 if method == "idec" else 0.0})
  if method == "idec":  # IDEC paper: SGD with learning rate 0.1, momentum 0.99 (per the authors' IDEC-toy README)
    c.cluster.learning_rate, c.cluster.momentum = 0.1, 0.99
  # VaDE (official code, MNIST): Adam on the negative ELBO, batch 100, 300 epochs, learning rate
  # 0.002 times 0.9 every 10 epochs, floored at 0.0002; mixture initialized by a diagonal GMM on the
  # pretrained embeddings.
  c.vade = ml_collections.ConfigDict({"epochs": 300, "batch_size": 100, "learning_rate": 2e-3, "lr_decay": 0.9,
                                      "lr_decay_epochs": 10, "min_learning_rate": 2e-4})
  c.checkpoint_every = 1  # pretraining epochs / DEC refresh intervals / VaDE epochs between saves
  c.keep_checkpoints = 2

  if dataset == "digits":  # 1,797 8x8 images: the README's few-minute demo on 2 CPU cores
    c.pretrain.epochs = 60
    c.pretrain.batch_size = 64
    c.cluster.batch_size = 64
    c.cluster.update_interval = 28
    c.cluster.max_steps = 2_000
    c.vade.epochs = 60
  return c


def _scan_config(dataset: str) -> ml_collections.ConfigDict:
  """SCAN (official configs for CIFAR-10/100-20 and STL-10) and a small-CNN recipe for 28x28 digits."""
  c = ml_collections.ConfigDict()
  c.method, c.dataset, c.data_dir, c.seed, c.n_clusters = "scan", dataset, "", 0, 0
  c.backbone, c.stem, c.dtype = "resnet18", "cifar", "float32"
  c.cnn_channels = (32, 64, 128)  # backbone "small_cnn"
  c.augment = ml_collections.ConfigDict({"crop_scale": (0.2, 1.0), "flip_p": 0.5})
  # "device": views made on the devices (dm-pix, jitted). "tf.data": made by a host tf.data pipeline
  # with the same semantics (jaxclust.data.augment_tf) while the devices train.
  c.input = "device"
  # SimCLR pretext as in SCAN's configs: batch 512, temperature 0.1, SGD 0.4 momentum 0.9, weight
  # decay 1e-4, cosine schedule, 500 epochs, 128-d projection. warmup_epochs > 0: a linear warm-up first
  # (the SimCLR paper's 10 epochs; SCAN's configs have none). init_from: another SCAN workdir whose finished
  # pretext this run starts from instead of training its own (its network settings must match).
  # pretext.method="moco": MoCo v2 (temperature 0.2, momentum 0.999, queue of 65,536 keys in the paper).
  c.pretext = ml_collections.ConfigDict({"method": "simclr", "epochs": 500, "batch_size": 512, "temperature": 0.1,
                                         "optimizer": "sgd", "learning_rate": 0.4, "weight_decay": 1e-4,
                                         "head_hidden": 512, "head_out": 128, "momentum": 0.999,
                                         "queue_size": 65536, "warmup_epochs": 0,
                                         "init_from": ""})
  # Neighbours are mined on the pretext network's projection output ("projection", as the official code,
  # whose memory bank holds the normalized projections) or on the backbone's pooled features ("backbone").
  c.mine = ml_collections.ConfigDict({"neighbors": 20, "chunk_size": 1024, "features": "projection"})
  # SCAN: Adam 1e-4, weight decay 1e-4, batch 128, entropy weight 5, 10 heads, 50 epochs. The image and
  # its neighbour get SimCLR views (augment.*); the official configs give them the strong ("ours") view.
  # update_backbone=False trains the clustering heads alone on a frozen pretext backbone (the
  # official code's update_cluster_head_only): a forward pass instead of a training step.
  # augment=False feeds the image and its neighbour un-augmented; with a frozen backbone their features
  # are then computed once for the whole dataset (as for mining) and an epoch only gathers their rows.
  c.scan = ml_collections.ConfigDict({"epochs": 50, "batch_size": 128, "learning_rate": 1e-4, "weight_decay": 1e-4,
                                      "entropy_weight": 5.0, "heads": 10, "update_backbone": True,
                                      "augment": True})
  # Self-labeling: Adam 1e-4, weight decay 1e-4, batch 1000, threshold 0.99, 200 epochs. The strong view:
  # strong_ops random RandAugment-style ops, then Cutout of a square `cutout` x the image side
  # (official: 4 ops, Cutout 16 of 32 pixels on CIFAR, 32 of 96 on STL-10; 0 turns Cutout off).
  # BatchNorm runs as in the SCAN stage: batch statistics (official) after scan.update_backbone=True,
  # the frozen running statistics after False, under which the heads learned their clusters.
  c.selflabel = ml_collections.ConfigDict({"epochs": 200, "batch_size": 1000, "learning_rate": 1e-4,
                                           "weight_decay": 1e-4, "threshold": 0.99, "strong_ops": 4,
                                           "cutout": 0.5})
  c.checkpoint_every = 1
  c.keep_checkpoints = 2
  if dataset.startswith("tfds:stl10"):
    c.stem = "imagenet"  # 96x96 images
    c.selflabel.cutout = 1 / 3  # 32 of 96 pixels
  if dataset in ("mnist", "fashion_mnist", "usps", "digits"):  # small grayscale digits: the small CNN
    c.backbone = "small_cnn"
    c.augment.flip_p = 0.0  # a mirrored digit is another symbol or none
    c.pretext.update({"epochs": 50, "batch_size": 256, "head_hidden": 128, "head_out": 64})
    # Adam 1e-3, not the CIFAR 1e-4: with 1e-4 the small CNN's SCAN stage was far from converged
    # after 30 epochs (ACC 0.59 against 0.87 at 1e-3; experiments/RESULTS.md, MNIST probes).
    c.scan.update({"epochs": 60, "batch_size": 256, "learning_rate": 1e-3})
    c.selflabel.update({"epochs": 20, "batch_size": 256})
  if dataset in ("mnist", "fashion_mnist", "usps"):
    # Measured on MNIST on the 2-core CPU (experiments/RESULTS.md): the 16/32/64 CNN, 50 SimCLR
    # epochs after a 5-epoch warm-up, then the clustering heads alone on the frozen features of the
    # un-augmented images (computed once), Adam 3e-2, 10 neighbours, 150 epochs. Whole runs with seeds
    # 0-2 (2026-11-30): ACC 0.9614 / 0.9637 / 0.9542. Without the warm-up two of three pretext runs sat
    # at a loss of 5.6 for their first epochs, and the SCAN stage gave 0.9637 / 0.9605 / 0.9547
    # (SCAN-stage seeds 0-2) on one pretext run but 0.9450 / 0.9449 / 0.9545 on a second (pretext seed
    # 1, 2026-11-23).
    # After 25 SimCLR epochs the stage gave 0.9514 / 0.9401 / 0.9458 on one pretext run, and below
    # 0.95 for every seed on another (with 50 heads and 5 neighbours).
    # The whole network at 1e-3 gave 0.6361 after 25 epochs. Self-labeling lowered ACC in every
    # variant tried, so it is off here; --set selflabel.epochs=20 runs it.
    c.cnn_channels = (16, 32, 64)
    c.pretext.warmup_epochs = 5
    # Mined on the backbone: on the seed-0 50-epoch pretext its 10-NN purity was 0.9618 against 0.9466
    # on the projection output (experiments/RESULTS.md).
    c.mine.update({"neighbors": 10, "features": "backbone"})
    c.scan.update({"epochs": 150, "learning_rate": 3e-2, "update_backbone": False, "augment": False})
    c.selflabel.epochs = 0
  if dataset == "digits":  # 8x8 images: a quick demonstration
    c.pretext.update({"epochs": 30, "batch_size": 128})
    c.scan.update({"epochs": 30, "batch_size": 128})
    c.selflabel.update({"epochs": 10, "batch_size": 128})
  return c


def _online_config(method: str, dataset: str) -> ml_collections.ConfigDict:
  """SwAV / DeepCluster-v2: the paper's ImageNet recipe by default, a small-CNN recipe for digits."""
  c = ml_collections.ConfigDict()
  c.method, c.dataset, c.data_dir, c.seed = method, dataset, "", 0
  c.backbone, c.stem, c.dtype, c.cnn_channels = "resnet50", "imagenet", "float32", (32, 64, 128)
  # ImageNet recipe (SwAV paper): 2x224 + 6x96 crops, 3000 prototypes, temperature 0.1, batch 4096
  # with LARS (base learning rate 4.8, final 0.0048, weight decay 1e-6, 10 warm-up epochs, cosine),
  # prototypes frozen for the first epoch (313 steps at batch 4096), a 3840-long queue from epoch 15
  # (for batch 256), Sinkhorn epsilon 0.05 with 3 iterations.
  c.crops = ((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14)))
  c.prototypes, c.temperature, c.batch_size, c.epochs = 3000, 0.1, 4096, 800
  # Clusters reported: 0 = one per prototype; fewer than the prototypes = over-clustering, the
  # clusters then read out as `readout` says.
  c.n_clusters = 0
  # How fewer clusters than prototypes are read out: "kmeans" (spherical k-means of the embeddings) or
  # "knn" (the prototypes grouped by the `readout_neighbors` nearest neighbours of their members in the
  # embedding, 20 as SCAN mines; not in the papers; jaxclust/readout.py). Both only read the trained
  # network: changing them never changes training.
  c.readout, c.readout_neighbors = "kmeans", 20
  # Epochs between the readouts logged while over-clustering (ACC/NMI/ARI and size entropy; the kNN
  # readout of MNIST costs a fifth of an epoch on the CPU). The prototype usage is logged every epoch,
  # and the last epoch is always read out. Changing it never changes training or the result.
  c.eval_every = 1
  c.optimizer, c.learning_rate, c.final_lr_fraction, c.weight_decay, c.warmup_epochs = "lars", 4.8, 0.001, 1e-6, 10
  c.head_hidden, c.head_out = 2048, 128
  c.flip_p = 0.5  # horizontal flips of every crop
  # "device": the images sit on the devices, cropped there (fastest while they fit). "tf.data" (SwAV):
  # streamed and multi-cropped on the host, for datasets that do not fit, such as ImageNet ("tfds:imagenet2012").
  c.input = "device"
  c.checkpoint_every, c.keep_checkpoints = 1, 2
  if method == "swav":
    c.freeze_prototypes_steps, c.queue_length, c.queue_start_epoch = 313, 3840, 15
    # Sinkhorn-Knopp's entropy weight (the paper's 0.05). The paper: a high one generally leads to the
    # trivial solution, every image at one embedding and assigned uniformly to all prototypes.
    c.sinkhorn_epsilon = 0.05
  if method == "deepcluster":  # DeepCluster-v2: k-means on the memory bank every epoch, temperature 0.1
    c.prototype_sets = 3  # 3 x 3000 prototypes, each set from its own k-means run
    # The memory bank keeps the embeddings of the first two (large) crops of every image, one bank
    # each; prototype set i clusters bank i % 2 (the paper's code, crops_for_assign = [0, 1]).
    c.bank_crops = 2
    # "training": the bank holds the embeddings computed while training (the paper's code), written
    # by a network that changes during the epoch. "epoch_end" (not in the paper): after each epoch
    # the bank is refilled with the trained network's embeddings of the un-augmented images (eval
    # mode), one extra forward pass of the dataset.
    c.bank_source = "training"
    # False: each epoch's k-means starts afresh with k-means++ (the paper). True (not in the paper): it
    # starts from the previous epoch's centroids, so the targets move less between epochs.
    c.kmeans_warm_start = False
  if dataset in ("mnist", "fashion_mnist", "usps", "digits"):
    c.backbone = "small_cnn"
    c.flip_p = 0.0  # a mirrored digit is another symbol or none
    c.crops = ((2, 28, (0.3, 1.0)), (4, 16, (0.1, 0.3)))
    c.prototypes, c.batch_size, c.epochs = 10, 256, 50
    c.optimizer, c.learning_rate, c.weight_decay, c.warmup_epochs = "adam", 1e-3, 1e-6, 1
    if method == "swav":
      c.epochs, c.learning_rate = 80, 2e-3
      c.freeze_prototypes_steps, c.queue_length, c.queue_start_epoch = 100, 0, 0
    c.head_hidden, c.head_out = 128, 64
  if dataset in ("mnist", "fashion_mnist", "usps"):
    # Over-clustering, measured on MNIST (experiments/RESULTS.md): on an H100, SwAV with 30 prototypes
    # for 30 epochs reached ACC 0.9674 / 0.9406 / 0.9594 (seeds 0-2) against 0.7125 with 10 prototypes
    # for 80; on the 2-core CPU, where the goal is set, 20 epochs of it reached 0.9571 and 0.9579 (seeds
    # 0, 1; 2.5-5 min per epoch), so the recipe was 20 epochs. Seed 2 collapsed on the CPU (loss at
    # ln 30 from epoch 2) with the paper's Sinkhorn epsilon 0.05; with half of it, 0.025, all three
    # seeds trained: ACC 0.9579 / 0.9662 / 0.9633 (seeds 0-2, 2026-12-02), so the recipe takes 0.025.
    # On seed 3, held out, it reached only 0.9375 (2026-12-03): below the 95% goal.
    # With 30 epochs seed 3 reached 0.9365, and 0.9603 read out with readout="knn" (its prototypes were
    # purer than k-means of the embeddings into 10). Chosen there, 30 epochs with "knn" then reached
    # 0.9669 on a fresh seed 4 and 0.9647 on seed 0 (2026-12-03), so the recipe takes them; since then
    # 0.9738 (seed 1) and 0.9768 (seed 2, 2026-12-04): five of five seeds at the goal.
    # DeepCluster-v2 with one set of 100 prototypes for 100 epochs reached 0.9078 (seed 0) and 0.6725
    # (seed 1) on the H100; on the 2-core CPU, with the bank refilled at each epoch's end, k-means
    # warm-started and the clusters read out by their neighbours, 30 epochs reached 0.9517 and 0.9364
    # (seeds 1 and 2) and 40 epochs 0.9575 / 0.9451 / 0.9510 (seeds 0-2), at 3-5 min per epoch (the
    # machine's speed varied between sessions). With 200 prototypes the same 40 epochs reached
    # 0.9511 / 0.9571 / 0.9571 (seeds 0-2, 2026-12-02; 1-2 min per epoch under tcmalloc), so the recipe takes 200;
    # on seed 3, held out, it reached 0.9501 (2026-12-03).
    c.n_clusters, c.eval_every = 10, 5
    if method == "swav":
      c.prototypes, c.epochs, c.sinkhorn_epsilon, c.readout = 30, 30, 0.025, "knn"
    else:
      c.prototypes, c.epochs, c.prototype_sets = 200, 40, 1
      c.bank_source, c.kmeans_warm_start, c.readout = "epoch_end", True, "knn"
  if dataset == "digits":
    c.crops = ((2, 8, (0.5, 1.0)), (2, 6, (0.3, 0.6)))
    c.batch_size, c.epochs = 128, 20
  return c
