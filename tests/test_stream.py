"""Streaming input (jaxclust.data.stream) and SwAV trained on it: order, coverage, determinism, resume."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import configs, engine, parallel
from jaxclust.data import sources, stream

ONE_DEVICE = parallel.make_mesh(1)
CROPS = ((2, 8, (0.5, 1.0)), (3, 6, (0.3, 0.6)))


def indexed_images(n=50, size=8):
  """Image i is constant i / n, so a batch row tells which image it came from."""
  return np.repeat((np.arange(n, dtype=np.float32) / n)[:, None, None, None], size * size, 1).reshape(n, size, size, 1)


def stored_tfds(data_dir, n=50, size=8) -> str:
  """Writes a real tensorflow-datasets dataset ``jaxclust_indexed`` (record i: image of constant 5 * i,
  label i % 3) under ``data_dir``. Unlike ``tfds.testing.mock_data`` its subsplits are real, so
  ``tfds.split_for_jax_process`` gives each process its own block. Returns the jaxclust dataset name."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  images = np.repeat((5 * np.arange(n, dtype=np.uint8))[:, None, None, None], size * size, 1)
  records = tf.data.Dataset.from_tensor_slices({"image": images.reshape(n, size, size, 1), "label": np.arange(n) % 3})
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(size, size, 1)),
                                         "label": tfds.features.ClassLabel(num_classes=3)})
  tfds.dataset_builders.store_as_tfds_dataset(name="jaxclust_indexed", version="1.0.0", data_dir=str(data_dir),
                                              features=features, split_datasets={"train": records})
  return "tfds:jaxclust_indexed:train"


def test_multi_crop_epochs_are_full_batches_deterministic_per_epoch():
  source = stream.open_source(sources.Dataset(indexed_images(), np.arange(50) % 3, "indexed"))
  run = lambda seed, epoch: list(stream.multi_crop_batches(source, crops=CROPS, batch_size=16, seed=seed,
                                                           epoch=epoch, mesh=ONE_DEVICE, flip_p=0.5, jitter_p=0.0))
  first = run(0, 0)
  assert len(first) == 50 // 16  # the remainder is dropped
  assert [v.shape for v in first[0]] == [(16, 8, 8, 1)] * 2 + [(16, 6, 6, 1)] * 3
  for a, b in zip(first, run(0, 0)):
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)
  # Without colour jitter every crop of image i is the constant i / 50: the five crops of a row come
  # from one image, and an epoch shows 48 different images.
  crops = [np.concatenate([np.asarray(batch[j]) for batch in first]) for j in range(5)]
  value = crops[0][:, 0, 0, 0]
  for crop in crops:
    np.testing.assert_allclose(crop, value[:, None, None, None] * np.ones_like(crop), atol=1e-6)
  assert len(np.unique(np.round(value * 50))) == 48
  assert not np.array_equal(np.asarray(first[0][0]), np.asarray(run(0, 1)[0][0]))  # reshuffled per epoch
  assert not np.array_equal(np.asarray(first[0][0]), np.asarray(run(1, 0)[0][0]))


def test_eval_batches_cover_every_image_once_in_order():
  x, y = indexed_images(), np.arange(50) % 3
  source = stream.open_source(sources.Dataset(x, y, "indexed"))
  batches = list(stream.eval_batches(source, size=8, batch_size=16, mesh=ONE_DEVICE))
  assert len(batches) == 4
  keep = np.concatenate([np.asarray(b["mask"]) for b in batches])
  images = np.concatenate([np.asarray(b["image"]) for b in batches])[keep]
  np.testing.assert_array_equal(images, x)
  np.testing.assert_array_equal(np.concatenate([np.asarray(b["label"]) for b in batches])[keep], y)
  assert keep.sum() == 50 and not keep[50:].any()


def test_eval_transform_resizes_the_shorter_side_and_centre_crops():
  x = np.zeros((3, 20, 40, 1), np.float32)
  x[:, :, 18:22] = 1.0  # a vertical bar in the middle
  source = stream.open_source(sources.Dataset(x, None, "bars"))
  image = np.asarray(next(stream.eval_batches(source, size=8, batch_size=4, mesh=ONE_DEVICE))["image"])[0, ..., 0]
  # shorter side 20 -> ceil(8 / 0.875) = 10, so 10 x 20, centre 8 x 8: the bar (2 of 20 columns wide
  # after resizing) sits in the middle columns.
  assert image.shape == (8, 8)
  assert image[:, 3:5].mean() > 0.8 and image[:, [0, 7]].max() < 0.05  # 0.875: antialiased


