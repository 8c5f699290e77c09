"""Writes scikit-learn's bundled tabular datasets (no download) as .npz files that `jaxclust fit` reads, for the
vector-data measurements of experiments/vectors.md.

    python experiments/vectors_data.py OUT_DIR

digits.npz: the 1,797 8x8 digits as 64 features, less the 3 that are 0 in every image (their variance is 0,
which standardization refuses): [1797, 61], 10 classes. wine.npz [178, 13], 3 classes; breast_cancer.npz
[569, 30], 2 classes; iris.npz [150, 4], 3 classes. Each holds x (float32) and y (the labels, for scoring).
"""

import pathlib
import sys

import numpy as np
from sklearn import datasets


def main(out):
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  for name in ("digits", "wine", "breast_cancer", "iris"):
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x = x[:, x.std(axis=0) > 0]
    np.savez(out / f"{name}.npz", x=x.astype(np.float32), y=y.astype(np.int64))
    print(f"{out / name}.npz: x {x.shape}, {len(np.unique(y))} classes")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vectors")
