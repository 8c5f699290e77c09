"""Autoencoder pretraining: batching covers every row once, the loss falls, one trace per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxclust.methods import pretrain
from jaxclust.models.autoencoder import MLPAutoencoder, reconstruction_loss


def test_epoch_batches_cover_each_row_once():
  index, mask = pretrain.epoch_batches(jax.random.key(0), 1000, 256)
  assert index.shape == (4, 256) and mask.shape == (4, 256)
  used = np.asarray(index)[np.asarray(mask)]
  np.testing.assert_array_equal(np.sort(used), np.arange(1000))
  assert int(mask.sum()) == 1000


def test_masked_reconstruction_ignores_padding():
  x = jnp.ones((4, 3))
  x_hat = jnp.array([[1.0] * 3, [0.0] * 3, [1.0] * 3, [9.0] * 3])
  assert float(reconstruction_loss(x, x_hat, jnp.array([1.0, 1.0, 1.0, 0.0]))) == float(jnp.mean((x[:3] - x_hat[:3]) ** 2))


def test_epochs_reduce_reconstruction_error(digits):
  x = jnp.asarray(digits[0] / 16.0, jnp.float32)
  model = MLPAutoencoder(input_dim=64, hidden=(64, 64), latent=8)
  tx = optax.adam(1e-3)
  state = pretrain.init(model, jax.random.key(0), x[:2], tx)
  compiled_before = pretrain.train_epoch._cache_size()  # other tests in this worker may have compiled it
  losses = []
  for epoch in range(4):
    state, metrics = pretrain.train_epoch(state, x, jax.random.key(epoch), model=model, tx=tx, batch_size=128)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.7 * losses[0], losses
  assert int(state.step) == 4 * 15  # ceil(1797 / 128) steps per epoch
  assert pretrain.train_epoch._cache_size() == compiled_before + 1  # same shapes: compiled once


def test_bernoulli_reconstruction_loss_is_binary_cross_entropy():
  import pytest
  rng = np.random.default_rng(0)
  x, logits = rng.random((6, 5)), rng.normal(size=(6, 5))
  p = 1 / (1 + np.exp(-logits))
  expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1).mean()
  ours = reconstruction_loss(jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32), kind="bce")
  np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="kind='l1' must be 'mse' or 'bce'"):
    reconstruction_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), kind="l1")