def test_missing_tfds_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match="'no_such_dataset_xyz'.*never downloads"):
    stream.open_source("tfds:no_such_dataset_xyz")
  with pytest.raises(ValueError, match="streaming reads 'tfds:NAME"):
    stream.open_source("mnist")


TINY_STREAM = ["epochs=2", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0", "input=tf.data"]


def test_streamed_swav_trains_predicts_and_resumes_to_the_same_result(tmp_path):
  """jaxclust fit swav --set input=tf.data on digits: the log, exemplars and predict; SIGKILL after epoch 1
  (the queue in use), resume, same labels."""
  run_cli("swav", tmp_path / "reference", TINY_STREAM)
  reference = json.loads((tmp_path / "reference" / "summary.json").read_text())
  lines = [json.loads(l) for l in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in lines] == [1, 2]
  assert all(r["loss"] - r["loss_minus_ln_k"] == pytest.approx(np.log(10)) for r in lines)  # 10 prototypes
  assert (tmp_path / "reference" / "exemplars.png").exists()
  assert not any("size_entropy" in r for r in lines)  # the streamed epochs log no dataset-wide usage
  assert all(0.0 < r["batch_spread"] < 1.0 for r in lines)  # but the spread of the steps' embeddings
  assert reference["n"] == 1797 and 0.0 < reference["acc"] <= 1.0
  labels = np.load(tmp_path / "reference" / "labels.npy")
  assert labels.shape == (1797,)
  # The final pass streams the images untransformed (8x8 crops of 8x8 digits): predict agrees.
  assert np.mean(engine.predict(tmp_path / "reference", sources.load("digits").x) == labels) >= 0.999
  with pytest.raises(ValueError, match="trained on"):
    engine.predict(tmp_path / "reference", sources.load("digits").x[:, :4, :4])
  workdir = tmp_path / "killed"
  kill_cli_run("swav", workdir, TINY_STREAM, checkpoint=1)
  run_cli("swav", workdir, TINY_STREAM)
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), labels)
  assert json.loads((workdir / "summary.json").read_text())["acc"] == reference["acc"]


def test_streamed_swav_reads_out_neighbour_groups_as_the_device_path_does(tmp_path):
  """readout="knn" after a streamed run: the final streamed pass groups the prototypes as the on-device
  readout of the same checkpoint does, and predict uses the groups."""
  from sklearn.metrics import adjusted_rand_score
  c = configs.get_config("swav", "digits")
  c.epochs, c.cnn_channels, c.queue_length, c.input = 1, (8, 16), 0, "tf.data"
  c.prototypes, c.n_clusters, c.readout, c.readout_neighbors = 30, 10, "knn", 5
  engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  groups, labels = np.load(tmp_path / "run" / "groups.npy"), np.load(tmp_path / "run" / "labels.npy")
  assert not (tmp_path / "run" / "centroids.npy").exists()
  images = np.asarray(sources.load("digits").x, np.float32)
  assert np.mean(engine.predict(tmp_path / "run", images) == labels) >= 0.999
  from jaxclust.methods import online, swav
  from test_online_train import final_state
  state = final_state(tmp_path / "run")
  device_labels, device = online.labels(c, swav.scorer(c), state, jnp.asarray(images), 1797, 10)
  assert adjusted_rand_score(device["groups"], groups) == 1.0
  assert np.mean(device_labels == labels) >= 0.999


def test_imagenet_recipe_streams_mock_imagenet_end_to_end(tmp_path):
  """The ImageNet recipe (LARS, queue, frozen prototypes, 2 large + 6 small crops) on mock
  tfds ImageNet of varying image sizes, streamed; the network and crops shrunk to fit the CPU."""
  import tensorflow_datasets as tfds
  c = configs.get_config("swav", "tfds:imagenet2012")
  c.input, c.backbone, c.cnn_channels = "tf.data", "small_cnn", (8, 16)
  c.crops = ((2, 32, (0.14, 1.0)), (6, 16, (0.05, 0.14)))
  c.batch_size, c.epochs, c.prototypes, c.n_clusters = 8, 2, 20, 5
  c.queue_length, c.queue_start_epoch, c.freeze_prototypes_steps, c.warmup_epochs = 16, 1, 2, 1
  # One save, at the end: tfds' mock patches file access while it opens a dataset, which would catch
  # an asynchronous orbax save still writing when the next epoch opens its stream.
  c.checkpoint_every = 2
  with tfds.testing.mock_data(num_examples=40):
    summary = engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  assert (summary["n"], summary["k"], summary["prototypes"], summary["shape"]) == (40, 5, 20, [32, 32, 3])
  assert 0.0 < summary["acc"] <= 1.0  # mock labels: a smoke value, not a result
  assert np.load(tmp_path / "run" / "labels.npy").shape == (40,)
  assert np.load(tmp_path / "run" / "centroids.npy").shape == (5, c.head_out)
  assert (tmp_path / "run" / "exemplars.png").exists()


