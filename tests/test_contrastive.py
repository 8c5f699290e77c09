"""The two-step methods, `fit simclr` and `fit moco`: a contrastive pretext, then k-means of its features
(jaxclust/methods/contrastive.py), with the guarantees every method gives."""

import json

import jax
import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import cli, configs, engine, parallel
from jaxclust.data import sources
from jaxclust.kernels.kmeans import kmeans
from jaxclust.methods import contrastive, scan_epochs

ONE_DEVICE = parallel.make_mesh(1)
TINY = ["report=False", "pretext.epochs=3", "cnn_channels=(8, 16)", "pretext.batch_size=128"]


def config(method, *extra):
  return cli.make_config(method, "digits", settings=TINY + list(extra))


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("simclr") / "run"
  summary = engine.fit(config("simclr"), workdir, log=lambda _: None, mesh=ONE_DEVICE)
  return workdir, summary


def test_simclr_then_kmeans_reads_out_the_spherical_kmeans_of_its_features(simclr_run):
  workdir, summary = simclr_run
  assert summary["method"] == "simclr" and summary["readout"] == "kmeans" and summary["readout_clusters"] == 10
  c = config("simclr")
  x = sources.load("digits").x
  state = engine.restore(workdir)[2]
  model = contrastive.network(c)
  what = scan_epochs.features if c.readout.features == "backbone" else scan_epochs.projections
  z = np.asarray(what(model, {"params": state.params, "batch_stats": state.batch_stats}, x, len(x), 512))
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  labels, centroids = np.load(workdir / "labels.npy"), np.load(workdir / "centroids.npy")
  # A Lloyd fixed point of spherical k-means: each row is in the cluster of its most similar unit centroid
  # (but for rows on a boundary within float noise), each centroid the normalized mean of its rows.
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
  assert np.mean(np.argmax(z @ centroids.T, 1) == labels) > 0.995
  means = np.stack([z[labels == c].mean(0) for c in range(10)])
  np.testing.assert_allclose(means / np.linalg.norm(means, axis=1, keepdims=True), centroids, atol=2e-3)
  # The lowest inertia of the restarts: no worse than another key's k-means of the same features.
  inertia = lambda lab, cen: float(np.sum(1.0 - np.sum(z * cen[lab], 1)))
  other = kmeans(z, 10, rng=jax.random.key(123), n_init=10, spherical=True)
  assert inertia(labels, centroids) <= 1.02 * inertia(np.asarray(other.labels), np.asarray(other.centers))
  out = engine.predict(workdir, x[:300])
  np.testing.assert_array_equal(out.labels, labels[:300])
  assert np.all((out.confidence > 0) & (out.confidence <= 1)) and not (workdir / "groups.npy").exists()
  assert summary["acc"] > 0.2  # three tiny pretext epochs: above chance (0.1), far from a good pretext


def test_moco_reads_out_neighbour_groups_of_over_clusters(tmp_path):
  summary = engine.fit(config("moco", "readout.method=knn", "readout.clusters=40"), tmp_path / "moco",
                       log=lambda _: None, mesh=ONE_DEVICE)
  assert summary["method"] == "moco" and summary["readout"] == "knn" and summary["readout_clusters"] == 40
  saved = json.loads((tmp_path / "moco" / "config.json").read_text())
  assert saved["pretext"]["method"] == "moco" and saved["pretext"]["temperature"] == 0.2
  groups, labels = np.load(tmp_path / "moco" / "groups.npy"), np.load(tmp_path / "moco" / "labels.npy")
  assert groups.shape == (40,) and set(np.unique(groups)) == set(range(10))
  assert set(np.unique(labels)) <= set(range(10))
  np.testing.assert_array_equal(engine.predict(tmp_path / "moco", sources.load("digits").x[:200]).labels, labels[:200])


