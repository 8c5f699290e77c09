#!/usr/bin/env bash
# Installs jaxclust on one host of a Cloud TPU VM and checks that JAX sees the chips. On a pod slice,
# copy the source to every host and run this on all of them at once:
#
#   gcloud compute tpus tpu-vm scp --recurse jaxclust NAME: --zone=ZONE --worker=all
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command="bash jaxclust/tpu_setup.sh"
#
# then start the same training command on every host (`--distributed` joins the hosts into one job):
#
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command="~/jaxclust-venv/bin/jaxclust \
#     fit swav --dataset tfds:imagenet2012 --data-dir gs://BUCKET/tensorflow_datasets --distributed \
#     --workdir gs://... or a shared disk path"
#
# Environment:
#   VENV       where the virtual environment goes (default ~/jaxclust-venv)
#   JAX_EXTRA  the jax extra to install: tpu (default); cuda12 or cuda13 on NVIDIA GPU hosts; cpu
#   CHECK      1 (default): after installing, start JAX on the accelerator and print what it sees. With
#              JAX_EXTRA=tpu the check calls jax.distributed.initialize(), so on a pod slice it needs
#              every host running it at the same time (--worker=all), as training does.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VENV:-$HOME/jaxclust-venv}"
extra="${JAX_EXTRA:-tpu}"
case "$extra" in
  tpu|cuda12|cuda13|cpu) ;;
  *) echo "tpu_setup.sh: JAX_EXTRA=$extra is not one of tpu, cuda12, cuda13, cpu" >&2; exit 2 ;;
esac

python3 - <<'EOF'
import sys
if sys.version_info < (3, 11):
  sys.exit(f"tpu_setup.sh: jaxclust needs Python >= 3.11, this host has {sys.version.split()[0]}")
EOF
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "tpu_setup.sh: python3 -m venv failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }
fi
"$venv/bin/pip" install --quiet --upgrade pip
# jaxclust's own jax requirement and the accelerator extra are resolved together, so the plugin matches jax.
"$venv/bin/pip" install --quiet "jax[$extra]" "$src"

if [ "${CHECK:-1}" = 1 ]; then
  JAX_EXTRA="$extra" TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" - <<'EOF'
import os
import jax
if os.environ["JAX_EXTRA"] == "tpu":
  jax.distributed.initialize()  # the TPU VM's metadata names the hosts; a single host is a job of one
import jaxclust
backend = jax.default_backend()
print(f"jaxclust {jaxclust.__version__}: process {jax.process_index()} of {jax.process_count()}, "
      f"{jax.local_device_count()} local and {jax.device_count()} global {backend} devices")
want = {"tpu": "tpu", "cuda12": "gpu", "cuda13": "gpu", "cpu": "cpu"}[os.environ["JAX_EXTRA"]]
if backend != want:
  raise SystemExit(f"tpu_setup.sh: JAX_EXTRA={os.environ['JAX_EXTRA']} was installed but JAX runs on {backend}")
EOF
fi
echo "jaxclust installed in $venv"
