"""The Python API (jaxclust/api.py): estimators over the engine, the same run as the command line's."""

import numpy as np
import pytest
from sklearn.base import clone

import jaxclust
from jaxclust import cli
from jaxclust.data import sources

# Tiny DEC settings (seconds), as --set lines and as keyword arguments.
SETTINGS = ["pretrain.epochs=2", "hidden=(32,)", "cluster.max_steps=40", "cluster.update_interval=10",
            "cluster.kmeans_n_init=2"]
KEYWORDS = {"pretrain__epochs": 2, "hidden": (32,), "cluster": {"max_steps": 40, "update_interval": 10,
                                                                 "kmeans_n_init": 2}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  """DEC fitted through the API on the digits as an array, with the demonstration recipe the CLI gives them."""
  digits = sources.load("digits")
  model = jaxclust.DEC(seed=1, recipe="digits", workdir=tmp_path_factory.mktemp("api"), **KEYWORDS)
  return model.fit(digits.x, digits.y), digits


def test_api_fit_equals_cli_fit(fitted, tmp_path):
  model, digits = fitted
  assert cli.main(["fit", "dec", "--workdir", str(tmp_path / "cli"), "--set", "seed=1",
                   *[f"--set={s}" for s in SETTINGS]]) == 0
  np.testing.assert_array_equal(model.labels_, np.load(tmp_path / "cli" / "labels.npy"))
  assert model.labels_.shape == (1797,) and model.n_clusters_ == 10  # from y, as the CLI from the labels
  named = jaxclust.DEC(seed=1, workdir=tmp_path / "named", **KEYWORDS).fit("digits")  # a name, as --dataset
  np.testing.assert_array_equal(named.labels_, model.labels_)


def test_predict_transform_score_and_centers(fitted):
  model, digits = fitted
  np.testing.assert_array_equal(model.predict(digits.x[:100]), model.labels_[:100])
  out = model.assign(digits.x[:100])
  assert np.all((out.confidence > 0) & (out.confidence <= 1)) and np.all((out.outlier >= 0) & (out.outlier <= 1))
  assert model.transform(digits.x[:7]).shape == (7, 10) and model.cluster_centers_.shape == (10, 10)
  z, centers = model.transform(digits.x[:100]), model.cluster_centers_
  q = (1 + ((z[:, None] - centers) ** 2).sum(-1)) ** -1  # DEC's Student-t (alpha 1): its argmax is the label
  np.testing.assert_array_equal(q.argmax(1), model.labels_[:100])
  scores = model.score(digits.x, digits.y)
  assert scores == pytest.approx({k: model.summary_[k] for k in ("acc", "nmi", "ari")})
  images = (digits.x[:5, ..., 0] * 255).round().astype(np.uint8)  # [n, H, W] bytes: the same images
  assert model.predict(images).shape == (5,)


def test_kneighbors_equals_scikit_learn_on_the_embedding(fitted):
  from sklearn.neighbors import NearestNeighbors
  model, digits = fitted
  distances, indices = model.kneighbors(digits.x[:30], n_neighbors=3)
  theirs = NearestNeighbors(n_neighbors=3).fit(model.transform(digits.x)).kneighbors(model.transform(digits.x[:30]))
  np.testing.assert_allclose(distances, theirs[0], atol=1e-4)
  assert (indices == theirs[1]).mean() > 0.95  # ties in the last float bits may swap neighbours


def test_a_workdir_with_a_finished_run_is_read_not_trained(fitted):
  model, digits = fitted
  again = clone(model).fit(digits.x, digits.y)
  assert again.summary_["wall_seconds"] == model.summary_["wall_seconds"]  # the saved summary
  np.testing.assert_array_equal(again.labels_, model.labels_)
  assert clone(model).get_params() == model.get_params()


def test_settings_are_checked_and_errors_name_them(tmp_path):
  x = np.random.default_rng(0).normal(size=(60, 4))
  with pytest.raises(ValueError, match=r"pretrain.epoch: unknown setting 'epoch'"):
    jaxclust.DEC(3, workdir=tmp_path / "a", pretrain__epoch=3).fit(x)
  with pytest.raises(ValueError, match=r"pretrain.epochs='3': expected int like the default"):
    jaxclust.DEC(3, workdir=tmp_path / "a", pretrain={"epochs": "3"}).fit(x)
  with pytest.raises(ValueError, match=r"method is an argument of the estimator"):
    jaxclust.DEC(3, workdir=tmp_path / "a", method="swav").fit(x)
  with pytest.raises(ValueError, match=r"has no labels: set n_clusters"):
    jaxclust.DEC(workdir=tmp_path / "a").fit(x)
  with pytest.raises(ValueError, match=r"expected rows \[n, d\] or images"):
    jaxclust.DEC(3, workdir=tmp_path / "a").fit(np.zeros(5))
  with pytest.raises(ValueError, match=r"not fitted yet"):
    jaxclust.SwAV(3).predict(x)
  assert not (tmp_path / "a").exists()


def test_scan_has_no_centers_and_says_what_to_use(fitted):
  model = jaxclust.SCAN(workdir=fitted[0].workdir_)
  model.workdir_ = fitted[0].workdir_
  with pytest.raises(AttributeError, match="SCAN has no cluster centers"):
    model.cluster_centers_


def test_the_example_runs(tmp_path):
  """examples/own_data.py, as a user runs it (about 25 s on 2 cores)."""
  import pathlib
  import subprocess
  import sys
  example = pathlib.Path(__file__).parents[1] / "examples" / "own_data.py"
  out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "DEC: {'acc':" in out.stdout and "k-means: {'acc':" in out.stdout and "outlier score" in out.stdout


def test_an_image_folder_fits_and_predicts_at_the_trained_size(tmp_path):
  """A folder of images of two sizes: fit reads them at the size most have; predict on another folder of
  other sizes reads it at the run's size."""
  from PIL import Image
  rng = np.random.default_rng(0)
  for folder, sizes in (("train", [(10, 12)] * 30 + [(7, 9)] * 6), ("new", [(20, 16)] * 4)):
    (tmp_path / folder).mkdir()
    for i, (h, w) in enumerate(sizes):
      Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i:03d}.png")
  model = jaxclust.DEC(3, workdir=tmp_path / "run", **KEYWORDS).fit(tmp_path / "train")
  assert model.summary_["shape"] == [10, 12, 3] and model.labels_.shape == (36,)
  assert model.predict(tmp_path / "new").shape == (4,)
