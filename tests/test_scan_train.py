"""jaxclust fit scan (jaxclust.methods.scan on the engine): stages, resume after SIGKILL, predict,
exemplars, the CIFAR recipe on mock data."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import configs, engine, parallel, reporting
from jaxclust.methods import scan, scan_epochs

ONE_DEVICE = parallel.make_mesh(1)  # the kill-and-resume tests run on one device

TINY = ["pretext.epochs=2", "scan.epochs=3", "selflabel.epochs=2", "cnn_channels=(8, 16)", "scan.heads=2",
        "mine.neighbors=5", "selflabel.threshold=0.15", "pretext.batch_size=128", "scan.batch_size=128",
        "selflabel.batch_size=128", "selflabel.strong_ops=1"]


def tiny_config():
  c = configs.get_config("scan", "digits")
  c.pretext.epochs, c.scan.epochs, c.selflabel.epochs, c.cnn_channels, c.scan.heads = 2, 3, 2, (8, 16), 2
  c.mine.neighbors, c.selflabel.threshold = 5, 0.15  # low enough that self-labeling updates
  # One random op in the strong view, not 4: compiling the self-labeling step is much of a tiny run
  # (a tiny CLI run took 53 s with one op, 62 s with four, 2026-12-02); test_augment checks four.
  c.selflabel.strong_ops = 1
  return c


def records(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def digits_run(config, workdir=None):
  """An engine run of ``config`` on digits (1797 images 8x8x1, 10 clusters) on one device, not started."""
  return engine.Run(config, workdir, ONE_DEVICE, k=10, n=1797, shape=(8, 8, 1), rows=1797)


def templates(config) -> dict:
  """Each stage's state template on one device, by stage name."""
  run = digits_run(config)
  return {stage.name: stage.template(run) for stage in scan.stages(run)}


def restore(workdir, step, template):
  manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  manager.close()
  return state


