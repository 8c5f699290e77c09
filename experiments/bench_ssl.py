"""Throughput of the SimCLR and SCAN train steps: images/s, step time, model-FLOPs utilization.

CIFAR-shaped synthetic data (32x32x3) already on the device, augmented on the device, ResNet-18
with the CIFAR stem, the same jitted steps ``jaxclust fit scan`` runs. FLOPs per step come from
XLA's cost analysis of the compiled step (forward, backward and augmentation of both views), so
utilization = FLOPs per step / step time / peak. The issue's goal: a SimCLR ResNet-18 CIFAR-10
epoch (50,000 images, 2 views, batch 512) in at most 5 s on one H100.

    python experiments/bench_ssl.py                       # CPU: small batch, few steps
    python experiments/bench_ssl.py --batch 512 --steps 20 --peak-tflops 989 --dtype bfloat16   # H100 (dense bf16 peak)
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import optax

from jaxclust import parallel
from jaxclust.data import augment
from jaxclust.methods import scan, simclr
from jaxclust.models import heads, resnet


def time_step(step, state, batch, steps):
  """Compile time, median seconds per step over ``steps`` calls, and XLA's FLOPs per step."""
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = float(analysis.get("flops", 0.0))
  tick = time.perf_counter()
  state, m = step(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  first = time.perf_counter() - tick
  times = []
  for i in range(steps):
    tick = time.perf_counter()
    state, m = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - tick)
  times.sort()
  return first, times[len(times) // 2], flops


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for utilization")
  parser.add_argument("--out", default=None, help="also write the results as JSON here")
  args = parser.parse_args()
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  mesh = parallel.make_mesh()
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  images = jax.device_put(jax.random.uniform(jax.random.key(0), (args.batch, 32, 32, 3)), batch_sharding)
  weak = augment.batch(augment.simclr_view, size=(32, 32), scale=(0.2, 1.0))
  backbone = resnet.ResNet18(stem="cifar", dtype=dtype)
  results = []

  pretext = heads.Pretext(backbone, heads.ProjectionHead(512, 128))
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.4, momentum=0.9))
  state = parallel.put(simclr.init(pretext, jax.random.key(1), images[:2], tx), mesh)
  step = jax.jit(functools.partial(simclr.train_step, model=pretext, tx=tx, augment=weak, temperature=0.1),
                 donate_argnums=0)
  first, seconds, flops = time_step(step, state, {"image": images}, args.steps)
  results.append({"step": "SimCLR (2 views)", "images_per_step": 2 * args.batch, "first": first, "seconds": seconds,
                  "flops": flops, "epoch_50k": seconds * 50_000 / args.batch})

  clusterer = heads.Clusterer(backbone, k=10, heads=10)
  tx = optax.adamw(1e-4, weight_decay=1e-4)
  state = parallel.put(scan.init(clusterer, jax.random.key(1), images[:2], tx), mesh)
  step = jax.jit(functools.partial(scan.scan_step, model=clusterer, tx=tx, augment=weak, entropy_weight=5.0),
                 donate_argnums=0)
  first, seconds, flops = time_step(step, state, {"image": images, "neighbor": images}, args.steps)
  results.append({"step": "SCAN (anchor + neighbour)", "images_per_step": 2 * args.batch, "first": first,
                  "seconds": seconds, "flops": flops, "epoch_50k": seconds * 50_000 / args.batch})

  device = jax.devices()[0]
  print(f"Device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}); host {platform.processor() or platform.machine()}; "
        f"jax {jax.__version__}; date {time.strftime('%Y-%m-%d')}")
  print(f"Command: python experiments/bench_ssl.py --batch {args.batch} --steps {args.steps} --dtype {args.dtype}"
        + (f" --peak-tflops {args.peak_tflops}" if args.peak_tflops else ""))
  print("\n| step | batch | dtype | step s (median) | dataset images/s (2 views each) | epoch of 50k images s | first call s | "
        "GFLOP/step (XLA) | TFLOP/s | utilization |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    tflops = r["flops"] / r["seconds"] / 1e12
    use = f"{100 * tflops / args.peak_tflops:.1f}%" if args.peak_tflops else "-"
    print(f"| {r['step']} | {args.batch} | {args.dtype} | {r['seconds']:.4f} | "
          f"{args.batch / r['seconds']:.0f} | {r['epoch_50k']:.1f} | {r['first']:.1f} | "
          f"{r['flops'] / 1e9:.1f} | {tflops:.3f} | {use} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"device": device.device_kind, "batch": args.batch, "dtype": args.dtype, "results": results}, f)


if __name__ == "__main__":
  main()
