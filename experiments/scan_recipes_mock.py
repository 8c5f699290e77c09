"""Runs SCAN's paper recipes (CIFAR-10, CIFAR-100-20, STL-10; ResNet-18) end to end on tfds mock data.

Every stage of the real recipe (SimCLR pretext, kNN mining, SCAN with 10 heads, self-labeling),
shortened to one epoch each and to batches the mock data can fill; it checks that the configured
pipeline runs where the data are absent, and times it. Compiling ResNet-18 training on a CPU takes
minutes, which is why this is an experiment and not a test.

    python experiments/scan_recipes_mock.py --out /tmp/scan_mock
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tensorflow_datasets as tfds

from jaxclust import configs, engine


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--datasets", nargs="+", default=["tfds:cifar10", "tfds:cifar100_20", "tfds:stl10"])
  parser.add_argument("--examples", type=int, default=64)
  args = parser.parse_args()
  for dataset in args.datasets:
    config = configs.get_config("scan", dataset)
    config.pretext.epochs = config.scan.epochs = config.selflabel.epochs = 1
    config.pretext.batch_size = config.scan.batch_size = config.selflabel.batch_size = 32
    config.mine.neighbors = 5
    config.n_clusters = 20 if "cifar100" in dataset else 10
    workdir = Path(args.out).absolute() / dataset.replace(":", "_")
    tick = time.perf_counter()
    with tfds.testing.mock_data(num_examples=args.examples):
      summary = engine.fit(config, workdir, log=lambda _: None)
    print(json.dumps({"dataset": dataset, "backbone": config.backbone, "stem": config.stem,
                      "shape": summary["shape"], "seconds": round(time.perf_counter() - tick, 1),
                      "exemplars": (workdir / "exemplars.png").exists()}), flush=True)


if __name__ == "__main__":
  main()
