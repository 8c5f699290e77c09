"""The backbone of the self-supervised methods for vector rows: tabular features, flattened time series,
precomputed embeddings (flax.linen modules only).

A stack of ``Dense -> BatchNorm -> ReLU`` layers, the shape of SCARF's encoder (Bahri et al., ICLR 2022:
a 4-layer ReLU MLP of width 256 for tabular contrastive learning), with BatchNorm as the image backbones
have it: under ``jit`` with the batch sharded over a mesh, its statistics span the global batch (what
SimCLR's negatives and SwAV's codes need), and ``train=False`` uses the running averages. Rows of any
trailing shape (``[B, T, C]`` time series) are flattened. The output ``[B, widths[-1]]`` is what the
projection heads, SCAN's clustering heads and the neighbour mining read, as the pooled features of a CNN.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

WIDTHS = (512, 512, 256)  # the vectors recipes' default (configs.HELP: mlp_widths)


class MLP(nn.Module):
  """``[B, ...]`` rows to ``[B, widths[-1]]`` features; ``dtype`` is the compute dtype (params stay float32)."""
  widths: Sequence[int] = WIDTHS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i, width in enumerate(self.widths):
      h = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name=f"norm_{i}")(h)
      h = nn.relu(h)
    return h.astype(jnp.float32)
