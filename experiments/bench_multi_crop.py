"""SwAV's on-device multi-crop alone: compile time and time per batch, against another version of it.

Times ``jaxclust.data.augment.multi_crop`` on synthetic images already on the device and, with
``--reference FILE``, the ``multi_crop`` of another ``augment.py`` (an older commit's, say) on the
same images in the same run, with the largest difference between their outputs:

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


def time_variant(multi_crop, images, crops, options, repeats):
  fn = jax.jit(functools.partial(multi_crop, crops=crops, **options))
  rng = jax.random.key(3)
  start = time.perf_counter()
  compiled = fn.lower(rng, images).compile()
  compile_s = time.perf_counter() - start
  out = jax.block_until_ready(compiled(rng, images))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(rng, images))
    best = min(best, time.perf_counter() - start)
  return compile_s, best, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--image", type=int, default=256, help="side of the square input images")
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--crops", nargs="+", type=parse_crop, default=[parse_crop("2x224:0.14-1.0"),
                                                                     parse_crop("6x96:0.05-0.14")])
  parser.add_argument("--blur-p", type=float, default=0.5)
  parser.add_argument("--flip-p", type=float, default=0.5)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first; the best is shown")
  parser.add_argument("--reference", default=None, help="another augment.py whose multi_crop to time beside")
  args = parser.parse_args()
  dev = jax.devices()[0]
  print(f"Device: {dev.platform} x{jax.device_count()} ({dev.device_kind}); host {platform.machine()}; "
        f"jax {jax.__version__}; date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
  crops = tuple(args.crops)
  images = jax.random.uniform(jax.random.key(0), (args.batch, args.image, args.image, args.channels))
  options = {"blur_p": args.blur_p, "flip_p": args.flip_p}
  variants = [("jaxclust (this tree)", augment.multi_crop)]
  if args.reference:
    variants.append((f"reference ({args.reference})", load_module(args.reference).multi_crop))
  rows, outputs = [], []
  for name, multi_crop in variants:
    compile_s, step_s, out = time_variant(multi_crop, images, crops, options, args.repeats)
    rows.append((name, compile_s, step_s))
    outputs.append(out)
  crop_text = " + ".join(f"{c}x{s}" for c, s, _ in crops)
  print(f"\nmulti-crop {crop_text} of {args.batch} images {args.image}x{args.image}x{args.channels}, "
        f"blur_p {args.blur_p}, flip_p {args.flip_p}\n")
  print("| multi_crop | compile s | ms per batch | images/s | ms / this tree's |")
  print("|---|---|---|---|---|")
  for name, compile_s, step_s in rows:
    print(f"| {name} | {compile_s:.2f} | {step_s * 1e3:.2f} | {args.batch / step_s:.1f} | "
          f"{step_s / rows[0][2]:.2f} |")
  if len(outputs) == 2:
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*outputs))
    print(f"\nlargest |difference| between the two outputs: {diff:.3g}")


if __name__ == "__main__":
  main()
