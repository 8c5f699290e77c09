"""Autoencoders of the AE-based clustering papers (flax.linen modules only).

DEC (Xie et al. 2016), IDEC (Guo et al. 2017) and VaDE (Jiang et al. 2017) share the fully
connected ``d-500-500-2000-10`` architecture: ReLU hidden layers, a linear embedding, a mirrored
decoder with a linear output. Weights start Glorot-uniform, the default of the Keras originals.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import optax

_INIT = nn.initializers.glorot_uniform()


class MLPAutoencoder(nn.Module):
  """``input_dim - hidden... - latent`` encoder and its mirror image as decoder.

  Inputs of any trailing shape (e.g. ``[b, 28, 28, 1]`` images) are flattened; ``decode`` returns
  the flat ``[b, input_dim]`` reconstruction.
  """
  input_dim: int
  hidden: Sequence[int] = (500, 500, 2000)
  latent: int = 10

  def setup(self):
    self.encoder_layers = [nn.Dense(h, kernel_init=_INIT, name=f"encoder_{i}") for i, h in enumerate(self.hidden)]
    self.embedding = nn.Dense(self.latent, kernel_init=_INIT, name="embedding")
    self.decoder_layers = [nn.Dense(h, kernel_init=_INIT, name=f"decoder_{i}")
                           for i, h in enumerate(reversed(self.hidden))]
    self.reconstruction = nn.Dense(self.input_dim, kernel_init=_INIT, name="reconstruction")

  def features(self, x):
    """The last hidden layer of the encoder (shared with VaDE's mean and variance heads)."""
    h = x.reshape(x.shape[0], -1)
    for layer in self.encoder_layers:
      h = nn.relu(layer(h))
    return h

  def encode(self, x):
    return self.embedding(self.features(x))

  def decode(self, z):
    h = z
    for layer in self.decoder_layers:
      h = nn.relu(layer(h))
    return self.reconstruction(h)

  def __call__(self, x):
    z = self.encode(x)
    return z, self.decode(z)


class ConvAutoencoder(nn.Module):
  """A small convolutional autoencoder for ``[H, W, C]`` images (the "conv" option of DEC/IDEC).

  Encoder: ``len(channels)`` ReLU convolutions (3x3, stride 2, SAME padding), then a linear
  embedding; the decoder mirrors it with transposed convolutions and crops to ``H x W``. This is the
  shape of DCEC's network (Guo et al. 2017) in a size that trains in minutes on a CPU. Inputs may
  come flat (``[b, H*W*C]``, as ``fit`` stores datasets); reconstructions are flat like
  :class:`MLPAutoencoder`'s, so the same losses and methods apply. Parameter names follow
  ``encoder_*`` / ``embedding`` / ``decoder_*`` / ``reconstruction``, which DEC relies on to drop
  the decoder.
  """
  image_shape: tuple[int, int, int]
  channels: Sequence[int] = (32, 64)
  latent: int = 10

  def setup(self):
    self.encoder_layers = [nn.Conv(c, (3, 3), strides=2, padding="SAME", kernel_init=_INIT, name=f"encoder_{i}")
                           for i, c in enumerate(self.channels)]
    self.embedding = nn.Dense(self.latent, kernel_init=_INIT, name="embedding")
    scale = 2 ** len(self.channels)
    self.smallest = (-(-self.image_shape[0] // scale), -(-self.image_shape[1] // scale), self.channels[-1])
    self.decoder_input = nn.Dense(math.prod(self.smallest), kernel_init=_INIT, name="decoder_input")
    self.decoder_layers = [nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding="SAME", kernel_init=_INIT,
                                            name=f"decoder_{i}")
                           for i, c in enumerate(reversed(self.channels[:-1]))]
    self.reconstruction = nn.ConvTranspose(self.image_shape[2], (3, 3), strides=(2, 2), padding="SAME",
                                           kernel_init=_INIT, name="reconstruction")

  def encode(self, x):
    h = x.reshape(x.shape[0], *self.image_shape)
    for layer in self.encoder_layers:
      h = nn.relu(layer(h))
    return self.embedding(h.reshape(h.shape[0], -1))

  def decode(self, z):
    h = nn.relu(self.decoder_input(z)).reshape(z.shape[0], *self.smallest)
    for layer in self.decoder_layers:
      h = nn.relu(layer(h))
    h = self.reconstruction(h)[:, :self.image_shape[0], :self.image_shape[1]]
    return h.reshape(h.shape[0], -1)

  def __call__(self, x):
    z = self.encode(x)
    return z, self.decode(z)


def reconstruction_loss(x, x_hat, mask=None, kind: str = "mse"):
  """Reconstruction error per sample, averaged over the (unmasked) batch.

  ``kind="mse"``: mean squared error (DEC/IDEC). ``kind="bce"``: binary cross-entropy with ``x_hat``
  as Bernoulli logits, summed over features, the likelihood of VaDE's decoder, for inputs in [0, 1].
  """
  x = x.reshape(x.shape[0], -1)
  if kind == "mse":
    per_sample = jnp.mean((x - x_hat) ** 2, axis=-1)
  elif kind == "bce":
    per_sample = jnp.sum(optax.sigmoid_binary_cross_entropy(x_hat, x), axis=-1)
  else:
    raise ValueError(f"kind={kind!r} must be 'mse' or 'bce'")
  if mask is None:
    return jnp.mean(per_sample)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1)
