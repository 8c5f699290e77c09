"""Per-epoch time of DEC on full MNIST: jaxclust vs ClustPy (PyTorch), same machine, same run.

Architecture d-500-500-2000-10, batch 256, Adam for pretraining, DEC for clustering. ClustPy
exposes no per-epoch timer, so its per-epoch costs come from differences of whole fits:
  pretraining epoch = (T(P=3, C=1) - T(P=1, C=1)) / 2,  clustering epoch = (T(P=1, C=3) - T(P=1, C=1)) / 2.
jaxclust's epochs are timed directly after a warm-up (compilation excluded, listed apart): a
pretraining epoch is one pass of Adam steps over the 70,000 images; a clustering epoch is
ceil(70000 / 256) DEC steps plus the whole-dataset target refresh, both also timed apart, since
ClustPy's DEC takes its target P from each batch and has no refresh.

ClustPy needs torch and torchvision, kept out of jaxclust's dependencies, e.g. in its own venv:
  python -m venv /tmp/cp && /tmp/cp/bin/pip install torch==2.14.1 torchvision==0.29.1 clustpy
  python experiments/bench_ae_vs_clustpy.py --data-dir ../shared/data --clustpy-python /tmp/cp/bin/python
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import subprocess
import sys
import time

CLUSTPY_RUN = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from clustpy.deep import DEC
x = np.load(sys.argv[1])
pretrain, cluster = (int(v) for v in sys.argv[2].split(","))
torch.manual_seed(0)
start = time.perf_counter()
DEC(n_clusters=10, batch_size=256, pretrain_epochs=pretrain, clustering_epochs=cluster, embedding_size=10).fit(x)
print(json.dumps({"seconds": time.perf_counter() - start, "clustpy": __import__("clustpy").__version__,
                  "torch": torch.__version__,
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))
"""


def clustpy_fit_seconds(python, x_path, pretrain, cluster, threads):
  out = subprocess.run([python, "-c", CLUSTPY_RUN, x_path, f"{pretrain},{cluster}", str(threads)],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--clustpy-python", required=True, help="a Python with clustpy, torch and torchvision")
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxclust.methods import dec as jdec
  from jaxclust.data import sources
  from jaxclust.methods import dec, pretrain
  from jaxclust.models.autoencoder import MLPAutoencoder

  data = sources.load("mnist", data_dir=args.data_dir)
  x_np = data.x.reshape(len(data.x), -1).astype(np.float32)
  x_path = "/tmp/bench_ae_mnist.npy"
  np.save(x_path, x_np)

  runs = {}
  for pre, clu in ((1, 1), (3, 1), (1, 3)):
    runs[(pre, clu)] = clustpy_fit_seconds(args.clustpy_python, x_path, pre, clu, args.threads)
    print(f"ClustPy DEC fit, {pre} pretraining + {clu} clustering epochs: {runs[(pre, clu)]['seconds']:.2f} s",
          flush=True)
  cp_pre = (runs[(3, 1)]["seconds"] - runs[(1, 1)]["seconds"]) / 2
  cp_clu = (runs[(1, 3)]["seconds"] - runs[(1, 1)]["seconds"]) / 2

  x = jnp.asarray(x_np)
  n = x.shape[0]
  ae = MLPAutoencoder(input_dim=x.shape[1])
  tx = optax.adam(1e-3)
  state = pretrain.init(ae, jax.random.key(0), x[:2], tx)
  tick = time.perf_counter()
  state, m = pretrain.train_epoch(state, x, jax.random.key(1), model=ae, tx=tx)
  float(m["loss"])
  first_pre = time.perf_counter() - tick
  times = []
  for epoch in range(3):
    tick = time.perf_counter()
    state, m = pretrain.train_epoch(state, x, jax.random.key(2 + epoch), model=ae, tx=tx)
    float(m["loss"])
    times.append(time.perf_counter() - tick)
  jc_pre = float(np.median(times))

  steps = -(-n // 256)
  sgd = dec.sgd(0.01, 0.9)
  z = ae.apply({"params": state.params}, x, method=ae.encode)
  dstate = dec.init(state.params, z[:10], n, sgd)
  refresh = jax.jit(functools.partial(dec.refresh_target, model=ae))
  interval = jdec._interval(ae, sgd, 0.0, steps, 256, n, None)

  def timed(fn):
    tick = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - tick

  # A clustering epoch is the DEC steps plus the whole-dataset refresh of P the paper prescribes.
  # ClustPy's DEC computes P from each batch's own Q and never refreshes, so its epoch is the steps
  # alone: both parts are timed separately to compare the same work.
  (dstate, _), first_refresh = timed(lambda: refresh(dstate, x))
  (dstate, _), first_steps = timed(lambda: interval(dstate, x, jax.random.key(100)))
  refresh_times, step_times = [], []
  for i in range(3):
    (dstate, _), seconds = timed(lambda: refresh(dstate, x))
    refresh_times.append(seconds)
    (dstate, _), seconds = timed(lambda: interval(dstate, x, jax.random.key(101 + i)))
    step_times.append(seconds)
  jc_steps, jc_refresh = float(np.median(step_times)), float(np.median(refresh_times))
  jc_clu, first_clu = jc_steps + jc_refresh, first_steps + first_refresh

  meta = runs[(1, 1)]
  print(f"\nMachine: {platform.processor() or platform.machine()}, {args.threads} threads, jax device "
        f"{jax.devices()[0].device_kind}; jax {jax.__version__}, "
        f"clustpy {meta['clustpy']}, torch {meta['torch']} on {meta['device']}; date {time.strftime('%Y-%m-%d')}")
  print(f"Command: python {' '.join(sys.argv)}\n")
  print("| epoch | jaxclust s | ClustPy s | jaxclust / ClustPy (<= 1.0 is the goal) | jaxclust first call s |")
  print("|---|---|---|---|---|")
  print(f"| pretraining (70k, batch 256, Adam) | {jc_pre:.2f} | {cp_pre:.2f} | {jc_pre / cp_pre:.2f} | {first_pre:.2f} |")
  print(f"| clustering (DEC, 70k): {steps} steps + 1 whole-dataset refresh of P | {jc_clu:.2f} | {cp_clu:.2f} | "
        f"{jc_clu / cp_clu:.2f} | {first_clu:.2f} |")
  print(f"| clustering (DEC, 70k): the {steps} steps alone (ClustPy's epoch: P from each batch, no refresh) | "
        f"{jc_steps:.2f} | {cp_clu:.2f} | {jc_steps / cp_clu:.2f} | {first_steps:.2f} |")
  print(f"| the refresh alone (encoder forward over 70k, P, labels) | {jc_refresh:.2f} | - | - | {first_refresh:.2f} |")


if __name__ == "__main__":
  main()
