"""The networks a configuration names, built for the methods: the image backbone of the
self-supervised methods and the autoencoder of the DEC family."""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxclust.models import resnet
from jaxclust.models.autoencoder import ConvAutoencoder, MLPAutoencoder


def backbone(config):
  """The configured backbone (``backbone``, ``stem``, ``dtype``, ``cnn_channels``)."""
  kind = config.backbone
  if kind not in resnet.BACKBONES:
    raise ValueError(f"backbone={kind!r} must be one of {', '.join(resnet.BACKBONES)}")
  if config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype={config.dtype!r} must be 'float32' or 'bfloat16'")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
  make = resnet.BACKBONES[kind]
  if kind == "small_cnn":
    return make(channels=tuple(config.cnn_channels), dtype=dtype)
  return make(stem=config.stem, dtype=dtype)


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
