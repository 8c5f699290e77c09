"""Backbones for the self-supervised methods: ResNet-18/34/50 and a small CNN for 28x28 images.

ResNets follow He et al. (2016): basic blocks (two 3x3 convolutions) for 18 and 34 layers,
bottlenecks (1x1, 3x3, 1x1 with 4x expansion) for 50, projection shortcuts where the shape changes.
The ``"imagenet"`` stem is the paper's 7x7 stride-2 convolution and 3x3 max-pool; the ``"cifar"``
stem (SimCLR's and SCAN's CIFAR/STL networks) is one 3x3 stride-1 convolution without pooling.

``dtype=jnp.bfloat16`` computes in bf16 while parameters stay float32. BatchNorm normalizes over
the batch axis of whatever array it sees: under ``jit`` with the batch sharded over a mesh, that
is the global batch across devices (XLA inserts the cross-device reductions).
Every backbone maps ``[B, H, W, C]`` images to ``[B, features]`` after global average pooling.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype)
    y = nn.relu(norm()(conv(self.features, (3, 3), self.strides, padding=1)(x)))
    y = norm(scale_init=nn.initializers.zeros)(conv(self.features, (3, 3), padding=1)(y))
    if x.shape[-1] != self.features or self.strides != 1:
      x = norm()(conv(self.features, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int  # width of the 3x3 convolution; the block outputs 4x as many channels
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype)
    y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.features, (3, 3), self.strides, padding=1)(y)))
    y = norm(scale_init=nn.initializers.zeros)(conv(4 * self.features, (1, 1))(y))
    if x.shape[-1] != 4 * self.features or self.strides != 1:
      x = norm()(conv(4 * self.features, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block: Any = BasicBlock
  stem: str = "cifar"  # or "imagenet"
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.stem not in ("cifar", "imagenet"):
      raise ValueError(f"stem={self.stem!r} must be 'cifar' or 'imagenet'")
    x = x.astype(self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype)
    if self.stem == "imagenet":
      x = nn.relu(norm()(nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, dtype=self.dtype)(x)))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = nn.relu(norm()(nn.Conv(self.width, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)))
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        x = self.block(self.width * 2 ** stage, strides=2 if stage > 0 and b == 0 else 1, dtype=self.dtype)(x, train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _same_conv3x3(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)


@jax.custom_vjp
def _conv3x3_matmul_grad(x, kernel):
  """A 3x3, stride-1, 'SAME' NHWC convolution whose kernel gradient is one matrix product.

  XLA's CPU backend computes the kernel gradient of small-channel convolutions as a convolution over
  the batch at 2-8 GFLOP/s on the 2-core CPU (the forward runs at about 40), which made it most of
  the small CNN's training step. Here it is ``patches(x)^T @ dy`` with the nine shifted copies of
  ``x`` as patches; the forward and the input gradient stay XLA's. Same values as XLA's gradient
  up to float rounding (tests/test_backbones.py).
  """
  return _same_conv3x3(x, kernel)


def _conv3x3_fwd(x, kernel):
  return _same_conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda inputs: _same_conv3x3(inputs, kernel), x)
  (dx,) = input_vjp(dy)
  h, w, c_in = x.shape[1:]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
  dk = jnp.einsum("bhwp,bhwo->po", patches, dy.astype(x.dtype), preferred_element_type=jnp.float32)
  dk = dk.reshape(3, 3, c_in, dy.shape[-1])
  return dx, dk.astype(kernel.dtype)


_conv3x3_matmul_grad.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _cpu_conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
              feature_group_count=1, precision=None):
  """``lax.conv_general_dilated`` as flax's ``nn.Conv`` calls it, for SmallCNN's convolutions only
  (3x3, stride 1, padding 1, NHWC images and HWIO kernels, no dilation or groups)."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  if rhs.shape[:2] != (3, 3) or tuple(window_strides) != (1, 1) or feature_group_count != 1 or \
      [tuple(p) for p in padding] != [(1, 1), (1, 1)] or dimension_numbers not in (None, nhwc) or \
      any(d not in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation)):
    raise ValueError(f"_cpu_conv handles 3x3 stride-1 padding-1 NHWC convolutions, got kernel {rhs.shape}, "
                     f"strides {window_strides}, padding {padding}, dimension numbers {dimension_numbers}, "
                     f"dilations {lhs_dilation}, {rhs_dilation}")
  return _conv3x3_matmul_grad(lhs, rhs)


def _max_pool2(x):
  """2x2 max-pooling, stride 2. For even sizes as a reshape and a max, whose gradient XLA's CPU backend
  runs about twice as fast as the select-and-scatter of ``nn.max_pool``. The values are the same, and so
  is the gradient unless a window holds tied maxima (which share it here; after a ReLU the common
  tie, zeros, gets no gradient either way)."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    return nn.max_pool(x, (2, 2), strides=(2, 2))
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class SmallCNN(nn.Module):
  """Three conv-BN-ReLU layers (32, 64, 128 channels), max-pooling after the first two: 28x28 digits.

  On the CPU backend the convolutions take their kernel gradient from one matrix product
  (:func:`_conv3x3_matmul_grad`); the parameters and values are those of ``nn.Conv`` either way.
  """
  channels: Sequence[int] = (32, 64, 128)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    conv_fn = _cpu_conv if jax.default_backend() == "cpu" else lax.conv_general_dilated
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), padding=1, use_bias=False, dtype=self.dtype, conv_general_dilated=conv_fn)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
      if i < len(self.channels) - 1:
        x = _max_pool2(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


BACKBONES = {"resnet18": ResNet18, "resnet34": ResNet34, "resnet50": ResNet50, "small_cnn": SmallCNN}
