"""Heads on top of a backbone: SimCLR/MoCo projection MLPs and SCAN's clustering heads."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  """Linear, ReLU, linear (SimCLR's g(.); SCAN's pretext uses 128 outputs)."""
  hidden: int = 512
  out: int = 128

  @nn.compact
  def __call__(self, h):
    return nn.Dense(self.out, name="out")(nn.relu(nn.Dense(self.hidden, name="hidden")(h)))


class Pretext(nn.Module):
  """Backbone + projection head: ``[B, H, W, C]`` images to ``[B, out]`` projections."""
  backbone: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = False):
    return self.head(self.backbone(x, train))

  def features(self, x, train: bool = False):
    """The backbone's pooled features (what neighbours are mined on with ``mine.features="backbone"``)."""
    return self.backbone(x, train)


class Clusterer(nn.Module):
  """Backbone + ``heads`` linear clustering heads: ``[heads, B, k]`` logits (SCAN trains several).

  :meth:`classify` applies the heads alone to backbone features, for SCAN with a frozen backbone.
  """
  backbone: nn.Module
  k: int
  heads: int = 1
  dtype: Any = jnp.float32

  def setup(self):
    # Named head_0, head_1, ...: one Dense layer per head.
    self.cluster_heads = [nn.Dense(self.k, name=f"head_{i}") for i in range(self.heads)]

  def __call__(self, x, train: bool = False):
    return self.classify(self.backbone(x, train))

  def features(self, x, train: bool = False):
    return self.backbone(x, train)

  def classify(self, h):
    return jnp.stack([head(h) for head in self.cluster_heads])
