#!/usr/bin/env bash
# The SwAV MNIST-recipe train step on the CPU under glibc's malloc and under the alternatives a user can
# choose without changing jaxclust: tcmalloc or jemalloc (LD_PRELOAD), or glibc's transparent huge
# pages for malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc >= 2.35). The allocator changes no
# value, only how XLA's large per-step buffers get their pages back from the kernel.
#   apt-get install libtcmalloc-minimal4 libjemalloc2   # Debian/Ubuntu; missing ones are reported, not run
#   bash experiments/cpu_allocator.sh                    # from the repository root, nothing else running
set -u
lib=/usr/lib/$(uname -m)-linux-gnu
run() {  # name, then env assignments
  local name=$1; shift
  local out
  out=$(env "$@" PYTHONPATH=. /usr/bin/time -f "minflt %R sys %S" "${PYTHON:-python}" experiments/swav_step_time.py 2>&1 | grep -E "^median|^final loss|^minflt")
  echo "$name: $(echo "$out" | tr '\n' ' ')"
}
echo "$(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) $(nproc) cores, $(ldd --version | head -1)"
results=$(
  run glibc X=1
  for name in tcmalloc_minimal.so.4 jemalloc.so.2; do
    if [ -e "$lib/lib$name" ]; then run "${name%%.*}" LD_PRELOAD="$lib/lib$name"; else echo "${name%%.*}: not installed ($lib/lib$name)"; fi
  done
  run glibc_hugetlb GLIBC_TUNABLES=glibc.malloc.hugetlb=1
)
echo "$results"
base=$(echo "$results" | awk '/^glibc:/ {print $5}')
echo "$results" | awk -v base="$base" '/median step s/ {printf "%s median %.3f s: %.2fx the glibc step time\n", $1, $5, $5 / base}'
