"""SmallCNN's CPU convolution and pooling against XLA's own and a numpy brute force."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclust.models import resnet


def _kernel_grad_numpy(x, dy):
  """dL/dk[i, j, c, o] = sum over b, h, w of x_padded[b, h + i, w + j, c] * dy[b, h, w, o]."""
  b, h, w, c = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dk = np.zeros((3, 3, c, dy.shape[-1]))
  for i in range(3):
    for j in range(3):
      dk[i, j] = np.einsum("bhwc,bhwo->co", padded[:, i:i + h, j:j + w], dy)
  return dk


@pytest.mark.parametrize("c_in,c_out", [(1, 4), (3, 5)])
def test_kernel_gradient_matches_brute_force_and_xla(c_in, c_out):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 5, c_in)).astype(np.float32)
  k = rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32)
  dy = rng.normal(size=(2, 6, 5, c_out)).astype(np.float32)

  def loss(conv, x, k):
    return jnp.sum(conv(x, k) * dy)

  dx, dk = jax.grad(lambda x, k: loss(resnet._conv3x3_matmul_grad, x, k), argnums=(0, 1))(x, k)
  dx_xla, dk_xla = jax.grad(lambda x, k: loss(resnet._same_conv3x3, x, k), argnums=(0, 1))(x, k)
  np.testing.assert_allclose(dk, _kernel_grad_numpy(x.astype(np.float64), dy.astype(np.float64)), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dk, dk_xla, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx, dx_xla, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(resnet._conv3x3_matmul_grad(x, k), resnet._same_conv3x3(x, k), rtol=1e-6)


def test_max_pool_matches_flax_values_and_gradient():
  x = jax.random.normal(jax.random.key(0), (3, 8, 6, 4))  # no ties: one maximum per window
  reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(resnet._max_pool2(x), reference(x))
  weights = jax.random.normal(jax.random.key(1), (3, 4, 3, 4))
  grad = jax.grad(lambda x: jnp.sum(resnet._max_pool2(x) * weights))(x)
  np.testing.assert_array_equal(grad, jax.grad(lambda x: jnp.sum(reference(x) * weights))(x))
  odd = jnp.ones((1, 3, 3, 1))
  assert resnet._max_pool2(odd).shape == (1, 1, 1, 1)  # odd sizes fall back to nn.max_pool (floor)


class _PlainCNN(nn.Module):
  """SmallCNN written with flax's nn.Conv and nn.max_pool only: the reference."""
  channels: tuple
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
      if i < len(self.channels) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.bfloat16, 3e-2)])
def test_small_cnn_trains_as_the_plain_flax_network(dtype, tol):
  assert jax.default_backend() == "cpu"  # the path under test is the CPU one
  x = jax.random.uniform(jax.random.key(0), (8, 12, 12, 1))
  ours, plain = resnet.SmallCNN(channels=(4, 8, 16), dtype=dtype), _PlainCNN(channels=(4, 8, 16), dtype=dtype)
  variables = ours.init(jax.random.key(1), x)
  assert jax.tree.structure(variables) == jax.tree.structure(plain.init(jax.random.key(1), x))

  def loss(model, params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                         mutable=["batch_stats"])
    return jnp.sum(out ** 2)

  jaxpr = str(jax.make_jaxpr(lambda p: loss(ours, p))(variables["params"]))
  assert jaxpr.count("custom_vjp_call[") == 3  # each convolution takes the matrix-product gradient
  grads = jax.jit(jax.grad(lambda p: loss(ours, p)))(variables["params"])
  expected = jax.jit(jax.grad(lambda p: loss(plain, p)))(variables["params"])
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    assert a.dtype == jnp.float32  # parameters and their gradients stay float32
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(jnp.max(jnp.abs(b))))


def test_cpu_conv_refuses_other_convolutions():
  x, k = jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 3))
  with pytest.raises(ValueError, match=r"kernel \(5, 5, 2, 3\)"):
    resnet._cpu_conv(x, k, (1, 1), [(2, 2), (2, 2)])
