#!/bin/bash
# Prepares, on a machine with network access, what experiments/gpu_bench.sh needs on the device
# machine (which has jax, torch and torchvision but no network and no TensorFlow). Run from anywhere:
#   bash experiments/gpu_prepare.sh [DATA_DIR]   # DATA_DIR: MNIST's IDX .gz files (default ../shared/data)
# It writes, in the repository root (both git-ignored: pass them to the device tool's `carry`):
#   .whl/      wheels of the pure-Python dependencies missing there (ml_collections, dm-pix)
#   gpu_data/  mnist/*.gz, site/clustpy (ClustPy 0.0.3's pure-Python package, for `gpu_bench.sh steps`),
#              augment_6fc3681.py and augment_c407007.py (for bench_multi_crop.py --reference)
set -euo pipefail
DATA=$(realpath "${1:-$(dirname "$0")/../../shared/data}")
cd "$(dirname "$0")/.."
rm -rf .whl gpu_data
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "ml_collections==1.1.0" "dm-pix==0.4.5"
mkdir -p gpu_data/mnist gpu_data/site
cp "$DATA"/mnist/*.gz gpu_data/mnist/
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps -d "$tmp" "clustpy==0.0.3"  # an sdist only
tar xzf "$tmp"/clustpy-0.0.3.tar.gz -C "$tmp"
cp -r "$tmp"/clustpy-0.0.3/clustpy gpu_data/site/
rm -rf "$tmp"
# Two other multi_crops for bench_multi_crop.py --reference (the device copy of the tree has no git history):
# 6fc3681's (the resize at HIGHEST precision) and c407007's (each size's crops in one vmap)
git show 6fc3681:jaxclust/data/augment.py > gpu_data/augment_6fc3681.py
git show c407007:jaxclust/data/augment.py > gpu_data/augment_c407007.py
du -sh .whl gpu_data