def test_stages_run_in_order_and_stop_where_asked(tmp_path_factory):
  import chex
  # One device; the engine runs SCAN on the 8 test devices in the frozen-features test.
  from sklearn.datasets import load_digits
  c = tiny_config()
  c.keep_checkpoints = 1
  tmp_path = tmp_path_factory.mktemp("run")
  assert engine.fit(c, tmp_path, log=lambda _: None, mesh=ONE_DEVICE, stop_after="mine") == {"stage": "mine"}
  assert not (tmp_path / "summary.json").exists()
  assert [r["stage"] for r in records(tmp_path)] == ["pretext", "pretext", "mine"]
  mine = records(tmp_path)[-1]
  assert 0.0 < mine["neighbor_accuracy"] <= 1.0 and "kmeans_acc" in mine
  neighbors = np.load(tmp_path / "neighbors.npy")
  assert neighbors.shape == (1797, 6)
  assert np.mean(neighbors[:, 0] == np.arange(1797)) > 0.99  # column 0: the image itself (ties aside)
  # Mined on the pretext network's projection output, as the official code: brute-force cosine top-5
  # of the saved pretext network's outputs in numpy. Checkpoint 2 is mining's first save, which holds the
  # pretext's end (1 is the first pretext epoch).
  assert mine["features"] == "projection"
  images = (load_digits().images / 16.0).astype(np.float32)[..., None]
  model = scan_epochs.models(c, 10)["pretext"]
  pretext = restore(tmp_path, 2, templates(c)["pretext"])
  out = np.asarray(model.apply({"params": pretext.params, "batch_stats": pretext.batch_stats}, images))
  unit = out / np.linalg.norm(out, axis=1, keepdims=True)
  similarity = unit @ unit.T  # compared by similarity, so that near-ties may come in either order
  mined = np.take_along_axis(similarity, neighbors, axis=1)
  np.testing.assert_allclose(mined, -np.sort(-similarity, axis=1)[:, :6], atol=1e-5)
  # Another run starts from this run's pretext (pretext.init_from) with its own seed: the same pretext
  # network, so the same neighbours; fresh heads from its seed.
  branch_config = tiny_config()
  branch_config.seed, branch_config.pretext.init_from = 1, str(tmp_path)
  branch = tmp_path_factory.mktemp("branch")
  assert engine.fit(branch_config, branch, log=lambda _: None, mesh=ONE_DEVICE, stop_after="mine") == {"stage": "mine"}
  assert [r["stage"] for r in records(branch)] == ["mine"], "the pretext was trained again"
  # --stage pretext or mine on a run past them stops at once (each used to run the later stages).
  for name in ("pretext", "mine"):
    assert engine.fit(branch_config, branch, log=lambda _: None, mesh=ONE_DEVICE, stop_after=name) == {"stage": name}
  assert [r["stage"] for r in records(branch)] == ["mine"]
  np.testing.assert_array_equal(np.load(branch / "neighbors.npy"), neighbors)
  assert records(branch)[0]["neighbor_accuracy"] == mine["neighbor_accuracy"]
  theirs_pretext = restore(branch, 1, templates(c)["pretext"])  # the branch's first save: its mining's start
  chex.assert_trees_all_equal(theirs_pretext.params, pretext.params)
  chex.assert_trees_all_equal(theirs_pretext.batch_stats, pretext.batch_stats)
  summary = engine.fit(c, tmp_path, log=lambda _: None, mesh=ONE_DEVICE)
  # With keep_checkpoints=1 every stage's first save is still there: 2 pretext epochs (the second saved as
  # mining's start, 2), SCAN's start (3), 3 SCAN epochs (the third saved as self-labeling's start, 6), the
  # end (8).
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 3, 6, 8]
  stages = [r["stage"] for r in records(tmp_path)]
  assert stages.count("pretext") == 2 and stages.count("mine") == 1
  assert stages.count("scan") == 3 and stages.count("selflabel") == 2
  # The branch's SCAN stage would start from the same backbone (parameters and BatchNorm statistics) with
  # other heads: checkpoint 3 is this run's SCAN start; the branch's is made as its SCAN stage makes it.
  branch_run = digits_run(branch_config, branch)
  ours = restore(tmp_path, 3, templates(c)["scan"]).cluster
  theirs = scan.stages(branch_run)[2].init(branch_run, theirs_pretext).cluster
  chex.assert_trees_all_equal(ours.params["backbone"], theirs.params["backbone"])
  chex.assert_trees_all_equal(ours.batch_stats["backbone"], theirs.batch_stats["backbone"])
  assert not np.allclose(ours.params["head_0"]["kernel"], theirs.params["head_0"]["kernel"])
  assert 0.0 < summary["acc"] <= 1.0 and summary["best_head"] in (0, 1)
  assert (tmp_path / "exemplars.png").stat().st_size > 1000
  labels = np.load(tmp_path / "labels.npy")
  np.testing.assert_array_equal(engine.predict(tmp_path, images[:64]).labels, labels[:64])
  # Rows of 64 values are the run's 8x8x1 images whatever their shape (the engine reshapes them); other
  # rows are refused.
  np.testing.assert_array_equal(engine.predict(tmp_path, images[:64, ..., 0]).labels, labels[:64])
  with pytest.raises(ValueError, match=r"input has rows of shape \(4, 8, 1\) but the run .* trained on \(8, 8, 1\)"):
    engine.predict(tmp_path, images[:64, :4]).labels


@pytest.mark.parametrize("section, setting, value, message", [
    ("selflabel", "cutout", 1.5, r"selflabel.cutout=1.5 must be a finite number in \[0, 1\]"),
    ("selflabel", "strong_ops", -1, r"selflabel.strong_ops=-1 must be >= 0"),
    ("pretext", "batch_size", 0, r"pretext.batch_size=0 must be >= 1"),
    ("augment", "crop_scale", (0.5, 0.2), r"augment.crop_scale=\(0.5, 0.2\) must satisfy 0 < low <= high <= 1"),
    ("mine", "features", "head", r"mine.features='head' must be 'projection' or 'backbone'"),
    ("pretext", "warmup_epochs", 3, r"pretext.warmup_epochs=3 must be <= pretext.epochs=2")])
