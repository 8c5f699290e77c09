"""jaxclust bench kernels: cases parsed and refused in one line, the same data for every process, the figures'
arithmetic, and the command on tiny shapes with scikit-learn as the peer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans

from jaxclust import bench, cli
from test_cli import error_line


def test_cases_are_parsed_and_bad_ones_named():
  assert bench.parse_case("kmeans:n=100,d=4,k=3,iters=2") == bench.Case("kmeans", 100, 4, 3, 2)
  assert bench.parse_case("sinkhorn:n=64,k=8") == bench.Case("sinkhorn", 64, 1, 8, 10)
  for text, message in (("svd:n=1", "must be one of"), ("knn:n=10,d=2", "needs k"), ("knn:n=10,d=2,k=0", "positive"),
                        ("gmm:n=5,d=2,k=9", "must not exceed"), ("kmeans:n=5,d=2,k=2,x=1", "n=, d=, k= or iters=")):
    with pytest.raises(ValueError, match=message):
      bench.parse_case(text)


def test_a_case_draws_the_same_rows_everywhere_and_ours_solves_what_the_peer_solves():
  case = bench.Case("kmeans", 3000, 8, 6, 4)
  np.testing.assert_array_equal(case.data(), case.data())
  out = bench.ours(case)()
  x = case.data()
  reference = KMeans(6, init=case.init(x), n_init=1, max_iter=4, tol=0.0, algorithm="lloyd").fit(x)
  np.testing.assert_allclose(float(out.inertia), reference.inertia_, rtol=1e-4)
  unit = bench.Case("knn", 50, 4, 3).data()
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)


def test_the_command_prints_and_writes_every_figure(tmp_path, capsys):
  out = tmp_path / "b.json"
  assert cli.main(["bench", "kernels", "--case", "kmeans:n=1500,d=8,k=5,iters=3", "--case", "gmm:n=800,d=4,k=3,iters=2",
                   "--repeats", "2", "--peers", "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| kmeans | 1,500 | 8 | 5 | 3 |" in printed and "sklearn" in printed
  saved = json.loads(out.read_text())
  assert saved["peak_tflops"] > 0
  for row in saved["rows"]:
    case = bench.Case(**row["case"])
    assert row["first"] >= row["seconds"] > 0 and row["compile"] == pytest.approx(row["first"] - row["seconds"])
    assert row["tflops"] * row["seconds"] * 1e12 == pytest.approx(bench.FLOPS[case.kernel](case))
    assert row["peak_share"] == pytest.approx(row["tflops"] / saved["peak_tflops"])
    assert row["peers"]["sklearn"] > 0 and row["memory_gib"] > 0
  assert bench.FLOPS["kmeans"](bench.Case("kmeans", 10, 4, 3, 2)) == 2 * 10 * 4 * 3 * 3



def test_bad_bench_arguments_are_one_line(tmp_path, capsys):
  assert cli.main(["bench", "kernels", "--case", "knn:n=10"]) == 2
  assert "needs" in error_line(capsys)
  assert cli.main(["bench", "kernels", "--quick", "--json", str(tmp_path / "b.txt")]) == 2
  assert "--json" in error_line(capsys)
  assert cli.main(["bench", "kernels", "--quick", "--repeats", "0"]) == 2
  assert "--repeats=0" in error_line(capsys)


def test_bench_steps_times_each_stage_of_a_method(tmp_path, capsys):
  """`bench steps`: one row per training stage, its images per second consistent with its epoch's seconds; an
  interval stage (DEC's) counts its steps' images; model FLOPs as the method states them (Contrastive
  Clustering: two views, three forward passes each)."""
  out = tmp_path / "steps.json"
  assert cli.main(["bench", "steps", "--method", "cc", "--method", "dec", "--shape", "12", "--batch", "16",
                   "--steps", "2", "--repeats", "1", "--json", str(out)]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [(r["method"], r["stage"]) for r in rows] == [("cc", "cc"), ("dec", "pretrain"), ("dec", "cluster")]
  for r in rows:
    assert r["rows"] == 32 and r["epoch_seconds"] > 0 and r["first"] >= r["epoch_seconds"] * 0.5
  cc_row, pretrain = rows[0], rows[1]
  assert cc_row["images_per_second"] == pytest.approx(32 / cc_row["epoch_seconds"])
  assert cc_row["step_seconds"] == pytest.approx(cc_row["epoch_seconds"] / 2)
  from jaxclust import configs
  from jaxclust.methods import cc
  config = configs.get_config("cc", "bench", n=32, shape=(12,))
  per_image = cc.step_flops(config, (12,), 10)["cc"]
  assert cc_row["tflops"] == pytest.approx(per_image * 32 / cc_row["epoch_seconds"] / 1e12)
  from jaxclust.methods import dec
  dec_flops = dec.step_flops(configs.get_config("dec", "bench", n=32, shape=(12,)), (12,), 10)
  assert pretrain["tflops"] == pytest.approx(dec_flops["pretrain"] * 32 / pretrain["epoch_seconds"] / 1e12)
  assert dec_flops["pretrain"] > dec_flops["cluster"] > 0  # DEC's clustering trains the encoder alone
  assert rows[2]["images_per_second"] > 0  # DEC's refresh interval: its steps' images
  assert "| cc | cc | vectors | 12 | 16 |" in capsys.readouterr().out


def test_bench_steps_refuses_bad_arguments(capsys):
  for args, message in ((["--method", "kmeans"], "--method 'kmeans' must be one of"),
                        (["--shape", "28,x"], "--shape '28,x' must be positive integers"),
                        (["--batch", "0"], "--batch=0 must be at least 1")):
    assert cli.main(["bench", "steps", *args]) == 2
    assert message in error_line(capsys)


def test_kmeans_with_each_librarys_defaults_reports_the_iterations_each_ran(capsys):
  """``defaults=1``: jaxclust.kmeans and scikit-learn's KMeans each with their own defaults, the iterations each
  ran printed, the FLOP rate from ours."""
  case = bench.parse_case("kmeans:n=3000,d=4,k=5,defaults=1")
  assert case.defaults == 1
  with pytest.raises(ValueError, match="defaults=0"):
    bench.parse_case("knn:n=30,d=4,k=5,defaults=1")
  row = bench.run_case(case, repeats=1, peers=True, tflops=1.0)
  ran = int(bench.ours(case)().n_iter)
  assert row["iterations"] == ran and 1 <= ran <= 300
  assert row["tflops"] * row["seconds"] * 1e12 == pytest.approx(2 * 3000 * 4 * 5 * (ran + 1))
  x = case.data()
  assert row["peer_iterations"] == {"sklearn": KMeans(5, random_state=0).fit(x).n_iter_}
  assert set(row["peers"]) == {"sklearn"}
  assert f"| defaults: {ran}, sklearn {row['peer_iterations']['sklearn']} |" in bench.table([row], "p")


def test_bench_steps_peers_run_in_the_named_python_and_give_ratios(tmp_path, capsys):
  """``--peers``: each stage with a PyTorch peer (DEC: ClustPy's epochs) gets the peer's seconds from
  jaxclust/bench_torch.py run by ``--peer-python`` with the method's spec; an epoch peer is compared with our
  epoch over the same rows. A Python without torch is named in the table, never silently left out."""
  fake = tmp_path / "python"
  seen = tmp_path / "specs.jsonl"
  fake.write_text(f"#!/bin/sh\necho \"$2\" >> {seen}\necho '{{\"seconds\": 0.5, \"peer\": \"fake\", \"per\": \"epoch\"}}'\n")
  fake.chmod(0o755)
  out = tmp_path / "steps.json"
  assert cli.main(["bench", "steps", "--method", "dec", "--shape", "12", "--batch", "16", "--steps", "2",
                   "--repeats", "1", "--peers", "--peer-python", str(fake), "--json", str(out)]) == 0
  rows = json.loads(out.read_text())["rows"]
  specs = [json.loads(line) for line in seen.read_text().splitlines()]
  assert [s["stage"] for s in specs] == ["pretrain", "cluster"]
  for spec, row in zip(specs, rows):
    assert spec["step"] == "clustpy_dec" and spec["backbone"]["shape"] == [12] and spec["n"] == 32
    assert spec["batch"] == 16 and spec["embedding"] == 10 and spec["k"] == 10
    ours = row.get("steps_only_step_seconds", row["step_seconds"])  # DEC's clustering: its steps without the refresh
    assert row["peer"]["ratio"] == pytest.approx(0.5 / (ours * 32 / 16))
  pretrain, cluster = rows
  assert "pass_seconds" not in pretrain and 0 < cluster["pass_seconds"] < cluster["epoch_seconds"]
  assert cluster["steps_only_step_seconds"] == pytest.approx(
      (cluster["epoch_seconds"] - cluster["pass_seconds"]) / cluster["epoch_seconds"] * cluster["step_seconds"])
  assert "fake: 0.5000 s per epoch" in capsys.readouterr().out
  assert cli.main(["bench", "steps", "--method", "simclr", "--shape", "12", "--batch", "16", "--steps", "2",
                   "--repeats", "1", "--peers", "--json", str(out)]) == 0  # this Python: no torch in the tests
  row, = json.loads(out.read_text())["rows"]
  assert row["peer"] == {"missing": "torch"} and "not installed: torch" in capsys.readouterr().out
  assert cli.main(["bench", "steps", "--method", "dec", "--peers", "--peer-python", str(tmp_path / "none")]) == 2
  assert "is not an executable Python" in error_line(capsys)


def test_tpu_setup_and_bench_run_unchanged_with_an_explicit_platform(tmp_path):
  """What a TPU host runs, with ``JAX_PLATFORMS`` naming the platform (cpu here): tpu_setup.sh's check (its pip
  replaced by a stub that records its arguments, its Python this one) and both bench commands, no GPU-only flag."""
  venv = tmp_path / "venv" / "bin"
  venv.mkdir(parents=True)
  (venv / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
  (venv / "pip").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'pip.txt'}\n")
  for name in ("python", "pip"):
    (venv / name).chmod(0o755)
  root = Path(__file__).parents[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_EXTRA": "cpu", "VENV": str(tmp_path / "venv")}
  env.pop("XLA_FLAGS", None)  # no fake devices: the host as it is
  out = subprocess.run(["bash", str(root / "tpu_setup.sh")], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "1 global cpu devices" in out.stdout and f"jax[cpu] {root}" in (tmp_path / "pip.txt").read_text()
  for args in (["kernels", "--quick", "--repeats", "1"],
               ["steps", "--method", "dec", "--shape", "12", "--batch", "16", "--steps", "2", "--repeats", "1"]):
    out = subprocess.run([sys.executable, "-m", "jaxclust.cli", "bench", *args, "--json", str(tmp_path / "b.json")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert rows and "measured float32" in json.loads((tmp_path / "b.json").read_text())["peak_source"]
