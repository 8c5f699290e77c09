"""DeepCluster (2018), jaxclust/methods/deepcluster2018.py: its pieces against independent references (the Sobel
filter by loops, the PCA-whitening by scikit-learn, the sampler by counting) and a run with every method's
guarantees."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import cli, configs, engine, parallel
from jaxclust.data import sources
from jaxclust.methods import deepcluster2018 as dc

ONE_DEVICE = parallel.make_mesh(1)
TINY = ["report=False", "epochs=3", "cnn_channels=(8, 16)", "batch_size=128", "mlp_head=(64, 64)", "pca_dim=16",
        "clusters=30"]


def test_sobel_filter_matches_a_loop():
  images = np.random.default_rng(0).uniform(size=(2, 6, 7, 3)).astype(np.float32)
  gray = np.pad(images.mean(-1), ((0, 0), (1, 1), (1, 1)))
  want = np.zeros((2, 6, 7, 2), np.float32)
  kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
  for b in range(2):
    for i in range(6):
      for j in range(7):
        patch = gray[b, i:i + 3, j:j + 3]  # cross-correlation, as a conv layer computes it
        want[b, i, j] = [np.sum(patch * kx), np.sum(patch * kx.T)]
  np.testing.assert_allclose(np.asarray(dc.sobel(jnp.asarray(images))), want, rtol=1e-5, atol=1e-6)


def test_features_are_whitened_normalized_and_clustered(digits):
  from sklearn.decomposition import PCA
  x = digits[0]
  codes, centers, z, (mean, projection) = dc.cluster_features(jnp.asarray(x), dim=10, clusters=20,
                                                               rng=jax.random.key(0))
  reference = PCA(10, whiten=True).fit_transform(x.astype(np.float64))
  reference /= np.linalg.norm(reference, axis=1, keepdims=True)
  z = np.asarray(z)
  signs = np.sign(np.sum(z * reference, 0))  # each axis up to its sign (the two libraries fix signs differently)
  np.testing.assert_allclose(z, reference * signs, atol=2e-3)
  projected = np.asarray((jnp.asarray(x) - mean) @ projection.T)  # what predict applies to new rows
  np.testing.assert_allclose(projected / np.linalg.norm(projected, axis=1, keepdims=True), z, atol=1e-5)
  codes, centers = np.asarray(codes), np.asarray(centers)
  np.testing.assert_array_equal(np.argmin(((z[:, None] - centers[None]) ** 2).sum(-1), 1), codes)
  assert len(np.unique(codes)) == 20


def test_uniform_sampler_takes_the_same_number_from_every_cluster():
  codes = np.concatenate([np.zeros(500), np.ones(30), np.full(5, 3)]).astype(int)  # cluster 2 is empty
  sample = dc.uniform_sample(codes, 4, len(codes), np.random.default_rng(0))
  assert sample.shape == (535,) and sample.dtype == np.int32
  counts = np.bincount(codes[sample], minlength=4)
  # 535 // 3 + 1 = 179 drawn from each non-empty cluster, shuffled, the first 535 kept
  assert counts[2] == 0 and counts.sum() == 535 and np.all(np.abs(counts[[0, 1, 3]] - 535 / 3) < 20)
  assert len(set(sample[codes[sample] == 0])) == counts[0]  # a large cluster is drawn without replacement
  np.testing.assert_array_equal(sample, dc.uniform_sample(codes, 4, len(codes), np.random.default_rng(0)))


def config(*extra):
  return cli.make_config("deepcluster2018", "digits", settings=TINY + list(extra))


@pytest.fixture(scope="module")
def dc_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("dc2018") / "run"
  return workdir, engine.fit(config(), workdir, log=lambda _: None, mesh=ONE_DEVICE)


def test_a_run_reclusters_every_epoch_and_predict_agrees(dc_run):
  workdir, summary = dc_run
  assert summary["method"] == "deepcluster2018" and summary["clusters"] == 30 and summary["k"] == 10
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in records if r.get("stage") == "deepcluster" and "clusters_used" in r]
  assert len(epochs) == 3 and all(r["clusters_used"] == 30 for r in epochs)
  assert "nmi_previous" not in epochs[0] and all(0 < r["nmi_previous"] <= 1 for r in epochs[1:])
  x = sources.load("digits").x
  out = engine.predict(workdir, x[:300])
  np.testing.assert_array_equal(out.labels, np.load(workdir / "labels.npy")[:300])
  assert out.embedding.shape == (300, 16) and np.all((out.confidence > 0) & (out.confidence <= 1))
  assert summary["acc"] > 0.2


def test_the_knn_readout_groups_the_clusters(tmp_path):
  summary = engine.fit(config("readout=knn"), tmp_path / "knn", log=lambda _: None, mesh=ONE_DEVICE)
  groups = np.load(tmp_path / "knn" / "groups.npy")
  assert summary["readout"] == "knn" and groups.shape == (30,) and set(np.unique(groups)) == set(range(10))
  assert not (tmp_path / "knn" / "centroids.npy").exists()
  np.testing.assert_array_equal(engine.predict(tmp_path / "knn", sources.load("digits").x[:200]).labels,
                                np.load(tmp_path / "knn" / "labels.npy")[:200])


def test_killed_run_resumes_to_the_uninterrupted_result_and_8_devices_equal_1(tmp_path, dc_run):
  run_cli("deepcluster2018", tmp_path / "whole", TINY)
  kill_cli_run("deepcluster2018", tmp_path / "killed", TINY, checkpoint=2)
  run_cli("deepcluster2018", tmp_path / "killed", TINY)
  np.testing.assert_array_equal(np.load(tmp_path / "killed" / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  eight = engine.fit(config(), tmp_path / "eight", log=lambda _: None)
  assert eight["devices"] == 8
  agreement = np.mean(np.load(tmp_path / "eight" / "labels.npy") == np.load(dc_run[0] / "labels.npy"))
  assert agreement >= 0.99, agreement


def test_cluster_weights_give_every_cluster_the_same_weight():
  assignments = jnp.asarray([0, 0, 0, 0, 2, 2, 3, -1])  # 7 rows, cluster 1 empty, one padding row
  w = np.asarray(dc.cluster_weights(assignments, jnp.arange(7), 4))
  np.testing.assert_allclose(w, [7 / 12] * 4 + [7 / 6] * 2 + [7 / 3], rtol=1e-6)  # n / (used x size)
  totals = [w[np.asarray(assignments[:7]) == c].sum() for c in (0, 2, 3)]
  np.testing.assert_allclose(totals, [7 / 3] * 3, rtol=1e-6)


def test_streamed_run_weighs_clusters_and_reaches_the_accuracy_in_memory(tmp_path, dc_run):
  streamed = engine.fit(config("input=tf.data"), tmp_path / "streamed", log=lambda _: None, mesh=ONE_DEVICE)
  assert streamed["clusters_used"] == 30 and abs(streamed["acc"] - dc_run[1]["acc"]) < 0.1
  np.testing.assert_array_equal(engine.predict(tmp_path / "streamed", sources.load("digits").x[:200]).labels,
                                np.load(tmp_path / "streamed" / "labels.npy")[:200])


def test_a_diverging_run_stops(tmp_path):
  from jaxclust.validation import Diverged
  with pytest.raises(Diverged, match=r"^stage deepcluster diverged at epoch 1: loss nan"):
    engine.fit(config("learning_rate=1e30"), tmp_path / "nan", log=lambda _: None, mesh=ONE_DEVICE)


@pytest.mark.parametrize("settings, message", [
    (["pca_dim=65"], "pca_dim=65 must be <= min\\(n_samples, mlp_head\\[-1\\]\\)=64"),
    (["n_clusters=40"], "n_clusters=40 must be <= clusters=30"),
    (["readout=spectral"], "readout='spectral' must be 'kmeans' or 'knn'"),
])
def test_bad_settings_are_refused_before_training(tmp_path, settings, message):
  with pytest.raises(ValueError, match=message):
    engine.fit(config(*settings), tmp_path / "bad", log=lambda _: None)
  assert not (tmp_path / "bad" / "config.json").exists()


def test_sobel_run_and_vector_rows_through_the_api(tmp_path, blobs):
  engine.fit(config("sobel=True", "epochs=1"), tmp_path / "sobel", log=lambda _: None, mesh=ONE_DEVICE)
  import jaxclust
  x, y = blobs
  model = jaxclust.DeepCluster(8, workdir=str(tmp_path / "api"), epochs=3, clusters=40, report=False)
  model.fit(x[:1000], y[:1000])
  assert model.config_.backbone == "mlp" and model.labels_.shape == (1000,)
  np.testing.assert_array_equal(model.predict(x[:100]), model.labels_[:100])
  assert model.summary_["acc"] > 0.5


def test_recipes():
  c = configs.get_config("deepcluster2018", "tfds:imagenet2012")
  assert (c.sobel, c.pca_dim, c.clusters, c.epochs, c.learning_rate) == (True, 256, 10_000, 500, 0.05)
  cifar = configs.get_config("deepcluster2018", "own", recipe="images", n=50_000, shape=(32, 32, 3))
  assert cifar.clusters == 390 and cifar.stem == "cifar"
  small = configs.get_config("deepcluster2018", "own", n=7000, shape=(28, 28, 1))
  assert small.backbone == "small_cnn" and small.epochs == 500 and not small.sobel