def test_bad_settings_fail_before_any_work(tmp_path, section, setting, value, message):
  config = tiny_config()
  config[section][setting] = value
  with pytest.raises(ValueError, match=message):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


def test_pretext_init_from_is_checked_before_any_work(tmp_path):
  config = tiny_config()
  config.pretext.init_from = str(tmp_path / "nothing")
  with pytest.raises(ValueError, match=r"pretext.init_from=.*nothing.*is not a SCAN, SimCLR or MoCo workdir"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  source = tmp_path / "source"
  (source / "checkpoints").mkdir(parents=True)
  other = tiny_config()
  other.cnn_channels = (8, 32)
  (source / "config.json").write_text(other.to_json())
  config.pretext.init_from = str(source)
  with pytest.raises(ValueError, match=r"pretext network differs from this one's in \['cnn_channels'\]"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  (source / "config.json").write_text(tiny_config().to_json())
  with pytest.raises(ValueError, match=r"has no finished pretext"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


def test_a_half_deleted_old_checkpoint_of_the_source_run_is_skipped(tmp_path):
  """Orbax deletes old checkpoints in the background; a source run killed meanwhile keeps a half-deleted one."""
  source = tmp_path / "source"
  (source / "checkpoints").mkdir(parents=True)
  (source / "config.json").write_text(tiny_config().to_json())
  manager = ocp.CheckpointManager(source / "checkpoints")
  metas = {1: {"stage": "pretext", "progress": 1}, 2: {"stage": "mine", "progress": 0},
           3: {"stage": "scan", "progress": 0}, 4: {"stage": "scan", "progress": 1}}
  for step, meta in metas.items():
    manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  manager.close()
  for part in (source / "checkpoints" / "3").iterdir():  # step 3 half deleted
    if part.is_dir():
      for file in part.iterdir():
        file.unlink()
  config = tiny_config()
  config.pretext.init_from = str(source)
  found, step = scan_epochs.pretext_source(config)
  found.close()
  assert step == 2  # mining's first save, the pretext's end


def test_pretext_warmup_starts_the_rate_at_zero():
  import jax.numpy as jnp
  config = tiny_config()
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.ones(3)}
  for warmup, first_step_moves in ((0, True), (1, False)):
    config.pretext.warmup_epochs = warmup
    tx = scan_epochs.pretext_tx(config, 1797)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert bool(jnp.any(updates["w"] != 0)) == first_step_moves


def test_scan_on_frozen_features_trains_as_the_heads_on_unaugmented_images_and_warns_when_none_is_confident(
    tmp_path):
  import chex
  import jax
  import jax.numpy as jnp
  from sklearn.datasets import load_digits
  config = tiny_config()
  config.scan.update_backbone, config.scan.augment = False, False
  model = scan_epochs.models(config, 10)["cluster"]
  x = jnp.asarray((load_digits().images / 16.0).astype(np.float32)[..., None])
  n = x.shape[0]
  state = templates(config)["scan"].cluster
  neighbors = jnp.asarray(np.random.default_rng(0).integers(0, n, (n, 6)))
  tx = scan_epochs.scan_tx(config)
  on_images = scan_epochs.scan_epoch(model, tx, 128, n, (8, 8, 1), 5.0, False, False,
                                     scan_epochs.view_options(config), None)
  features = scan_epochs.features(model, {"params": state.params, "batch_stats": state.batch_stats}, x, n, 512)
  assert float(jnp.std(features)) > 1e-3
  on_features = scan_epochs.scan_feature_epoch(model, tx, 128, n, 5.0, None)
  copy = lambda tree: jax.tree.map(jnp.array, tree)
  new_i, m_i = on_images(copy(state), x, neighbors, jax.random.key(3))
  new_f, m_f = on_features(copy(state), features, neighbors, jax.random.key(3))
  np.testing.assert_allclose(m_f["head_loss"], m_i["head_loss"], rtol=1e-4)
  chex.assert_trees_all_close(new_f.params, new_i.params, rtol=1e-3, atol=1e-5)
  assert not np.allclose(new_f.params["head_0"]["kernel"], state.params["head_0"]["kernel"])
  # Row-sharded features and state on 8 devices train the same heads.
  from jax.sharding import NamedSharding, PartitionSpec as P
  mesh = parallel.make_mesh()
  sharded_features, _ = parallel.global_rows(np.asarray(features), mesh)
  on_8 = scan_epochs.scan_feature_epoch(model, tx, 128, n, 5.0, NamedSharding(mesh, P("data")))
  new_8, m_8 = on_8(parallel.put(jax.tree.map(np.asarray, state), mesh), sharded_features,
                    parallel.put(np.asarray(neighbors), mesh), jax.random.key(3))
  np.testing.assert_allclose(m_8["head_loss"], m_f["head_loss"], rtol=1e-4)
  chex.assert_trees_all_close(new_8.params, new_f.params, rtol=1e-3, atol=1e-5)
  # A run takes the features path, here on the 8 test devices (the one SCAN run on 8); with a threshold
  # no image passes, self-labeling warns and leaves the model unchanged.
  config.selflabel.threshold = 0.999999
  with pytest.warns(UserWarning, match="no image passed the confidence threshold"):
    summary = engine.fit(config, tmp_path, log=lambda _: None)
  rs = records(tmp_path)
  assert [r["stage"] for r in rs].count("scan") == 3 and 0.0 < summary["acc"] <= 1.0
  last_scan, selflabel = [r for r in rs if r["stage"] == "scan"][-1], [r for r in rs if r["stage"] == "selflabel"]
  assert len(selflabel) == 2 and summary["devices"] == 8
  assert all(r["confident"] == 0.0 and r["warning"] == "no confident samples" for r in selflabel)
  assert all(r["acc"] == last_scan["acc"] and r["size_entropy"] == last_scan["size_entropy"] for r in selflabel)


def test_killed_scan_run_resumes_to_the_uninterrupted_result(tmp_path):
  # Reference and resumed run in the same kind of process (see conftest.run_cli): one label of a
  # near-tie flipped when the reference ran in the test process, whose XLA client has 8 devices.
  run_cli("scan", tmp_path / "reference", TINY + ["report=False"])
  reference = json.loads((tmp_path / "reference" / "summary.json").read_text())
  workdir = tmp_path / "killed"
  # saves 1: pretext epoch 1; 2: the pretext's end (mining's start); 3: SCAN's start; 4-5: SCAN epochs 1-2;
  # 6: self-labeling's start (SCAN's end); 7: self-labeling epoch 1; 8: the end. Killed in each stage
  # that trains, each time resumed from the last kill.
  for checkpoint in (1, 4, 7):
    kill_cli_run("scan", workdir, TINY + ["report=False"], checkpoint=checkpoint)
  run_cli("scan", workdir, TINY + ["report=False"])
  resumed = json.loads((workdir / "summary.json").read_text())
  assert [r.get("epoch") for r in records(workdir) if r["stage"] == "pretext"].count(1) == 1, \
      "the pretext's first epoch was trained again"
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), np.load(tmp_path / "reference" / "labels.npy"))
  assert resumed["acc"] == reference["acc"]
  once = {(r["stage"], r.get("epoch")): r["seconds"] for r in records(workdir) if "seconds" in r}
  assert len(once) == 2 + 3 + 2 and resumed["train_seconds"] == pytest.approx(sum(once.values()))


