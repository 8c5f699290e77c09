"""One training epoch as a compiled ``lax.scan`` against a Python loop over one compiled step.

Why the image drivers loop in Python on CPU (:func:`jaxclust.epochs.epoch_runner`): XLA's CPU
backend ran the small CNN's SimCLR step several times slower inside a compiled loop than alone.
Both variants run the same step on the same synthetic MNIST-shaped data in this process; the
script prints seconds per step and their ratio.

  python experiments/bench_epoch_loop.py [--steps 10] [--channels 16,32,64] [--batch 256]
"""

import argparse
import functools
import time

import jax
import numpy as np
import optax

from jaxclust import epochs
from jaxclust.data import augment
from jaxclust.methods import simclr
from jaxclust.models import heads, resnet


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--channels", default="16,32,64")
  parser.add_argument("--batch", type=int, default=256)
  args = parser.parse_args()
  channels = tuple(int(c) for c in args.channels.split(","))
  n = args.steps * args.batch
  x = jax.random.uniform(jax.random.key(0), (n, 28, 28, 1))
  model = heads.Pretext(resnet.SmallCNN(channels=channels), heads.ProjectionHead(128, 64))
  tx = optax.sgd(0.1, momentum=0.9)
  view = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0), flip_p=0.0)
  step = functools.partial(simclr.train_step, model=model, tx=tx, augment=view)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; SimCLR step, small CNN {channels}, "
        f"batch {args.batch} (x2 views), {args.steps} steps per epoch")
  seconds = {}
  for name, loop in (("lax.scan", False), ("python loop", True)):
    epoch = epochs.batch_epoch(step, args.batch, n, None, loop=loop)
    state = simclr.init(model, jax.random.key(0), x[:2], tx)
    state, m = epoch(state, x, jax.random.key(1))  # compiles
    jax.block_until_ready(m)
    tick = time.perf_counter()
    state, m = epoch(state, x, jax.random.key(2))
    jax.block_until_ready(m)
    seconds[name] = (time.perf_counter() - tick) / args.steps
    print(f"{name:12s} {seconds[name]:.4f} s/step  loss {float(m['loss']):.4f}")
  print(f"lax.scan / python loop: {seconds['lax.scan'] / seconds['python loop']:.2f}")
  assert np.isfinite(float(m["loss"]))


if __name__ == "__main__":
  main()
