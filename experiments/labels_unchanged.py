"""Every method's labels on digits, recorded once and checked again after a refactor.

  python experiments/labels_unchanged.py record OUTDIR [--code DIR]
  python experiments/labels_unchanged.py check OUTDIR [--code DIR] [--only dec,scan]

Each case is one `python -m jaxclust.cli fit METHOD --dataset digits` subprocess on one device, with
the code in DIR (default: the repository holding this script) as PYTHONPATH, so a pristine worktree
(`git worktree add /work/baseline COMMIT`) can be recorded from a checkout that has moved on.
`record` keeps each run's labels as OUTDIR/<case>.npy and writes OUTDIR/baseline.json (settings,
acc/nmi/ari, commit, date, jax version, seconds). `check` reruns the cases and exits 1 when any
label differs: a refactor that claims to change no value must give the very same labels.
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The settings of tests/test_train.py FAST, tests/test_scan_train.py TINY and tests/test_online_train.py TINY.
FAST = ["pretrain.epochs=4", "cluster.update_interval=10", "cluster.max_steps=80", "cluster.tol=0.0",
        "checkpoint_every=1", "hidden=(64, 64)", "cluster.kmeans_n_init=2", "vade.epochs=3",
        "vade.batch_size=64"]
SCAN_TINY = ["pretext.epochs=2", "scan.epochs=3", "selflabel.epochs=2", "cnn_channels=(8, 16)", "scan.heads=2",
             "mine.neighbors=5", "selflabel.threshold=0.15", "pretext.batch_size=128", "scan.batch_size=128",
             "selflabel.batch_size=128", "selflabel.strong_ops=1"]
CASES = {  # name: (method, settings)
    "dec": ("dec", FAST), "idec": ("idec", FAST), "vade": ("vade", FAST), "scan": ("scan", SCAN_TINY),
    "swav": ("swav", ["epochs=3", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0"]),
    "deepcluster": ("deepcluster", ["epochs=3", "cnn_channels=(8, 16)"]),
    "quickstart": ("dec", []),  # the README quickstart: `jaxclust fit dec --dataset digits`, defaults
}


def _env(code: Path) -> dict:
  """This process's env on one device, with ``code`` first on the path."""
  env = dict(os.environ)
  # Fake CPU devices change how XLA splits work between threads, hence the last float bits.
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"  # huge pages for XLA's buffers: faster, same values
  return env


def commit(code: Path) -> str:
  """``code``'s git commit, marked ``-dirty`` when its jaxclust/ has uncommitted changes."""
  head = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True,
                        check=True).stdout.strip()
  dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--", "jaxclust"],
                         capture_output=True, text=True, check=True).stdout.strip()
  return head + ("-dirty" if dirty else "")


def run_case(name: str, code: Path, tmp: Path) -> tuple[np.ndarray, dict, float]:
  """Runs case ``name`` with the code in ``code``; returns its labels, summary and seconds."""
  method, settings = CASES[name]
  workdir = tmp / name
  cmd = [sys.executable, "-m", "jaxclust.cli", "fit", method, "--dataset", "digits", "--workdir", str(workdir)]
  cmd += [arg for setting in settings for arg in ("--set", setting)]
  start = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True, env=_env(code), cwd=tmp)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    sys.exit(f"{name}: {' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
  summary = json.loads((workdir / "summary.json").read_text())
  return np.load(workdir / "labels.npy"), summary, seconds


def record(outdir: Path, code: Path, names: list[str]) -> None:
  outdir.mkdir(parents=True, exist_ok=True)
  meta = {"code": str(code), "commit": commit(code),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "jax": importlib.metadata.version("jax"), "cases": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      labels, summary, seconds = run_case(name, code, Path(tmp))
      np.save(outdir / f"{name}.npy", labels)
      meta["cases"][name] = {"method": CASES[name][0], "settings": CASES[name][1],
                             **{key: summary[key] for key in ("acc", "nmi", "ari")}, "seconds": round(seconds, 1)}
      print(f"{name}: acc={summary['acc']:.4f} nmi={summary['nmi']:.4f} ari={summary['ari']:.4f} "
            f"({seconds:.0f} s)", flush=True)
  (outdir / "baseline.json").write_text(json.dumps(meta, indent=2) + "\n")


def check(outdir: Path, code: Path, names: list[str] | None) -> int:
  """Reruns ``names`` (default: every recorded case) with ``code``; 1 when any case's labels differ."""
  meta = json.loads((outdir / "baseline.json").read_text())
  names = names or list(meta["cases"])
  print(f"recorded: {meta['commit']} ({meta['date']}, jax {meta['jax']}); now: {commit(code)}")
  differ = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      before = np.load(outdir / f"{name}.npy")
      labels, summary, seconds = run_case(name, code, Path(tmp))
      same = int(np.sum(labels == before)) if labels.shape == before.shape else 0
      verdict = "identical" if same == len(before) else "DIFFERENT"
      print(f"{name}: {same}/{len(before)} = {same / len(before):.2%} of labels identical ({verdict}); "
            f"acc {meta['cases'][name]['acc']:.4f} -> {summary['acc']:.4f} ({seconds:.0f} s)", flush=True)
      if same != len(before):
        differ.append(name)
  print(f"differ: {', '.join(differ)}" if differ else "all identical")
  return 1 if differ else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=("record", "check"))
  parser.add_argument("outdir", type=Path)
  parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                      help="the jaxclust checkout to run (PYTHONPATH of the subprocesses)")
  parser.add_argument("--only", help=f"comma-separated cases of {', '.join(CASES)} (default: all; check: all recorded)")
  args = parser.parse_args()
  names = args.only.split(",") if args.only else None
  unknown = [name for name in names or () if name not in CASES]
  if unknown:
    parser.error(f"--only: unknown case(s) {', '.join(unknown)}; available: {', '.join(CASES)}")
  code = args.code.resolve()
  if args.command == "record":
    record(args.outdir, code, names or list(CASES))
    return 0
  return check(args.outdir, code, names)


if __name__ == "__main__":
  sys.exit(main())
