"""Fits one method's test settings several times in one process: seconds and memory maps per fit
(experiments/RESULTS.md, "Repeated fits in one process"). From the repository root:

  python experiments/repeated_fits.py dec      # dec, idec, vade: tests/test_train.fast_config(), 8 fits
  python experiments/repeated_fits.py swav     # swav, deepcluster, scan: tests/test_guarantees.py TINY + SHORTER, 4
"""

import sys
import tempfile
import time

sys.path.insert(0, "tests")

from jaxclust import cli, engine, parallel  # noqa: E402


def config(method: str, seed: int):
  if method in ("dec", "idec", "vade"):
    from test_train import fast_config
    c = fast_config(method)
    c.seed, c.report = seed, False
    return c
  from test_guarantees import SHORTER, TINY
  return cli.make_config(method, "digits", settings=TINY[method] + SHORTER.get(method, []) + [f"seed={seed}"])


def maps() -> int:
  with open("/proc/self/maps") as f:
    return sum(1 for _ in f)


method = sys.argv[1]
mesh = parallel.make_mesh(1)
for seed in range(8 if method in ("dec", "idec", "vade") else 4):
  start = time.time()
  with tempfile.TemporaryDirectory() as workdir:
    engine.fit(config(method, seed), workdir, log=lambda _: None, mesh=mesh)
  print(f"{method} fit {seed}: {time.time() - start:.1f} s, {maps()} memory maps", flush=True)
