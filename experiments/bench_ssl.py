"""Throughput of the SimCLR, SCAN and SwAV train steps: images/s, step time, model-FLOPs utilization.

Synthetic images already on the device, augmented on the device, the same jitted steps that
``jaxclust fit scan|swav`` run:
  simclr  ResNet-18, CIFAR stem, 32x32 inputs, two views per image (SCAN's pretext);
  scan    ResNet-18, CIFAR stem, anchor + neighbour views, 10 clustering heads;
  swav    ResNet-50, ImageNet stem, 256x256 uint8 inputs cut into 2x224 + 6x96 crops, 3000 prototypes.
Each step is timed twice: with the on-device augmentation ("aug"), and with views that are plain
slices of the input ("no aug"), which is the work the PyTorch peer does (``bench_ssl_torch.py``,
run in the same invocation with ``--peer-python``), so the ratio compares the same work.

Model FLOPs per step = 3 x the forward FLOPs of the network's convolutions and dense layers on the
step's views (counted from the layer shapes; backward counted as twice the forward, the usual
MFU convention). XLA's FLOP count of the whole compiled step is listed too, but on GPU it omits
the convolutions (cuDNN custom calls), so it is not used for utilization.
Utilization = model FLOPs per step / step time / ``--peak-tflops``. Step time is the wall time of
``--steps`` back-to-back steps divided by their number, after two warm-up steps.

Goals: a SimCLR ResNet-18 CIFAR-10 epoch (50,000 images, 2 views, batch 512) in at most 5 s on one
H100 (SCAN issue); SwAV ResNet-50 multi-crop in bf16 at >= 15% of the H100's dense bf16 peak
(989 TFLOP/s for the SXM part) (SwAV issue).

    python experiments/bench_ssl.py --bench simclr scan --batch 16 --steps 3      # CPU smoke run
    python experiments/bench_ssl.py --bench simclr scan swav --dtype bfloat16 --peak-tflops 989 \
        --peer-python python3 --out results.json                                 # H100
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from jaxclust import parallel
from jaxclust.data import augment
from jaxclust.methods import scan, simclr, swav
from jaxclust.models import flops, heads, resnet

SWAV_CROPS = ((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14)))


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float((analysis or {}).get("flops", 0.0))


def forward_flops(model, variables, view_shapes) -> float:
  """Training-mode forward FLOPs over views of the given shapes (``jaxclust.models.flops``)."""
  return sum(flops.forward_flops(model, variables, shape, train=True, mutable=["batch_stats"])
             for shape in view_shapes)


def time_step(step, state, batch, steps):
  """Compile seconds, seconds of the first call, seconds per step, and XLA's FLOPs per step."""
  tick = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - tick
  flops = _flops(compiled)
  tick = time.perf_counter()
  state, m = compiled(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  first = time.perf_counter() - tick
  state, m = compiled(state, batch, jax.random.key(1))
  jax.block_until_ready((state, m))
  tick = time.perf_counter()
  for i in range(steps):
    state, m = compiled(state, batch, jax.random.key(i + 2))
  jax.block_until_ready((state, m))
  return compile_s, first, (time.perf_counter() - tick) / steps, flops


def _bench_cifar(args, mesh, sharding, model, init, train_step, tx, batch_of, **options):
  """A two-view ResNet-18 step on CIFAR-shaped images, with and without on-device augmentation."""
  images = jax.device_put(jax.random.uniform(jax.random.key(0), (args.batch, 32, 32, 3)), sharding)
  state = parallel.put(init(model, jax.random.key(1), images[:2], tx), mesh)
  model_flops = 3 * forward_flops(model, {"params": state.params, "batch_stats": state.batch_stats},
                                  [(2 * args.batch, 32, 32, 3)])
  views = {"aug": augment.batch(augment.simclr_view, size=(32, 32), scale=(0.2, 1.0)),
           "no aug": lambda rng, x: x}
  for name, view in views.items():
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, augment=view, **options), donate_argnums=0)
    state = parallel.put(init(model, jax.random.key(1), images[:2], tx), mesh)
    yield name, args.batch, 2 * args.batch, model_flops, time_step(step, state, batch_of(images), args.steps)


def bench_simclr(args, dtype, mesh, sharding):
  model = heads.Pretext(resnet.ResNet18(stem="cifar", dtype=dtype), heads.ProjectionHead(512, 128))
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.4, momentum=0.9))
  return _bench_cifar(args, mesh, sharding, model, simclr.init, simclr.train_step, tx,
                      lambda images: {"image": images}, temperature=0.1)


def bench_scan(args, dtype, mesh, sharding):
  model = heads.Clusterer(resnet.ResNet18(stem="cifar", dtype=dtype), k=10, heads=10)
  tx = optax.adamw(1e-4, weight_decay=1e-4)
  return _bench_cifar(args, mesh, sharding, model, scan.init, scan.scan_step, tx,
                      lambda images: {"image": images, "neighbor": images}, entropy_weight=5.0)


