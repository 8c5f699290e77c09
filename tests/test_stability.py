"""Stability: the comparison against its definitions, reruns from the run's pretraining, the command line; and
choose-k on the same finished run."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxclust import cli, engine, parallel, stability
from test_train import fast_config


def test_compare_against_the_definitions():
  rng = np.random.default_rng(0)
  run = rng.integers(0, 4, 200)
  permuted = np.array([2, 0, 3, 1])[run]  # the same partition, other numbers
  noisy = np.where(rng.random(200) < 0.2, rng.integers(0, 4, 200), run)
  partial = np.where(rng.random(200) < 0.3, -1, run)  # a subsample run: -1 for rows it left out
  result = stability.compare(np.stack([run, permuted, noisy, partial]), ["run", "permuted", "noisy", "partial"])
  assert result.ari[0, 1] == pytest.approx(1.0) and result.ari[0, 3] == pytest.approx(1.0)
  assert result.ari[0, 2] == pytest.approx(skm.adjusted_rand_score(run, noisy), abs=1e-6)
  assert result.nmi[1, 2] == pytest.approx(skm.normalized_mutual_info_score(permuted, noisy), abs=1e-6)
  # Hennig's per-cluster stability: the best-match Jaccard, averaged over the other labelings
  for c in range(4):
    a = run == c
    best = lambda other, rows: max(np.sum(a & (other == d) & rows) / np.sum((a | (other == d)) & rows)
                                   for d in range(4))
    everywhere = np.ones(200, bool)
    expected = np.mean([best(permuted, everywhere), best(noisy, everywhere), best(partial, partial >= 0)])
    assert result.cluster_jaccard[c] == pytest.approx(expected)
  # the consensus is the run's partition (3 of 4 labelings agree at worst), in the run's numbering
  np.testing.assert_array_equal(result.consensus, run)
  counted = np.array([3 if p < 0 else 4 for p in partial])
  agree = 1 + (permuted >= 0) + (noisy == run) + (partial == run)
  np.testing.assert_allclose(result.agreement, agree / counted)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("stability") / "run"
  engine.fit(fast_config(), workdir, log=lambda _: None, mesh=parallel.make_mesh(1))
  return workdir


def test_reruns_start_from_the_runs_autoencoder_and_leave_the_run_alone(finished, tmp_path, capsys):
  before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
  assert cli.main(["stability", "--workdir", str(finished), "--seeds", "5,6", "--output", str(tmp_path / "out")]) == 0
  printed = capsys.readouterr().out
  assert "3 labelings (the run, seed5, seed6)" in printed and "per-cluster stability" in printed
  assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before
  for seed in (5, 6):
    rerun = json.loads((tmp_path / "out" / f"seed{seed}" / "config.json").read_text())
    assert rerun["seed"] == seed and rerun["pretrain"]["init_from"] == str(finished)
    lines = [json.loads(l) for l in (tmp_path / "out" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
    assert not any(l["stage"] == "pretrain" and "epoch" in l for l in lines)  # no pretraining epoch ran
  saved = json.loads((tmp_path / "out" / "stability.json").read_text())
  labels = [np.load(finished / "labels.npy")] + [np.load(tmp_path / "out" / f"seed{s}" / "labels.npy") for s in (5, 6)]
  assert saved["ari"][0][1] == pytest.approx(skm.adjusted_rand_score(labels[0], labels[1]), abs=1e-5)
  table = np.load(tmp_path / "out" / "consensus.npy")
  assert table.dtype.names == ("label", "agreement") and len(table) == 1797
  assert (tmp_path / "out" / "stability.png").read_bytes()[:4] == b"\x89PNG"


def test_choose_k_on_a_run_reads_its_embedding_and_changes_nothing(finished, capsys):
  before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
  assert cli.main(["choose-k", "--workdir", str(finished), "--k", "2..12", "--references", "2"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith(f"choose-k on the embedding of {finished} (1797 rows, 10 principal components")
  assert out[-1].startswith("k=") and 2 <= int(out[-1][2:]) <= 12
  assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before


def test_the_report_shows_the_stability_of_its_default_folder(finished):
  from jaxclust import report
  stability.run(finished, runs=3, cheap=True, log=lambda _: None)  # to RUN-stability, the default
  page = open(report.render(finished)).read()
  assert "<h2>Stability</h2>" in page and "4 labelings (the run, k-means of the embedding" in page


def test_subsample_and_cheap_modes(finished, tmp_path):
  sub = stability.run(finished, seeds=[3], subsample=0.5, output=tmp_path / "sub", log=lambda _: None)
  assert np.sum(sub.labels[1] >= 0) == 898 and 0.0 <= sub.ari[0, 1] <= 1.0
  cheap = stability.run(finished, runs=4, cheap=True, output=tmp_path / "cheap", log=lambda _: None)
  assert cheap.labels.shape == (5, 1797) and (cheap.labels >= 0).all()
  assert not (tmp_path / "cheap" / "seed1").exists()  # nothing retrained


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "runs=0 must be an integer >= 1"),
    (["--seeds", "a,b"], "--seeds 'a,b' must be comma-separated integers"),
    (["--subsample", "1.5"], r"subsample=1.5 must be a share of the rows in \(0, 1\)"),
    (["--cheap", "--subsample", "0.5"], "cheap re-clusters the run's own embedding")])
def test_bad_input_is_one_line(finished, args, message, capsys):
  import re
  assert cli.main(["stability", "--workdir", str(finished), *args]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and re.search(message, err), err
