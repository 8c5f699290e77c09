"""Probe: DEC on full MNIST (70k) from the library's pieces, with wall times and ACC/NMI/ARI.

A stop-gap until ``jaxclust fit dec`` exists (AE issue): no checkpoints, no CLI configs. It prints
per-stage times and metrics so the reproduction and time-to-accuracy goals can be tracked.

  python experiments/dec_mnist_probe.py --data-dir ../shared/data --pretrain-epochs 50
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxclust
from jaxclust.data import sources
from jaxclust.methods import dec, pretrain
from jaxclust.models.autoencoder import MLPAutoencoder


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--pretrain-epochs", type=int, default=50)
  parser.add_argument("--update-interval", type=int, default=140)
  parser.add_argument("--max-steps", type=int, default=20_000)
  parser.add_argument("--tol", type=float, default=0.001)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  start = time.perf_counter()
  log = lambda msg: print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)

  data = sources.load("mnist", data_dir=args.data_dir)
  x = jnp.asarray(data.x.reshape(len(data.x), -1))
  n = x.shape[0]
  log(f"loaded mnist: {n} x {x.shape[1]}")
  key = jax.random.key(args.seed)

  model = MLPAutoencoder(input_dim=x.shape[1])
  tx = optax.adam(1e-3)
  state = pretrain.init(model, jax.random.fold_in(key, 0), x[:2], tx)
  for epoch in range(args.pretrain_epochs):
    t = time.perf_counter()
    state, metrics = pretrain.train_epoch(state, x, jax.random.fold_in(key, 1000 + epoch), model=model, tx=tx,
                                          batch_size=args.batch_size)
    loss = float(metrics["loss"])
    log(f"pretrain epoch {epoch + 1}/{args.pretrain_epochs}: loss {loss:.5f} ({time.perf_counter() - t:.2f}s)")

  encode = jax.jit(lambda params, x: model.apply({"params": params}, x, method=model.encode))
  z = encode(state.params, x)
  km = jaxclust.kmeans(z, 10, rng=jax.random.fold_in(key, 1), n_init=20)
  scores = jaxclust.metrics.evaluate(data.y, np.asarray(km.labels))
  log(f"k-means on embeddings: ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} ARI {scores['ari']:.4f}")

  sgd = dec.sgd(0.01, 0.9)
  dstate = dec.init(state.params, km.centers, n, sgd)
  dstate = dstate.replace(labels=km.labels.astype(jnp.int32))
  refresh = jax.jit(functools.partial(dec.refresh_target, model=model))
  step = functools.partial(dec.train_step, model=model, tx=sgd)

  @functools.partial(jax.jit, donate_argnums=0)
  def interval(dstate, rng):
    idx = jax.random.permutation(rng, n)[: args.update_interval * args.batch_size]
    idx = idx.reshape(args.update_interval, args.batch_size)
    return jax.lax.scan(lambda s, i: step(s, {"x": x[i], "index": i}, None), dstate, idx)

  steps = 0
  while steps < args.max_steps:
    dstate, changed = refresh(dstate, x)
    scores = jaxclust.metrics.evaluate(data.y, np.asarray(dstate.labels))
    log(f"DEC step {steps}: ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} ARI {scores['ari']:.4f} "
        f"labels changed {float(changed):.4%}")
    if steps > 0 and float(changed) < args.tol:
      log(f"converged: fewer than tol={args.tol} of labels changed")
      break
    dstate, metrics = interval(dstate, jax.random.fold_in(key, 2_000_000 + steps))
    steps += args.update_interval
  else:  # max_steps reached: label the data with the final parameters
    dstate, _ = refresh(dstate, x)
    scores = jaxclust.metrics.evaluate(data.y, np.asarray(dstate.labels))
  log(f"final: ACC {scores['acc']:.4f} NMI {scores['nmi']:.4f} ARI {scores['ari']:.4f} after {steps} DEC steps")


if __name__ == "__main__":
  main()
