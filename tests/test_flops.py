"""Model-FLOPs counting against hand counts and the published ResNet sizes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxclust.models import flops, resnet


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding="SAME")(x))  # [2, 3, 3, 8]
    return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))


def test_counts_every_weight_use_twice():
  model = Tiny()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 4)))
  expected = 2 * (2 * 3 * 3) * (3 * 3 * 4 * 8) + 2 * 2 * (8 * 5)
  assert flops.forward_flops(model, variables, (2, 6, 6, 4)) == expected


@pytest.mark.parametrize("make, shape, gmacs", [
    (lambda: resnet.ResNet50(stem="imagenet"), (1, 224, 224, 3), 4.09),  # torchvision's published figure
    (lambda: resnet.ResNet18(stem="imagenet"), (1, 224, 224, 3), 1.81),
    (lambda: resnet.ResNet18(stem="cifar"), (1, 32, 32, 3), 0.56),  # the usual CIFAR ResNet-18 figure
])
def test_resnets_match_their_published_sizes(make, shape, gmacs):
  model = make()
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  count = flops.forward_flops(model, variables, shape, train=False)
  assert count / 2e9 == pytest.approx(gmacs, rel=0.01)
