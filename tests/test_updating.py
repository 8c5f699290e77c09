"""Updating a finished run with new rows (jaxclust.updating): the mini-batch step against numpy, the candidate
groups against brute force, versions, predict by version, the original run untouched, and the errors."""

import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest
from scipy.sparse import csgraph
from sklearn.datasets import make_blobs

import jaxclust
from jaxclust import cli, engine, updating
from jaxclust.methods import dec
from test_cli import error_line
from test_seeding import _fast


def test_candidate_groups_are_the_mutual_neighbour_components_of_the_outliers_as_brute_force_finds():
  rng = np.random.default_rng(0)
  z = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(20, 0.3, (30, 3)), rng.normal(-20, 0.3, (15, 3)),
                      rng.uniform(-40, 40, (5, 3))]).astype(np.float32)
  outliers = np.arange(len(z)) >= 200
  groups = updating.candidate_groups(z, outliers, min_group=10)
  assert np.all(groups[:200] == -1)
  assert np.mean(groups[200:230] == 0) > 0.8 and np.mean(groups[230:245] == 1) > 0.8  # numbered by size
  assert set(groups[200:245]) <= {-1, 0, 1}
  # brute force: distances among the outliers, mutual 10-NN, components of at least 10
  w = z[outliers]
  d = ((w[:, None] - w[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  near = np.zeros_like(d, bool)
  near[np.repeat(np.arange(len(w)), 10), np.argsort(d, 1)[:, :10].reshape(-1)] = True
  _, component = csgraph.connected_components(near & near.T, directed=False)
  sizes = np.bincount(component)
  expected = np.where(sizes[component] >= 10, component, -1)
  ours = groups[outliers]
  for c in set(expected) - {-1}:  # the same partition of the grouped rows
    assert len(set(ours[expected == c])) == 1 and ours[expected == c][0] >= 0
  np.testing.assert_array_equal(ours == -1, expected == -1)
  assert np.all(updating.candidate_groups(z, np.zeros(len(z), bool), 10) == -1)


@pytest.fixture(scope="module")
def blobs_run(tmp_path_factory):
  """DEC on three of four blobs; the fourth arrives later."""
  x, y = make_blobs(1200, n_features=8, centers=4, cluster_std=0.5, center_box=(-8, 8), random_state=3)
  x = x.astype(np.float32)
  workdir = tmp_path_factory.mktemp("update") / "run"
  old = y != 3
  model = jaxclust.DEC(3, workdir=workdir, **{k.replace(".", "__"): v for k, v in _fast("dec").items()})
  model.fit(x[old], y[old])
  return model, x, y


def _digest(workdir):
  files = sorted(p for p in workdir.rglob("*") if p.is_file() and "updates" not in p.parts)
  return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_an_update_moves_the_centers_as_mini_batch_k_means_and_flags_the_new_blob(blobs_run, tmp_path):
  model, x, y = blobs_run
  workdir = model.workdir_
  untouched = _digest(pathlib.Path(workdir))
  method, run, state = engine.restore(workdir, version=None)
  centers = np.asarray(dec.centers(run, state), np.float64)
  sizes = np.bincount(model.labels_, minlength=3).astype(np.float64)
  rng = np.random.default_rng(0)
  new = np.concatenate([np.flatnonzero(y == 3), rng.choice(np.flatnonzero(y != 3), 100, replace=False)])
  z = np.asarray(engine.predict(workdir, x[new]).embedding, np.float64)
  report = updating.update(workdir, x[new], log=lambda _: None)
  assert report["version"] == 1 and updating.versions(workdir) == [1]
  # numpy: nearest center, then each center the running mean of what it absorbed
  nearest = ((z[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
  expected = centers.copy()
  for c in range(3):
    if np.any(nearest == c):
      expected[c] = (centers[c] * sizes[c] + z[nearest == c].sum(0)) / (sizes[c] + np.sum(nearest == c))
  folder = updating.version_folder(workdir, 1)
  np.testing.assert_allclose(np.load(folder / "centers.npy"), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.load(folder / "counts.npy"), sizes + np.bincount(nearest, minlength=3))
  # drift: the unseen blob is far out, and grouped
  outlier = np.load(folder / "outlier.npy")
  assert np.mean(outlier[:np.sum(y == 3)] > 0.99) > 0.9 and np.mean(outlier[np.sum(y == 3):] > 0.99) < 0.1
  assert report["outlier_share"] > 0.6
  groups = np.load(folder / "candidates.npy")
  assert report["candidate_clusters"] and report["candidate_clusters"][0]["rows"] >= 0.8 * np.sum(y == 3)
  assert np.mean(groups[:np.sum(y == 3)] == 0) > 0.8 and np.all(groups[np.sum(y == 3):] == -1)
  # predict uses the latest version's centers; version=0 the run as trained; the run itself is untouched
  after = engine.predict(workdir, x[new])
  np.testing.assert_array_equal(after.labels, np.load(folder / "labels.npy"))
  _, _, original = engine.restore(workdir, version=0)
  np.testing.assert_allclose(np.asarray(dec.centers(run, original)), centers, rtol=1e-6)
  assert _digest(pathlib.Path(workdir)) == untouched
  # a second update starts from the first's centers and counts
  second = updating.update(workdir, x[new[:50]], log=lambda _: None)
  assert second["version"] == 2 and second["previous"] == 1
  np.testing.assert_allclose(np.load(updating.version_folder(workdir, 2) / "counts.npy").sum(),
                             sizes.sum() + len(new) + 50)
  with pytest.raises(ValueError, match="version=7"):
    engine.predict(workdir, x[:3], version=7)


def test_a_method_without_centers_keeps_its_assignment_and_moves_its_cluster_means(blobs_run, tmp_path, monkeypatch):
  model, x, y = blobs_run
  workdir = tmp_path / "copy"
  shutil.copytree(model.workdir_, workdir, ignore=shutil.ignore_patterns("updates"))
  monkeypatch.delattr(dec, "with_centers")
  before = engine.predict(workdir, x[:300])
  report = updating.update(workdir, x[:300], log=lambda _: None)
  folder = updating.version_folder(workdir, report["version"])
  assert not (folder / "centers.npy").exists()
  np.testing.assert_array_equal(np.load(folder / "labels.npy"), before.labels)
  means = np.asarray(engine.outlier_reference(np.asarray(engine.predict(workdir, x[y != 3]).embedding),
                                              model.labels_, 3)["means"], np.float64)
  sizes = np.bincount(model.labels_, minlength=3)
  z = np.asarray(before.embedding, np.float64)
  nearest = ((z[:, None] - means[None]) ** 2).sum(-1).argmin(1)
  expected = np.stack([(means[c] * sizes[c] + z[nearest == c].sum(0)) / (sizes[c] + np.sum(nearest == c))
                       for c in range(3)])
  np.testing.assert_allclose(np.load(folder / "means.npy"), expected, rtol=1e-3, atol=1e-3)


def test_the_command_line_updates_and_refuses_bad_input_in_one_line(blobs_run, tmp_path, capsys):
  model, x, _ = blobs_run
  workdir = tmp_path / "copy"
  shutil.copytree(model.workdir_, workdir, ignore=shutil.ignore_patterns("updates"))
  np.save(tmp_path / "new.npy", x[:40])
  assert cli.main(["update", "--workdir", str(workdir), "--input", str(tmp_path / "new.npy")]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[-1].startswith("version 1: 40 new rows") and (workdir / "updates" / "0001" / "update.json").exists()
  assert sum(line.startswith("version 1:") for line in out) == 1 and out[-2] == f"saved to {workdir / 'updates' / '0001'}"
  np.save(tmp_path / "wide.npy", np.random.default_rng(0).normal(size=(5, 9)).astype(np.float32))
  assert cli.main(["update", "--workdir", str(workdir), "--input", str(tmp_path / "wide.npy")]) == 2
  assert "(9,)" in error_line(capsys)
  assert cli.main(["update", "--workdir", str(tmp_path / "none"), "--input", str(tmp_path / "new.npy")]) == 2
  assert "no finished run" in error_line(capsys)
  assert cli.main(["predict", "--workdir", str(workdir), "--input", str(tmp_path / "new.npy"), "--version", "3"]) == 2
  assert "version=3" in error_line(capsys)
  assert updating.versions(workdir) == [1]


def test_a_fine_tuning_update_trains_from_the_pretrained_autoencoder_and_keeps_the_replayed_clusters(blobs_run, tmp_path):
  model, x, y = blobs_run
  workdir = tmp_path / "copy"
  shutil.copytree(model.workdir_, workdir, ignore=shutil.ignore_patterns("updates"))
  training = x[y != 3]
  new = x[y == 3][:120]
  report = updating.update(workdir, new, finetune=True, replay=200, training=training, log=lambda _: None)
  tuned = updating.version_folder(workdir, 1) / "run"
  assert updating.finetuned(workdir, 1) == tuned and report["finetuned"]["replayed_rows"] == 200
  config = json.loads((tuned / "config.json").read_text())
  assert config["pretrain"]["init_from"] == str(workdir) and config["seed_labels"].endswith("seed_labels.csv")
  seeds = np.loadtxt(tuned / "seed_labels.csv", delimiter=",", skiprows=1, dtype=np.int64)
  assert seeds[:, 0].min() == len(new) and len(seeds) == 200  # the replayed rows follow the new ones
  tuned_labels = np.load(tuned / "labels.npy")
  np.testing.assert_array_equal(tuned_labels[seeds[:, 0]], seeds[:, 1])  # they keep their clusters
  np.testing.assert_array_equal(np.load(updating.version_folder(workdir, 1) / "labels.npy"), tuned_labels[:len(new)])
  # predictions come from the fine-tuned run; version 0 is the run as trained
  np.testing.assert_array_equal(engine.predict(workdir, x[:50]).labels, engine.predict(tuned, x[:50]).labels)
  np.testing.assert_array_equal(engine.predict(workdir, x[:50], version=0).labels,
                                engine.predict(model.workdir_, x[:50], version=0).labels)
  # the next update starts from the fine-tuned run
  second = updating.update(workdir, x[:30], log=lambda _: None)
  assert second["version"] == 2 and (updating.version_folder(workdir, 2) / "update.json").exists()


@pytest.mark.parametrize("method", ["vade", "deepcluster"])
def test_every_kind_of_method_updates(tmp_path, method):
  """VaDE moves its mixture means; DeepCluster-v2 (no centers of its own) keeps its assignment."""
  from sklearn.datasets import load_digits
  from test_guarantees import SHORTER, TINY
  x, _ = load_digits(return_X_y=True)
  x = (x / 16).astype(np.float32).reshape(-1, 8, 8, 1)
  config = cli.make_config(method, "digits", settings=TINY[method] + SHORTER.get(method, []))
  engine.fit(config, tmp_path / "run", log=lambda _: None)
  before = engine.predict(tmp_path / "run", x[:200])
  report = updating.update(tmp_path / "run", x[:200], log=lambda _: None)
  folder = updating.version_folder(tmp_path / "run", 1)
  assert report["rows"] == 200 and len(report["center_movement"]) == 10  # digits: 10 clusters
  after = engine.predict(tmp_path / "run", x[:200])
  np.testing.assert_array_equal(after.labels, np.load(folder / "labels.npy"))
  if method == "vade":
    _, run, state = engine.restore(tmp_path / "run", version=None)
    np.testing.assert_allclose(np.asarray(state.params["prior"]["means"]), np.load(folder / "centers.npy"))
  else:
    assert not (folder / "centers.npy").exists()
    np.testing.assert_array_equal(after.labels, before.labels)
    # fine-tuning a method without an earlier stage to reuse trains it again on new and replayed rows; the
    # training rows are the run's dataset read again
    tuned = updating.update(tmp_path / "run", x[:100], finetune=True, replay=100, log=lambda _: None)
    run = updating.finetuned(tmp_path / "run", 2)
    assert tuned["finetuned"]["replayed_rows"] == 100 and tuned["finetuned"]["from"] is None
    seeds = np.loadtxt(run / "seed_labels.csv", delimiter=",", skiprows=1, dtype=np.int64)
    np.testing.assert_array_equal(np.load(run / "labels.npy")[seeds[:, 0]], seeds[:, 1])


def test_partial_fit_is_the_api_twin_of_update(blobs_run, tmp_path):
  model, x, y = blobs_run
  workdir = tmp_path / "copy"
  shutil.copytree(model.workdir_, workdir, ignore=shutil.ignore_patterns("updates"))
  again = jaxclust.DEC(3, workdir=workdir, **{k.replace(".", "__"): v for k, v in _fast("dec").items()})
  again.fit(x[y != 3], y[y != 3])  # reads the finished run
  assert again.partial_fit(x[y == 3]) is again
  assert again.update_["version"] == 1 and again.update_["rows"] == np.sum(y == 3)
  np.testing.assert_array_equal(again.predict(x[y == 3]), np.load(workdir / "updates" / "0001" / "labels.npy"))
  np.testing.assert_allclose(again.cluster_centers_, np.load(workdir / "updates" / "0001" / "centers.npy"))