def test_input_is_device_or_tf_data(tmp_path):
  c = configs.get_config("deepcluster", "digits")
  c.input = "disk"
  with pytest.raises(ValueError, match="input='disk' must be"):
    engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)


def test_view_batches_cover_every_image_once_and_draw_neighbours():
  from jaxclust.data import augment_tf
  x = indexed_images()
  neighbors = np.stack([np.arange(50)] + [(np.arange(50) + d) % 50 for d in (1, 2, 3)], 1)  # self, then 3
  same = lambda image, seed: image  # identity views show which image they came from
  run = lambda epoch: list(stream.view_batches(x, views=(same, same), batch_size=16, seed=0, epoch=epoch,
                                               mesh=ONE_DEVICE, neighbors=neighbors))
  batches = run(0)
  assert len(batches) == 4
  keep = np.concatenate([np.asarray(b["mask"]) for b in batches])
  index = np.concatenate([np.asarray(b["index"]) for b in batches])[keep]
  np.testing.assert_array_equal(np.sort(index), np.arange(50))
  first = np.concatenate([np.asarray(b["views"][0])[:, 0, 0, 0] for b in batches])[keep]
  second = np.concatenate([np.asarray(b["views"][1])[:, 0, 0, 0] for b in batches])[keep]
  np.testing.assert_allclose(first * 50, index, atol=1e-4)
  offset = np.round(second * 50 - index).astype(int) % 50
  assert set(offset) == {1, 2, 3}  # a neighbour, never the image itself, all columns drawn
  again = run(0)
  np.testing.assert_array_equal(np.asarray(again[0]["index"]), np.asarray(batches[0]["index"]))
  np.testing.assert_array_equal(np.asarray(again[0]["views"][1]), np.asarray(batches[0]["views"][1]))
  assert not np.array_equal(np.asarray(run(1)[0]["index"]), np.asarray(batches[0]["index"]))
  weak = lambda image, seed: augment_tf.simclr_view(image, seed, size=(8, 8), scale=(0.5, 1.0), flip_p=0.0)
  views = next(stream.view_batches(x, views=(weak, weak), batch_size=16, seed=0, epoch=0, mesh=ONE_DEVICE))["views"]
  assert views[0].shape == views[1].shape == (16, 8, 8, 1) and not np.array_equal(views[0], views[1])


def test_scan_with_host_views_runs_every_stage_and_resumes_between_stages(tmp_path, monkeypatch):
  """jaxclust fit scan --set input=tf.data: the four stages on tf.data views; stopping after a stage
  and running again gives the uninterrupted run's labels (views depend on seed, stage and epoch)."""
  from jaxclust import engine
  from test_scan_train import records, tiny_config
  c = tiny_config()
  c.input = "tf.data"
  c.pretext.epochs, c.scan.epochs, c.selflabel.epochs = 1, 2, 1
  calls = []  # every epoch of every stage draws its views from tf.data
  original = stream.view_batches
  monkeypatch.setattr(stream, "view_batches", lambda x, **kw: calls.append(kw.get("neighbors") is not None) or
                      original(x, **kw))
  whole = engine.fit(c, tmp_path / "whole", log=lambda _: None, mesh=ONE_DEVICE)
  assert calls == [False, True, True, False]  # pretext, SCAN (neighbour pairs) x 2, self-labeling
  assert [r["stage"] for r in records(tmp_path / "whole")] == ["pretext", "mine", "scan", "scan", "selflabel"]
  assert 0.0 < whole["acc"] <= 1.0
  assert engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE, stop_after="scan") == {"stage": "scan"}
  split = engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE)
  np.testing.assert_array_equal(np.load(tmp_path / "split" / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  assert split["acc"] == whole["acc"]
