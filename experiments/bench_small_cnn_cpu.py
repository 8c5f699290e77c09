"""The small CNN's training steps with jaxclust's CPU convolution and pooling against plain flax layers.

On the CPU backend, ``resnet.SmallCNN`` takes each convolution's kernel gradient from one matrix
product and max-pools with a reshape (jaxclust/models/resnet.py). This script times the digit
recipes' SimCLR and SwAV steps with that network and with the same network written with flax's
``nn.Conv`` and ``nn.max_pool`` only, in the same process, on synthetic MNIST-shaped data, and
prints seconds per step and their ratio.

  python experiments/bench_small_cnn_cpu.py [--steps 10] [--batch 256]
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxclust.data import augment
from jaxclust.methods import simclr, swav
from jaxclust.models import heads, resnet


class PlainCNN(nn.Module):
  """SmallCNN with flax's own layers (the reference)."""
  channels: tuple

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), padding=1, use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
      if i < len(self.channels) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return jnp.mean(x, axis=(1, 2))


def seconds_per_step(step, state, batch, steps):
  state, m = step(state, batch, jax.random.key(0))  # compiles
  jax.block_until_ready(m)
  tick = time.perf_counter()
  for i in range(steps):
    state, m = step(state, batch, jax.random.key(i + 1))
  jax.block_until_ready(m)
  return (time.perf_counter() - tick) / steps, float(m["loss"])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=256)
  args = parser.parse_args()
  x = jax.random.uniform(jax.random.key(0), (args.batch, 28, 28, 1))
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); batch {args.batch}, "
        f"{args.steps} timed steps after one compiling step")
  print("| step | network | flax layers s/step | jaxclust s/step | jaxclust / flax |")
  print("|---|---|---|---|---|")

  tx = optax.adam(1e-3)
  view = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0), flip_p=0.0)
  crops = ((2, 28, (0.3, 1.0)), (4, 16, (0.1, 0.3)))
  benches = {
      "SimCLR, 2 views": ((16, 32, 64), lambda cnn: heads.Pretext(cnn, heads.ProjectionHead(128, 64)), simclr.init,
                          functools.partial(simclr.train_step, tx=tx, augment=view)),
      "SwAV, 2x28 + 4x16, 30 prototypes": (
          (32, 64, 128), lambda cnn: swav.SwAVModel(cnn, hidden=128, out=64, prototypes=30), swav.init,
          functools.partial(swav.train_step, tx=tx, temperature=0.1,
                            augment=functools.partial(augment.multi_crop, crops=crops, flip_p=0.0))),
  }
  for name, (channels, make, init, step_fn) in benches.items():
    seconds = {}
    for kind, cnn in (("flax", PlainCNN(channels)), ("jaxclust", resnet.SmallCNN(channels))):
      model = make(cnn)
      state = init(model, jax.random.key(1), x[:2], tx)
      step = jax.jit(functools.partial(step_fn, model=model), donate_argnums=0)
      seconds[kind], loss = seconds_per_step(step, state, {"image": x}, args.steps)
    print(f"| {name} | {channels} | {seconds['flax']:.4f} | {seconds['jaxclust']:.4f} | "
          f"{seconds['jaxclust'] / seconds['flax']:.2f} |")


if __name__ == "__main__":
  main()
