#!/usr/bin/env bash
# The SwAV MNIST-recipe train step on the CPU under glibc's malloc and under the alternatives a user can
# choose without changing jaxclust: tcmalloc or jemalloc (LD_PRELOAD), or glibc's transparent huge
# pages for malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc >= 2.35). The allocator changes no
# value, only how XLA's large per-step buffers get their pages back from the kernel.
#   apt-get install libtcmalloc-minimal4 libjemalloc2   # Debian/Ubuntu; missing ones are reported, not run
#   bash experiments/cpu_allocator.sh                    # from the repository root, nothing else running
set -u
lib=/usr/lib/$(uname -m)-linux-gnu
run() {  # name, then env assignments: the median SwAV step (`jaxclust bench steps`), page faults, system time
  local name=$1; shift
  local json=/tmp/cpu_allocator_$name.json
  local out
  out=$(env "$@" /usr/bin/time -f "minflt %R sys %S" "${PYTHON:-python}" -m jaxclust.cli bench steps --method swav \
    --shape 28,28,1 --batch 256 --steps 12 --repeats 3 --json $json 2>&1 | grep -E "^minflt")
  echo "$name: median step s $("${PYTHON:-python}" -c "import json; print(json.load(open('$json'))['rows'][0]['step_seconds'])") $out"
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
