"""The contrastive family on vector rows: the vector views against numpy, the MLP backbone, the vectors
recipes, one tiny fit per method (SCAN, SwAV, DeepCluster-v2) on scikit-learn's wine with predict on new
rows, and the one-line refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclust import cli, configs, engine, parallel
from jaxclust.data import augment_vectors
from jaxclust.models import mlp

ONE_DEVICE = parallel.make_mesh(1)


def _features(n=4000, seed=0):
  """Rows whose features have very different spreads and means."""
  rng = np.random.default_rng(seed)
  std = np.array([0.01, 1.0, 5.0, 100.0], np.float32)
  return (rng.normal(size=(n, 4)) * std + np.array([3.0, -1.0, 0.0, 50.0])).astype(np.float32), std


def test_noise_is_scaled_to_each_features_spread():
  x, std = _features()
  fn = jax.jit(augment_vectors.gaussian_noise, static_argnums=3)
  view = np.asarray(fn(jax.random.key(0), x, std, 0.3))
  eager = augment_vectors.gaussian_noise(jax.random.key(0), x, std, 0.3)  # the same draws (fused or not)
  np.testing.assert_allclose(view, eager, rtol=1e-6, atol=1e-4)
  delta = (view - x).astype(np.float64)
  # The numpy reference: N(0, (0.3 std)^2) per feature; 4,000 draws give the std to about 1.1% (sd).
  np.testing.assert_allclose(delta.std(axis=0), 0.3 * std, rtol=0.05)
  assert np.all(np.abs(delta.mean(axis=0)) < 4 * 0.3 * std / np.sqrt(len(x))), delta.mean(axis=0)
  assert not np.array_equal(view, np.asarray(fn(jax.random.key(1), x, std, 0.3)))


def test_masking_replaces_the_stated_fraction_of_features_by_their_fill():
  x, _ = _features()
  fill = x.mean(axis=0)
  view = np.asarray(jax.jit(augment_vectors.feature_mask, static_argnums=3)(jax.random.key(0), x, fill, 0.3))
  masked = view == fill[None, :]
  np.testing.assert_array_equal(view[~masked], x[~masked])  # the rest untouched
  # Binomial(16,000, 0.3) overall, (4,000, 0.3) per feature: 4 standard deviations.
  assert abs(masked.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / masked.size)
  np.testing.assert_allclose(masked.mean(axis=0), 0.3, atol=4 * np.sqrt(0.3 * 0.7 / len(x)))
  # Independent per entry: rows with every feature masked as often as 0.3^4.
  assert abs(masked.all(axis=1).mean() - 0.3 ** 4) < 4 * np.sqrt(0.3 ** 4 / len(x))
  np.testing.assert_array_equal(augment_vectors.feature_mask(jax.random.key(0), x, fill, 0.0), x)


def test_interpolation_stays_on_the_segment_with_one_weight_per_row():
  x, _ = _features()
  partner = np.roll(x, 1, axis=0)
  view = np.asarray(jax.jit(augment_vectors.interpolate, static_argnums=3)(jax.random.key(0), x, partner, 0.5),
                    np.float64)
  direction = (partner - x).astype(np.float64)
  w = np.sum((view - x) * direction, axis=1) / np.sum(direction ** 2, axis=1)  # least-squares weight per row
  np.testing.assert_allclose(view, x + w[:, None] * direction, rtol=1e-5, atol=1e-3)  # on the line, every feature
  assert w.min() >= 0.0 and w.max() <= 0.5  # between the row and its partner, at most halfway
  # U(0, 0.5): mean 0.25, standard deviation 0.5 / sqrt(12).
  assert abs(w.mean() - 0.25) < 4 * 0.5 / np.sqrt(12 * len(x))
  assert abs(w.std() - 0.5 / np.sqrt(12)) < 0.01


def test_context_holds_each_rows_nearest_neighbours_without_itself():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 3, 2)).astype(np.float32)  # rows of rank 2 (a short time series)
  x[7] = x[3]  # an identical row comes before row 7: row 7 must still not be its own neighbour
  context = augment_vectors.context(x, 4)
  flat = x.reshape(60, -1).astype(np.float64)
  d = np.sum((flat[:, None] - flat[None]) ** 2, -1)
  np.fill_diagonal(d, np.inf)
  expected = np.sort(d, axis=1)[:, :4]
  got = np.take_along_axis(d, context.neighbors.astype(np.int64), axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert not np.any(context.neighbors == np.arange(60)[:, None])
  assert context.neighbors[7, 0] == 3
  np.testing.assert_allclose(context.mean, x.mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(context.std, x.std(axis=0), rtol=1e-5)
  with pytest.raises(ValueError, match=r"k=60 neighbours must be in \[1, n_samples - 1=59\]"):
    augment_vectors.context(x, 60)


def test_views_take_partners_among_the_neighbours_and_are_deterministic():
  x, _ = _features(200)
  context = augment_vectors.context(x, 3)
  index = jnp.arange(0, 200, 7)
  rows = augment_vectors.take(jnp.asarray(x), jax.tree.map(jnp.asarray, context), index, jax.random.key(0))
  partners = np.asarray(rows.partner)
  for i, p in zip(np.asarray(index), partners):
    assert any(np.array_equal(p, x[j]) for j in context.neighbors[i])
  fn = jax.jit(lambda rng, r: augment_vectors.views(rng, r, count=3, noise=0.1, mask=0.2, mix=0.5))
  a, b = fn(jax.random.key(1), rows), fn(jax.random.key(1), rows)
  assert len(a) == 3 and all(v.shape == (len(index), 4) and v.dtype == jnp.float32 for v in a)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[0], a[1])  # each view its own key


def test_mlp_backbone_flattens_rows_and_keeps_batchnorm_statistics():
  model = mlp.MLP(widths=(16, 8))
  x = jnp.ones((5, 3, 4))
  variables = model.init(jax.random.key(0), x)
  assert set(variables) == {"params", "batch_stats"}
  assert variables["params"]["dense_0"]["kernel"].shape == (12, 16)
  out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (5, 8) and out.dtype == jnp.float32 and float(out.min()) >= 0.0
  assert "norm_1" in updates["batch_stats"]


@pytest.mark.parametrize("method", ["scan", "swav", "deepcluster"])
def test_vectors_recipe_standardizes_and_scales_with_the_rows(method):
  small = configs.get_config(method, "table.csv", n=1_000, shape=(13,))
  large = configs.get_config(method, "table.csv", n=100_000, shape=(13,))
  assert small.recipe == "vectors" and small.standardize and small.backbone == "mlp"
  length = (lambda c: c.pretext.epochs) if method == "scan" else (lambda c: c.epochs)
  reference = length(configs.get_config(method, "table.csv", recipe="vectors"))
  assert length(small) == configs.epochs_for(reference, 10_000, 1_000) == 10 * reference
  assert length(large) == configs.epochs_for(reference, 10_000, 100_000) == reference // 10
  assert small.views.neighbors >= 1 and "crops" not in small and "augment" not in small


def test_the_views_of_one_setting_are_one_object_so_compiled_epochs_are_reused():
  from jaxclust.methods import online, scan_epochs
  a, b = (configs.get_config("swav", "t.npy", n=500, shape=(8,)) for _ in range(2))
  assert online.vector_views(a) is online.vector_views(b)
  b.views.noise = 0.3
  assert online.vector_views(a) is not online.vector_views(b)
  scan = configs.get_config("scan", "t.npy", n=500, shape=(8,))
  view = scan_epochs.view_options(scan)
  assert scan_epochs._views((8,), *view)[0] is scan_epochs._views((8,), *view)[0]


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
  from sklearn.datasets import load_wine
  x, y = load_wine(return_X_y=True)
  path = tmp_path_factory.mktemp("wine") / "wine.npz"
  np.savez(path, x=x.astype(np.float32), y=y)
  return str(path), x.astype(np.float32), y


TINY = {"scan": ["pretext.epochs=2", "pretext.warmup_epochs=1", "scan.epochs=2", "selflabel.epochs=1",
                 "pretext.batch_size=64", "scan.batch_size=64", "selflabel.batch_size=64", "scan.heads=2",
                 "mine.neighbors=5", "pretext.head_hidden=32", "pretext.head_out=16", "selflabel.threshold=0.3",
                 # the vector views in the SCAN stage too (the recipe trains the heads on frozen features)
                 "scan.update_backbone=true", "scan.augment=true"],
        "swav": ["epochs=2", "batch_size=64", "prototypes=10", "n_clusters=3", "head_hidden=32", "head_out=16",
                 "views.count=3"],
        "deepcluster": ["epochs=2", "batch_size=64", "prototypes=10", "n_clusters=3", "head_hidden=32",
                        "head_out=16", "views.count=3", "bank_crops=2"]}


@pytest.fixture(scope="module", params=["scan", "swav", "deepcluster"])
def fitted(request, wine, tmp_path_factory):
  """One tiny fit per method on the wine rows, shared by the checks."""
  path, x, y = wine
  method = request.param
  config = cli.make_config(method, path, settings=TINY[method] + ["mlp_widths=(32, 32)", "checkpoint_every=2"])
  workdir = tmp_path_factory.mktemp(method)
  summary = engine.fit(config, workdir, mesh=ONE_DEVICE, log=lambda _: None)
  return method, workdir, summary


def _labels(predicted):
  """The labels of :func:`jaxclust.engine.predict`'s answer (an array, or a result holding ``labels``)."""
  return np.asarray(getattr(predicted, "labels", predicted))


