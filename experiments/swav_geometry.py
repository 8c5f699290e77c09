"""Where a SwAV run's embeddings sit relative to its prototypes, checkpoint by checkpoint.

  python experiments/swav_geometry.py WORKDIR [--step N ...] [--images 4096]

For a `jaxclust fit swav` workdir on images held on the devices, prints for each checkpoint (default:
all) on the first `--images` images, with the trained network in eval mode:
- spread: 1 - |mean z|^2, the mean squared distance of the unit embeddings z from their mean
  (0 when every image has the same embedding);
- effective rank of the centred embeddings (exp of the entropy of their normalized squared singular values);
- in span: the mean share of |z|^2 inside the span of the K unit prototypes, against min(K, e) / e for
  random directions in e dimensions (1 when the prototypes span the embedding space);
- score spread: the standard deviation of an image's K scores z . c_k, averaged over the images. When
  it is small against the temperature, the predictions are uniform and the loss sits at ln K;
- the smallest and largest cosine between two prototypes.
"""
import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxclust import configs
from jaxclust.data import sources
from jaxclust.methods import swav
from readout_compare import restore  # this folder's script: run as python experiments/swav_geometry.py


def geometry(z, prototypes):
  """The figures above for unit embeddings ``z [n, e]`` and unit prototypes ``prototypes [K, e]``."""
  z, c = np.asarray(z, np.float64), np.asarray(prototypes, np.float64)
  mean = z.mean(0)
  singular = np.linalg.svd(z - mean, compute_uv=False) ** 2
  p = singular[singular > 0] / singular.sum()
  basis, _ = np.linalg.qr(c.T)  # orthonormal basis of the prototypes' span, [e, min(K, e)]
  cosines = (c @ c.T)[~np.eye(len(c), dtype=bool)]
  return {"spread": 1.0 - mean @ mean, "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
          "in_span": float(np.mean(np.sum((z @ basis) ** 2, 1))), "random_in_span": min(c.shape) / c.shape[1],
          "score_spread": float(np.mean(np.std(z @ c.T, axis=1))),
          "prototype_cos_min": float(cosines.min()), "prototype_cos_max": float(cosines.max())}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--step", type=int, nargs="*", default=None, help="checkpoint steps (default: all)")
  parser.add_argument("--images", type=int, default=4096, help="the first this many images")
  args = parser.parse_args()
  workdir = args.workdir.absolute()
  saved = json.loads((workdir / "config.json").read_text())
  if saved.get("method") != "swav":
    raise SystemExit(f"{str(workdir)!r} is a {saved.get('method')!r} workdir, not swav")
  defaults = json.loads(configs.get_config("swav", saved["dataset"]).to_json())
  config = ml_collections.ConfigDict({**defaults, **saved})  # settings newer than the run: their defaults
  data = sources.load(config.dataset, data_dir=config.data_dir or None)
  x = jnp.asarray(np.asarray(data.x[:args.images], np.float32))
  n = len(data.x)
  manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  scorer = swav.scorer(config)
  for step in args.step or sorted(manager.all_steps()):
    state = restore(manager, step, config, workdir, x.shape[1:], n)
    z = scorer.embed(state, x, len(x))
    g = geometry(z, scorer.prototypes(state))
    print(f"{workdir.name} checkpoint {step}: spread {g['spread']:.4f}, effective rank {g['effective_rank']:.2f}, "
          f"in span {g['in_span']:.4f} (random {g['random_in_span']:.3f}), score spread {g['score_spread']:.4f}, "
          f"prototype cosines {g['prototype_cos_min']:.3f} to {g['prototype_cos_max']:.3f}", flush=True)


if __name__ == "__main__":
  main()
