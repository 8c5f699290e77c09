#!/bin/bash
# The accelerator figures of issue 46, run in one go on a machine that has jax and torch (the PyTorch and ClustPy
# peers) but neither TensorFlow nor network access; every timing is `jaxclust bench`. Results go to $OUT
# (default ./gpu_out). It needs .whl/ and gpu_data/, made beforehand by experiments/gpu_prepare.sh (carry both).
# Usage: bash experiments/gpu_bench.sh kernels|steps|crops|mnist|variants
#   crops: SwAV's multi-crop alone against two older versions of it (experiments/bench_multi_crop.py).
#   mnist: the small-CNN MNIST recipes of SCAN, SwAV and DeepCluster-v2 (`jaxclust fit`), one seed each.
#   kernels: k-means 1M x 256 into 20,000 centers, 25 Lloyd iterations; kNN over 1M x 128, k=20 (KERNEL_SECONDS).
#   steps: SwAV ResNet-50 2x224+6x96 bf16, a SimCLR ResNet-18 CIFAR epoch (97 steps of 512 = 49,664 images) in
#     bf16 and float32, each against its PyTorch peer; a DEC MNIST-sized epoch against ClustPy (STEP_SECONDS each).
#   variants: VARIANTS=FILE (default experiments/mnist_variants.txt), MNIST_SECONDS per run,
#   MEM_FRACTION of the GPU's memory per run (default 0.08); all outputs in $OUT/variants.tgz.
set -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | grep -v WARNING
export PYTHONPATH=$PWD:/tmp/site:$PWD/gpu_data/site PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
date -u
bench() { python3 -m jaxclust.cli bench "$@"; }

case "$1" in
  kernels)
    timeout ${KERNEL_SECONDS:-300} bench kernels --case kmeans:n=1000000,d=256,k=20000,iters=25 \
      --case knn:n=1000000,d=128,k=20 --repeats 2 --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.md"
    ;;
  steps)
    timeout ${STEP_SECONDS:-240} bench steps --method swav --recipe images --shape 256,256,3 --batch ${SWAV_BATCH:-128} \
      --steps 20 --repeats 2 --dtype bfloat16 --peers --peer-python python3 --json "$OUT/swav_bf16.json" \
      2>&1 | tee "$OUT/swav_bf16.md"
    for dtype in bfloat16 float32; do
      timeout ${STEP_SECONDS:-240} bench steps --method simclr --recipe images --shape 32,32,3 --batch 512 --steps 97 \
        --repeats 2 --dtype $dtype --peers --peer-python python3 --json "$OUT/simclr_$dtype.json" \
        2>&1 | tee "$OUT/simclr_$dtype.md"
    done
    timeout ${STEP_SECONDS:-240} bench steps --method dec --shape 784 --batch 256 --steps 273 --repeats 2 --peers \
      --peer-python python3 --json "$OUT/dec.json" 2>&1 | tee "$OUT/dec.md"
    ;;
  crops)  # SwAV's on-device multi-crop alone against 6fc3681's (HIGHEST-precision resize) and c407007's (crops batched)
    timeout ${CROP_SECONDS:-120} python3 experiments/bench_multi_crop.py --batch ${SWAV_BATCH:-128} \
      --reference gpu_data/augment_6fc3681.py gpu_data/augment_c407007.py 2>&1 | tee "$OUT/multi_crop.md"
    ;;
  mnist)  # the small-CNN MNIST recipes of SCAN, SwAV and DeepCluster-v2, one seed each
    for method in scan swav deepcluster; do
      /usr/bin/time -f "%e s wall" timeout ${MNIST_SECONDS:-170} python3 -m jaxclust.cli fit $method --dataset mnist \
        --data-dir gpu_data --workdir /tmp/mnist_$method 2>&1 | grep -v "it/s\]" | tail -30 | tee "$OUT/mnist_$method.log"
      cp /tmp/mnist_$method/summary.json "$OUT/mnist_${method}_summary.json"
      cat /tmp/mnist_$method/metrics.jsonl /tmp/mnist_$method/*/metrics.jsonl > "$OUT/mnist_${method}_metrics.jsonl" 2>/dev/null
    done
    ;;
  variants)  # MNIST recipe variants, run side by side on the one GPU (small models leave it mostly idle)
    export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.08}
    i=0
    mkdir -p /tmp/vout
    while read -r name method sets; do
      [[ -z "$name" || "$name" == \#* ]] && continue
      (/usr/bin/time -f "%e s wall" timeout ${MNIST_SECONDS:-240} python3 -m jaxclust.cli fit $method --dataset mnist \
        --data-dir gpu_data --workdir /tmp/v_$name $sets > /tmp/v_$name.log 2>&1;
       grep "^final\|^stage=mine" /tmp/v_$name.log > /tmp/vout/$name.txt; tail -c 3000 /tmp/v_$name.log >> /tmp/vout/$name.txt
       cat /tmp/v_$name/metrics.jsonl /tmp/v_$name/*/metrics.jsonl > /tmp/vout/$name.metrics.jsonl 2>/dev/null) &
    done < "${VARIANTS:-experiments/mnist_variants.txt}"
    wait
    tar czf "$OUT/variants.tgz" -C /tmp/vout .  # one file: at most 8 come back from the device
    ;;
  *) echo "usage: $0 kernels|steps|crops|mnist|variants" >&2; exit 2 ;;
esac
