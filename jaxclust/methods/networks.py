"""The networks a configuration names, built for the methods: the backbone of the self-supervised
methods (a CNN for images, the MLP for vector rows) and the autoencoder of the DEC family."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxclust.models import mlp, resnet
from jaxclust.models.autoencoder import ConvAutoencoder, MLPAutoencoder


def backbone(config):
  """The configured backbone (``backbone``, ``stem``, ``dtype``, ``cnn_channels``, ``mlp_widths``)."""
  kind = config.backbone
  if kind != "mlp" and kind not in resnet.BACKBONES:
    raise ValueError(f"backbone={kind!r} must be one of {', '.join(resnet.BACKBONES)}, mlp")
  if config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype={config.dtype!r} must be 'float32' or 'bfloat16'")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
  if kind == "mlp":
    return mlp.MLP(widths=tuple(config.get("mlp_widths", mlp.WIDTHS)), dtype=dtype)
  make = resnet.BACKBONES[kind]
  if kind == "small_cnn":
    return make(channels=tuple(config.cnn_channels), dtype=dtype)
  return make(stem=config.stem, dtype=dtype)


def peer_backbone(config, shape) -> dict:
  """The configured backbone as ``jaxclust/bench_torch.py`` rebuilds it in PyTorch (``bench steps --peers``)."""
  return {"kind": config.backbone, "shape": [int(s) for s in shape], "stem": config.get("stem", ""),
          "channels": list(config.get("cnn_channels", ())), "widths": list(config.get("mlp_widths", ()))}


def vectors(config) -> bool:
  """Whether the configured network trains on vector views (the MLP backbone) rather than image crops."""
  return config.backbone == "mlp"


def check_rows(config, shape) -> None:
  """Refuses a backbone and views that do not fit rows of ``shape`` (one line naming both): the MLP and
  the vector views (``views.*``, set by the vectors recipe) take any rows held on the devices, the CNNs and
  their crops images."""
  shape, recipe = tuple(shape), config.get("recipe") or "this recipe"
  if vectors(config) and config.get("input", "device") == "tf.data":
    raise ValueError("input='tf.data' is not offered for vector rows (backbone='mlp'): each view mixes a row with "
                     "a neighbour read at random, which a stream does not give, and rows that fit in memory train "
                     "from the devices; set input='device'")
  if vectors(config) and "views" not in config:
    raise ValueError(f"backbone='mlp' trains on vector views, whose settings (views.*) {recipe} does not have: "
                     "choose --recipe vectors")
  if not vectors(config) and "views" in config:
    raise ValueError(f"backbone={config.backbone!r} trains on image crops, which {recipe} does not set: "
                     "keep backbone='mlp' or choose an image recipe (--recipe small_images)")
  if not vectors(config) and len(shape) != 3:
    raise ValueError(f"{config.method} with backbone={config.backbone!r} needs images [n, H, W, C]; "
                     f"{config.dataset!r} has rows of shape {shape}: use --recipe vectors (the MLP backbone)")


def training_rows(config, data) -> tuple:
  """``(source, shape, n, classes)`` of what a self-supervised method trains on: ``data`` loaded (``source`` None,
  or its :class:`jaxclust.data.stream.Source` with ``input="tf.data"``) or a Source of a dataset never loaded
  whole; ``classes`` 0 without labels. Rows the configured network cannot take are refused (:func:`check_rows`)."""
  from jaxclust.data import stream
  if isinstance(data, stream.Source):
    source, shape = data, stream._row_shape(data)  # pylint: disable=protected-access
  else:
    source, shape = None, data.x.shape[1:]
  check_rows(config, shape)
  if source is None and config.input == "tf.data":
    source = stream.open_source(data)
  if source is not None:
    return source, tuple(shape), source.n, stream.classes(source)
  return None, tuple(shape), data.x.shape[0], len(np.unique(data.y)) if data.y is not None else 0


def autoencoder(config, shape, *, conv: bool = True):
  """The configured autoencoder for rows of ``shape`` (``[d]`` tabular, ``[H, W, C]`` images); ``conv``
  False for methods that offer the papers' MLP only."""
  d = math.prod(shape)
  if config.model == "mlp":
    return MLPAutoencoder(input_dim=d, hidden=tuple(config.hidden), latent=config.latent)
  if config.model != "conv":
    raise ValueError(f"model={config.model!r} must be 'mlp' or 'conv'")
  if not conv:
    raise ValueError(f"model='conv' is offered for dec and idec; {config.method} uses the papers' MLP (model='mlp')")
  if len(shape) != 3:
    raise ValueError(f"model='conv' needs images [H, W, C], but {config.dataset!r} has rows of shape {tuple(shape)}")
  return ConvAutoencoder(image_shape=tuple(int(s) for s in shape), channels=tuple(config.conv_channels),
                         latent=config.latent)
