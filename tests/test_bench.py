"""jaxclust bench kernels: cases parsed and refused in one line, the same data for every process, the figures'
arithmetic, and the command on tiny shapes with scikit-learn as the peer."""

import json

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