def test_tiny_fit_on_vectors_labels_every_row_and_predicts_new_rows(fitted, wine):
  method, workdir, summary = fitted
  _, x, y = wine
  labels = np.load(workdir / "labels.npy")
  assert labels.shape == (178,) and summary["k"] == 3 and summary["shape"] == [13]
  assert 0 <= labels.min() and labels.max() < 3 and np.isfinite(summary["nmi"])
  new = x[:25] * np.float32(1.01)  # rows the run never saw, on the original (unstandardized) scale
  predicted = _labels(engine.predict(workdir, new))
  assert predicted.shape == (25,) and 0 <= predicted.min() and predicted.max() < 3
  if method == "scan":  # the readout is the best head on every row: predict on the training rows repeats it
    np.testing.assert_array_equal(_labels(engine.predict(workdir, x)), labels)


def test_moco_pretext_trains_on_vector_views(wine, tmp_path):
  path, _, _ = wine
  config = cli.make_config("scan", path, settings=TINY["scan"] + [
      "pretext.method=moco", "pretext.queue_size=128", "mlp_widths=(32,)"])
  assert engine.fit(config, tmp_path, mesh=ONE_DEVICE, log=lambda _: None, stop_after="pretext") == {
      "stage": "pretext"}


@pytest.mark.parametrize("method, settings, message", [
    ("swav", ["input=tf.data"], "input='tf.data' is not offered for vector rows (backbone='mlp')"),
    ("scan", ["input=tf.data"], "input='tf.data' is not offered for vector rows (backbone='mlp')"),
    ("deepcluster", ["views.neighbors=178"], "views.neighbors=178 must be <= n_samples - 1=177"),
    ("swav", ["views.count=1"], "views.count=1 must be >= 2"),
    ("scan", ["backbone=small_cnn"], "backbone='small_cnn' trains on image crops, which vectors does not set"),
])
def test_impossible_vector_settings_are_one_line_errors(wine, tmp_path, capsys, method, settings, message):
  path, _, _ = wine
  args = ["fit", method, "--dataset", path, "--workdir", str(tmp_path / "w")]
  assert cli.main(args + [a for s in settings for a in ("--set", s)]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1, err
  assert not (tmp_path / "w").exists()


def test_image_recipes_refuse_vector_rows_and_the_mlp_refuses_image_recipes(wine):
  from jaxclust.data import sources
  from jaxclust.methods import scan, swav
  path, x, y = wine
  rows = sources.Dataset(x, y, path)
  for module in (scan, swav):
    config = configs.get_config(module.__name__.rsplit(".", 1)[1], path, recipe="small_images")
    with pytest.raises(ValueError, match=r"backbone='small_cnn' needs images \[n, H, W, C\]; .* has rows of "
                                         r"shape \(13,\): use --recipe vectors"):
      module.prepare(config, rows, ONE_DEVICE)
    config.backbone = "mlp"
    with pytest.raises(ValueError, match=r"backbone='mlp' trains on vector views, whose settings \(views.\*\) "
                                         "small_images does not have: choose --recipe vectors"):
      module.prepare(config, rows, ONE_DEVICE)
