"""Choosing k: each criterion against scikit-learn or its formula, the rule, the command line."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_blobs

import jaxclust
from jaxclust import cli, k_choice


@pytest.fixture(scope="module")
def choice():
  x, _ = make_blobs(600, centers=4, n_features=5, cluster_std=0.8, random_state=3)
  return x.astype(np.float32), jaxclust.choose_k(x, range(1, 9), runs=3, references=4)


def test_well_separated_blobs_get_their_k_from_every_criterion(choice):
  _, c = choice
  picks = c.by_criterion()
  assert c.k == 4 and {picks[name] for name in ("silhouette", "davies_bouldin", "calinski_harabasz", "gap")} == {4}
  assert c.k == picks["calinski_harabasz"]  # the rule (k_choice.RULE)
  assert c.stability[c.ks.index(4)] == 1.0  # stability alone ties: fewer, merged blobs are found as surely


def test_criteria_equal_scikit_learn_and_the_formulas(choice):
  x, c = choice
  for i, k in enumerate(c.ks):
    labels = c.labels[i]
    centers = np.stack([x[labels == j].mean(0) for j in range(k)])
    # (the centers of the last Lloyd step, within tol of these means)
    np.testing.assert_allclose(c.inertia[i], ((x - centers[labels]) ** 2).sum(), rtol=1e-3)
    if k == 1:
      assert np.isnan([c.silhouette[i], c.davies_bouldin[i], c.calinski_harabasz[i]]).all()
      continue
    np.testing.assert_allclose(c.silhouette[i], skm.silhouette_score(x, labels), rtol=1e-4)  # 600 rows: no sample
    np.testing.assert_allclose(c.davies_bouldin[i], skm.davies_bouldin_score(x, labels), rtol=1e-4)
    np.testing.assert_allclose(c.calinski_harabasz[i], skm.calinski_harabasz_score(x, labels), rtol=1e-4)
  # Tibshirani et al.: Gap(k) = mean_b log W*_kb - log W_k, s_k = sd_b(log W*_kb) sqrt(1 + 1/B)
  np.testing.assert_allclose(c.gap, c.reference_log_w.mean(0) - np.log(c.inertia), rtol=1e-5)
  np.testing.assert_allclose(c.gap_se, c.reference_log_w.std(0) * np.sqrt(1 + 1 / 4), rtol=1e-5)
  # uniform data has less structure than the blobs at their k: the reference W_4 is the larger
  assert c.gap[c.ks.index(4)] > 0.5


def test_stability_is_the_mean_ari_between_seedings():
  x, _ = make_blobs(300, centers=3, n_features=2, cluster_std=3.0, random_state=0)
  out = jaxclust.kernels.kmeans.kmeans_range(x.astype(np.float32), [5], rng=jaxclust_key(0), runs=3)
  runs = np.asarray(out.labels)[:, 0]
  expected = np.mean([skm.adjusted_rand_score(runs[a], runs[b]) for a, b in ((0, 1), (0, 2), (1, 2))])
  np.testing.assert_allclose(k_choice._mean_pairwise_ari(runs), expected, rtol=1e-6)


def jaxclust_key(seed):
  import jax
  return jax.random.key(seed)


def test_gap_rule_takes_the_first_k_within_one_standard_error_of_the_next():
  ks = [2, 3, 4, 5]
  assert k_choice.gap_rule(ks, np.array([0.1, 0.5, 0.55, 0.6]), np.array([0.0, 0.1, 0.1, 0.1])) == 3
  assert k_choice.gap_rule(ks, np.array([0.1, 0.5, 0.9, 1.3]), np.array([0.0, 0.1, 0.1, 0.1])) is None


@pytest.mark.parametrize("text, expected", [("2..5", [2, 3, 4, 5]), ("8,2,4,4", [2, 4, 8])])
def test_parse_range(text, expected):
  assert k_choice.parse_range(text) == expected


def test_command_line_prints_the_table_and_ends_with_k(tmp_path, capsys):
  x, _ = make_blobs(400, centers=3, n_features=4, cluster_std=0.5, random_state=1)
  np.save(tmp_path / "rows.npy", x.astype(np.float32))
  assert cli.main(["choose-k", "--dataset", str(tmp_path / "rows.npy"), "--k", "2..6", "--references", "3",
                   "--output", str(tmp_path / "curves.png")]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == "k=3" and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert any(line.split()[:1] == ["6"] for line in out)  # a table row per k


@pytest.mark.parametrize("args, message", [
    (["--dataset", "digits", "--k", "a..b"], "k range 'a..b' must be LOW..HIGH or a comma-separated list"),
    (["--dataset", "digits", "--k", "0..3"], "k range '0..3' must hold numbers of clusters >= 1"),
    (["--k", "2..4"], r"choose-k needs --dataset D \(its rows\) or --workdir DIR"),
    (["--dataset", "digits", "--k", "2..1797"], r"ks 2..1797 must lie in \[1, 1796\] for 1797 rows"),
    (["--dataset", "digits", "--output", "x.jpg"], "--output x.jpg must be a .png file"),
    (["--workdir", "nowhere"], "holds no finished run")])
def test_bad_input_is_one_line(args, message, capsys):
  import re
  assert cli.main(["choose-k", *args]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and re.search(message, err), err


def test_n_clusters_auto_chooses_k_on_the_rows_in_fit_and_the_api(tmp_path):
  import json
  x, _ = make_blobs(600, centers=4, n_features=6, cluster_std=0.6, random_state=2)
  assert cli.make_config("dec", "digits", settings=["n_clusters=auto"]).n_clusters == -1  # what fit resolves
  model = jaxclust.DEC("auto", workdir=tmp_path / "api", report=False, pretrain__epochs=2, cluster__max_steps=20)
  assert model.fit(x).n_clusters_ == 4
  assert json.loads((tmp_path / "api" / "config.json").read_text())["n_clusters"] == 4  # resumes with that k
