#!/bin/bash
# The GPU benchmark set, run in one go on an accelerator machine that has jax, torch and torchvision
# but neither TensorFlow nor network access. Results go to $OUT (default ./gpu_out).
# It needs .whl/ and gpu_data/, made beforehand by experiments/gpu_prepare.sh (carry both).
# Usage: bash experiments/gpu_bench.sh ssl|swav|ae|mnist|swav256|variants
#   swav: only the SwAV ResNet-50 step of `ssl` (the utilization goal), for a short device budget, then
#     the multi-crop alone against 6fc3681's (HIGHEST-precision resize) and c407007's (crops batched per size).
#     SSL_SECONDS and CROP_SECONDS (default 120) cap the two.
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

case "$1" in
  ssl)  # SimCLR / SCAN (ResNet-18, CIFAR shapes) and SwAV (ResNet-50 multi-crop), bf16, against PyTorch
    timeout ${SSL_SECONDS:-420} python3 experiments/bench_ssl.py --bench simclr scan swav --batch 512 \
      --swav-batch ${SWAV_BATCH:-128} --steps 20 --dtype bfloat16 --peak-tflops 989 --peer-python python3 \
      --out "$OUT/ssl_bf16.json" 2>&1 | tee "$OUT/ssl_bf16.md"
    timeout ${FP32_SECONDS:-120} python3 experiments/bench_ssl.py --bench simclr --batch 512 --steps 20 \
      --dtype float32 --peer-python python3 --out "$OUT/ssl_fp32.json" 2>&1 | tee "$OUT/ssl_fp32.md"
    ;;
  swav)  # SwAV (ResNet-50 multi-crop) alone, bf16, with and without on-device augmentation, against PyTorch
    timeout ${SSL_SECONDS:-360} python3 experiments/bench_ssl.py --bench swav --swav-batch ${SWAV_BATCH:-128} \
      --steps 20 --dtype bfloat16 --peak-tflops 989 --peer-python python3 --out "$OUT/swav_bf16.json" \
      2>&1 | tee "$OUT/swav_bf16.md"
    timeout ${CROP_SECONDS:-120} python3 experiments/bench_multi_crop.py --batch ${SWAV_BATCH:-128} \
      --reference gpu_data/augment_6fc3681.py gpu_data/augment_c407007.py \
      2>&1 | tee "$OUT/multi_crop.md"
    ;;
  ae)  # DEC per-epoch time against ClustPy, then DEC time to ACC 84.3 from the command line
    timeout 240 python3 experiments/bench_ae_vs_clustpy.py --data-dir gpu_data --clustpy-python python3 --threads 16 \
      2>&1 | tee "$OUT/ae_vs_clustpy.md"
    /usr/bin/time -v timeout 240 python3 -m jaxclust.cli fit dec --dataset mnist --data-dir gpu_data \
      --workdir /tmp/tta --set pretrain.epochs=20 --set checkpoint_every=5 2>&1 | tail -40 | tee "$OUT/dec_tta.log"
    cp /tmp/tta/metrics.jsonl "$OUT/dec_tta_metrics.jsonl"
    ;;
  mnist)  # the small-CNN MNIST recipes of SCAN, SwAV and DeepCluster-v2, one seed each
    for method in scan swav deepcluster; do
      /usr/bin/time -f "%e s wall" timeout ${MNIST_SECONDS:-170} python3 -m jaxclust.cli fit $method --dataset mnist \
        --data-dir gpu_data --workdir /tmp/mnist_$method 2>&1 | grep -v "it/s\]" | tail -30 | tee "$OUT/mnist_$method.log"
      cp /tmp/mnist_$method/summary.json "$OUT/mnist_${method}_summary.json"
      cat /tmp/mnist_$method/metrics.jsonl /tmp/mnist_$method/*/metrics.jsonl > "$OUT/mnist_${method}_metrics.jsonl" 2>/dev/null
    done
    ;;
  swav256)  # SwAV at 256 images per step, and SimCLR/SCAN again, with layer-counted model FLOPs
    timeout ${SSL_SECONDS:-300} python3 experiments/bench_ssl.py --bench simclr scan swav --batch 512 --swav-batch 256 \
      --steps 20 --dtype bfloat16 --peak-tflops 989 --peer-python python3 --out "$OUT/ssl_bf16_b256.json" \
      2>&1 | tee "$OUT/ssl_bf16_b256.md"
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
  *) echo "usage: $0 ssl|swav|ae|mnist|swav256|variants" >&2; exit 2 ;;
esac