def _swav_slices(rng, images):
  """SwAV's crops as plain slices (no augmentation work), the same shapes as multi-crop."""
  images = images.astype(jnp.float32) / 255.0
  return [images[:, :size, :size] for count, size, _ in SWAV_CROPS for _ in range(count)]


def bench_swav(args, dtype, mesh, sharding):
  batch = args.swav_batch
  images = jax.device_put(jax.random.randint(jax.random.key(0), (batch, 256, 256, 3), 0, 256, jnp.uint8), sharding)
  model = swav.SwAVModel(resnet.ResNet50(stem="imagenet", dtype=dtype), hidden=2048, out=128, prototypes=3000)
  tx = optax.lars(4.8, weight_decay=1e-6, momentum=0.9)
  example = jnp.zeros((2, 224, 224, 3))
  state = parallel.put(swav.init(model, jax.random.key(1), example, tx), mesh)
  shapes = [(count * batch, size, size, 3) for count, size, _ in SWAV_CROPS]
  model_flops = 3 * forward_flops(model, {"params": state.params, "batch_stats": state.batch_stats}, shapes)
  views = {"aug": functools.partial(augment.multi_crop, crops=SWAV_CROPS, blur_p=0.5), "no aug": _swav_slices}
  for name, view in views.items():
    step = jax.jit(functools.partial(swav.train_step, model=model, tx=tx, augment=view, temperature=0.1, mesh=mesh),
                   donate_argnums=0)
    state = parallel.put(swav.init(model, jax.random.key(1), example, tx), mesh)
    n_views = sum(count for count, _, _ in SWAV_CROPS)
    yield name, batch, n_views * batch, model_flops, time_step(step, state, {"image": images}, args.steps)


BENCHES = {"simclr": bench_simclr, "scan": bench_scan, "swav": bench_swav}


def run_peer(args, bench):
  """The PyTorch peer's seconds per step for the same step without augmentation (or None)."""
  command = [args.peer_python, str(Path(__file__).with_name("bench_ssl_torch.py")), "--bench", bench,
             "--batch", str(args.swav_batch if bench == "swav" else args.batch), "--steps", str(args.steps),
             "--dtype", args.dtype]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode:
    print(f"peer {bench} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bench", nargs="+", default=["simclr", "scan"], choices=sorted(BENCHES))
  parser.add_argument("--batch", type=int, default=64, help="images per step for simclr and scan")
  parser.add_argument("--swav-batch", type=int, default=8, help="images per step for swav (8 crops each)")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for utilization")
  parser.add_argument("--peer-python", default=None, help="a Python with torch and torchvision: runs the peer")
  parser.add_argument("--out", default=None, help="also write the results as JSON here")
  args = parser.parse_args()
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  # The peers run first: once JAX starts it holds most of the GPU's memory (XLA's preallocation).
  peers = {bench: run_peer(args, bench) if args.peer_python else None for bench in args.bench}
  mesh = parallel.make_mesh()
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  device = jax.devices()[0]
  print(f"Device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}); host "
        f"{platform.processor() or platform.machine()}; jax {jax.__version__}; date {time.strftime('%Y-%m-%d')}")
  print(f"Command: python {' '.join(sys.argv)}\n")
  print("| step | views | batch | dtype | step s | images/s | views/s | epoch of 50k s | compile s | "
        "model GFLOP/step | model TFLOP/s | utilization | XLA GFLOP/step | PyTorch step s | jaxclust / PyTorch |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
  results = []
  for bench in args.bench:
    peer = peers[bench]
    for views, batch, n_views, model_flops, (compile_s, first, seconds, xla_flops) in BENCHES[bench](
        args, dtype, mesh, sharding):
      tflops = model_flops / seconds / 1e12
      use = f"{100 * tflops / args.peak_tflops:.1f}%" if args.peak_tflops else "-"
      peer_s = peer["seconds"] if peer else None
      ratio = f"{seconds / peer_s:.2f}" if peer_s and views == "no aug" else "-"
      print(f"| {bench} | {views} | {batch} | {args.dtype} | {seconds:.4f} | {batch / seconds:.0f} | "
            f"{n_views / seconds:.0f} | {seconds * 50_000 / batch:.2f} | {compile_s:.1f} | {model_flops / 1e9:.1f} | "
            f"{tflops:.1f} | {use} | {xla_flops / 1e9:.1f} | {f'{peer_s:.4f}' if peer_s else '-'} | {ratio} |",
            flush=True)
      results.append({"bench": bench, "views": views, "batch": batch, "dtype": args.dtype, "seconds": seconds,
                      "first": first, "compile": compile_s, "model_flops": model_flops, "xla_flops": xla_flops,
                      "peer": peer})
  if args.out:
    Path(args.out).write_text(json.dumps({"device": device.device_kind, "results": results}, indent=1))


if __name__ == "__main__":
  main()