@pytest.mark.parametrize("settings, message", [
    (["pretext.method=moco"], "pretext.method='moco', but `fit simclr` trains the simclr pretext"),
    (["readout.method=spectral"], "readout.method='spectral' must be one of kmeans, knn"),
    (["readout.features=head"], "readout.features='head' must be 'backbone' or 'projection'"),
    (["readout.method=knn", "readout.clusters=5"], "readout.clusters=5 must be >= 10"),
    (["pretext.batch_size=100"], "pretext.batch_size=100 is not divisible by the 8 devices"),
])
def test_bad_settings_are_refused_before_training(tmp_path, settings, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    engine.fit(config("simclr", *settings), tmp_path / "bad", log=lambda _: None)
  assert not (tmp_path / "bad" / "config.json").exists()


def test_killed_run_resumes_to_the_uninterrupted_result_and_8_devices_equal_1(tmp_path, simclr_run):
  run_cli("simclr", tmp_path / "whole", TINY)
  kill_cli_run("simclr", tmp_path / "killed", TINY, checkpoint=2)
  run_cli("simclr", tmp_path / "killed", TINY)
  np.testing.assert_array_equal(np.load(tmp_path / "killed" / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  # 8 devices: the same training up to float summation order. The labels are k-means of the features of a 3-epoch
  # network, whose restarts nearly tie (inertias within float noise), so they agree only closely: ARI 0.888
  # measured on 2026-12-05 (jax 0.10.2, 2-core CPU); the readout of one set of features is exact (the first test).
  eight = engine.fit(config("simclr"), tmp_path / "eight", log=lambda _: None)
  assert eight["devices"] == 8
  one_state, eight_state = engine.restore(simclr_run[0])[2], engine.restore(tmp_path / "eight")[2]
  for a, b in zip(jax.tree.leaves(one_state.params), jax.tree.leaves(eight_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
  from sklearn.metrics import adjusted_rand_score
  assert adjusted_rand_score(np.load(simclr_run[0] / "labels.npy"), np.load(tmp_path / "eight" / "labels.npy")) > 0.8


def test_streamed_pretext_reaches_the_accuracy_in_memory(tmp_path, simclr_run):
  streamed = engine.fit(config("simclr", "input=tf.data"), tmp_path / "streamed", log=lambda _: None, mesh=ONE_DEVICE)
  assert abs(streamed["acc"] - simclr_run[1]["acc"]) < 0.1


def test_a_diverging_pretext_stops(tmp_path):
  from jaxclust.validation import Diverged
  with pytest.raises(Diverged, match=r"^stage pretext diverged at epoch 1: loss nan"):
    engine.fit(config("simclr", "pretext.learning_rate=1e30"), tmp_path / "nan", log=lambda _: None, mesh=ONE_DEVICE)


def test_recipes_take_scans_pretext_and_moco_v2_settings():
  scan, simclr, moco = (configs.get_config(m, "mnist") for m in ("scan", "simclr", "moco"))
  for key in ("backbone", "cnn_channels"):
    assert simclr[key] == scan[key] == moco[key]
  assert simclr.pretext.epochs == scan.pretext.epochs == 50 and simclr.pretext.method == "simclr"
  assert simclr.readout.features == scan.mine.features == "backbone"
  assert moco.pretext.method == "moco" and moco.pretext.temperature == 0.2
  assert moco.pretext.learning_rate == pytest.approx(0.03 * moco.pretext.batch_size / 256)
  assert moco.pretext.queue_size % moco.pretext.batch_size == 0 and moco.pretext.queue_size <= 35_000
  vectors = configs.get_config("moco", "own", n=500, shape=(12,))
  # 500 rows: the smallest queue, one batch (the vectors batch is 256 here)
  assert vectors.backbone == "mlp" and vectors.pretext.queue_size == vectors.pretext.batch_size == 256
  assert "augment" not in vectors


def test_python_api_on_vector_rows(tmp_path, blobs):
  import jaxclust
  x, y = blobs
  model = jaxclust.MoCo(8, workdir=str(tmp_path / "api"), pretext__epochs=2,
                         pretext__warmup_epochs=1, report=False)
  model.fit(x[:1000], y[:1000])
  assert model.config_.backbone == "mlp" and model.config_.pretext.method == "moco"
  assert model.labels_.shape == (1000,) and model.n_clusters_ == 8
  np.testing.assert_array_equal(model.predict(x[:100]), model.labels_[:100])
  assert model.transform(x[:5]).shape == (5, model.config_.mlp_widths[-1])
  assert model.summary_["acc"] > 0.5  # 8 well-separated blobs (k-means of the raw rows: above 0.9)


def test_a_run_reads_out_another_runs_pretext(tmp_path, simclr_run):
  """pretext.init_from: no pretext epochs, the source's network; the same readout gives the same clusters."""
  source = simclr_run[0]
  again = engine.fit(config("simclr", f"pretext.init_from={source}"), tmp_path / "again", log=lambda _: None,
                     mesh=ONE_DEVICE)
  assert again["train_seconds"] == 0.0
  np.testing.assert_array_equal(np.load(tmp_path / "again" / "labels.npy"), np.load(source / "labels.npy"))
  with pytest.raises(ValueError, match=r"pretext network differs from this one's in \['pretext.method'"):
    engine.fit(config("moco", f"pretext.init_from={source}"), tmp_path / "moco", log=lambda _: None, mesh=ONE_DEVICE)