def test_scan_with_a_cnn_refuses_tabular_data(tmp_path):
  """Tabular rows train with the MLP backbone (the vectors recipe: tests/test_vectors.py), never a CNN."""
  np.savez(tmp_path / "table.npz", x=np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
  config = tiny_config()
  config.dataset, config.n_clusters = str(tmp_path / "table.npz"), 3
  with pytest.raises(ValueError, match=r"scan with backbone='small_cnn' needs images \[n, H, W, C\]; .* has rows "
                                       r"of shape \(4,\): use --recipe vectors"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


def test_a_streamed_tfds_dataset_is_refused_for_neighbour_images_before_any_work(tmp_path):
  # The engine opens a tfds dataset with input="tf.data" as a stream, never loaded whole: a SCAN stage on the
  # images of each image's neighbours needs rows at random (tests/test_stream.py runs the frozen-features one).
  import tensorflow_datasets as tfds
  config = tiny_config()
  config.dataset, config.input = "tfds:cifar10", "tf.data"
  with tfds.testing.mock_data(num_examples=40), pytest.raises(ValueError, match="which a stream cannot read at random"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dataset, stem, image", [("tfds:cifar10", "cifar", 32), ("tfds:cifar100_20", "cifar", 32),
                                                  ("tfds:stl10", "imagenet", 96)])
def test_paper_recipes(dataset, stem, image):
  """The official SCAN settings; the recipes run end to end in experiments/scan_recipes_mock.py (minutes)."""
  import jax
  import jax.numpy as jnp
  config = configs.get_config("scan", dataset)
  assert (config.backbone, config.stem, config.pretext.batch_size, config.pretext.epochs, config.pretext.temperature,
          config.scan.epochs, config.scan.entropy_weight, config.scan.heads, config.mine.neighbors,
          config.selflabel.epochs, config.selflabel.threshold) == (
              "resnet18", stem, 512, 500, 0.1, 50, 5.0, 10, 20, 200, 0.99)
  models = scan_epochs.models(config, 10)
  shapes = jax.eval_shape(models["cluster"].init, jax.random.key(0), jnp.zeros((2, image, image, 3)))
  assert jax.eval_shape(lambda v: models["cluster"].apply(v, jnp.zeros((2, image, image, 3))), shapes).shape == (
      10, 2, 10)


def test_cifar100_20_loads_superclasses():
  import tensorflow_datasets as tfds
  from jaxclust.data import sources
  with tfds.testing.mock_data(num_examples=40):
    data = sources.load("tfds:cifar100_20")
  assert data.x.shape == (40, 32, 32, 3) and data.y.max() < 20


def test_moco_pretext_is_checkpointed_with_its_queue(tmp_path):
  config = tiny_config()
  config.pretext.method, config.pretext.queue_size, config.pretext.temperature = "moco", 512, 0.2
  # Up to mining, whose first save (2, the latest) holds the pretext's end: the engine saves a stage's last
  # epoch as the next stage's start.
  assert engine.fit(config, tmp_path, log=lambda _: None, stop_after="mine") == {"stage": "mine"}
  state = restore(tmp_path, 2, templates(config)["pretext"])
  # 2 epochs of ceil(1797 / 128) = 15 batches of 128 keys went through a 512-key queue.
  assert int(state.step) == 30 and int(state.queue_ptr) == (30 * 128) % 512
  assert not np.allclose(jax.tree.leaves(state.key_params)[0], jax.tree.leaves(state.params)[0])
  config.pretext.queue_size = 500
  with pytest.raises(ValueError, match="queue_size=500 must be a multiple of pretext.batch_size=128"):
    engine.fit(config, tmp_path / "other", log=lambda _: None)
  assert not (tmp_path / "other").exists()


def test_exemplar_grid_places_each_clusters_most_confident_images_in_its_row():
  rng = np.random.default_rng(0)
  images, labels, confidence = rng.random((30, 3, 2, 1)), rng.integers(0, 4, 30), rng.random(30)
  labels[labels == 2] = 0  # cluster 2 empty: its row stays white
  grid = reporting.exemplar_grid(images, labels, confidence, k=4, per_cluster=3)
  assert grid.shape == (4 * 5, 3 * 4, 3)
  for c in range(4):
    ranked = sorted((i for i in range(30) if labels[i] == c), key=lambda i: -confidence[i])
    for j in range(3):
      tile = grid[c * 5 + 1:c * 5 + 4, j * 4 + 1:j * 4 + 3]
      expected = np.repeat(images[ranked[j]], 3, axis=-1) if j < len(ranked) else np.ones((3, 2, 3))
      np.testing.assert_allclose(tile, expected, rtol=1e-6)
  frame = np.ones(grid.shape[:2], bool)
  for c in range(4):
    for j in range(3):
      frame[c * 5 + 1:c * 5 + 4, j * 4 + 1:j * 4 + 3] = False
  assert np.all(grid[frame] == 1.0)
