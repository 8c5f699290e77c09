"""SwAV's on-device multi-crop alone: compile time and time per batch, against another version of it.

Times ``jaxclust.data.augment.multi_crop`` on synthetic images already on the device and, with
``--reference FILE ...``, the ``multi_crop`` of other ``augment.py`` files (older commits', say) on
the same images in the same run, with the largest difference of each from this tree's output:

  git show 6fc3681:jaxclust/data/augment.py > /tmp/augment_6fc3681.py
  python experiments/bench_multi_crop.py --reference /tmp/augment_6fc3681.py            # ImageNet recipe
  python experiments/bench_multi_crop.py --reference /tmp/augment_6fc3681.py --image 28 --channels 1 \\
      --batch 256 --crops 2x28:0.3-1.0 4x16:0.1-0.3 --flip-p 0 --blur-p 0                # the digit recipe
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxclust.data import augment


def parse_crop(text: str):
  """``"2x224:0.14-1.0"`` -> ``(2, 224, (0.14, 1.0))``."""
  try:
    count, rest = text.split("x")
    size, scale = rest.split(":")
    low, high = scale.split("-")
    return int(count), int(size), (float(low), float(high))
  except ValueError:
    raise argparse.ArgumentTypeError(f"crop {text!r} is not COUNTxSIZE:LOW-HIGH, e.g. 2x224:0.14-1.0") from None


def load_module(path: str):
  spec = importlib.util.spec_from_file_location("reference_augment", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def compile_variant(multi_crop, images, crops, options):
  fn = jax.jit(functools.partial(multi_crop, crops=crops, **options))
  start = time.perf_counter()
  compiled = fn.lower(jax.random.key(3), images).compile()
  return compiled, time.perf_counter() - start


def best_of(compiled, images, repeats):
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.key(3), images))
    best = min(best, time.perf_counter() - start)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--image", type=int, default=256, help="side of the square input images")
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--crops", nargs="+", type=parse_crop, default=[parse_crop("2x224:0.14-1.0"),
                                                                     parse_crop("6x96:0.05-0.14")])
  parser.add_argument("--blur-p", type=float, default=0.5)
  parser.add_argument("--flip-p", type=float, default=0.5)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant and round; the best counts")
  parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant in turn; the median counts")
  parser.add_argument("--reference", nargs="+", default=[], help="other augment.py files whose multi_crop to time beside")
  args = parser.parse_args()
  dev = jax.devices()[0]
  print(f"Device: {dev.platform} x{jax.device_count()} ({dev.device_kind}); host {platform.machine()}; "
        f"jax {jax.__version__}; date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
  crops = tuple(args.crops)
  images = jax.random.uniform(jax.random.key(0), (args.batch, args.image, args.image, args.channels))
  options = {"blur_p": args.blur_p, "flip_p": args.flip_p}
  variants = [("jaxclust (this tree)", augment.multi_crop)]
  variants += [(f"reference {path}", load_module(path).multi_crop) for path in args.reference]
  compile_variant(variants[0][1], images[:1], crops, options)  # untimed: the process's first compile costs more
  compiled, compile_s = zip(*[compile_variant(fn, images, crops, options) for _, fn in variants])
  outputs = [jax.block_until_ready(c(jax.random.key(3), images)) for c in compiled]
  # The variants take turns, round after round: on a shared or throttled machine, a slow spell then
  # hits every variant rather than one. Each round keeps its best call; the table shows the median round.
  rounds = [[best_of(c, images, args.repeats) for c in compiled] for _ in range(args.rounds)]
  step_s = [float(np.median([r[i] for r in rounds])) for i in range(len(variants))]
  rows = [(name, compile_s[i], step_s[i]) for i, (name, _) in enumerate(variants)]
  crop_text = " + ".join(f"{c}x{s}" for c, s, _ in crops)
  print(f"\nmulti-crop {crop_text} of {args.batch} images {args.image}x{args.image}x{args.channels}, "
        f"blur_p {args.blur_p}, flip_p {args.flip_p}; median of {args.rounds} rounds, each the best of "
        f"{args.repeats} calls\n")
  print("| multi_crop | compile s | ms per batch | images/s | ms / this tree's |")
  print("|---|---|---|---|---|")
  for name, compile_seconds, seconds in rows:
    print(f"| {name} | {compile_seconds:.2f} | {seconds * 1e3:.2f} | {args.batch / seconds:.1f} | "
          f"{seconds / rows[0][2]:.2f} |")
  for (name, _, _), out in zip(rows[1:], outputs[1:]):
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(outputs[0], out))
    print(f"\nlargest |difference| from this tree's output, {name}: {diff:.3g}")


if __name__ == "__main__":
  main()
