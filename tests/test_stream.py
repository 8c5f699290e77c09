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


def split_in_order(data_dir):
  """The images (float32 in [0, 1]) and labels of :func:`stored_tfds`'s split in its stored order (tfds
  shuffled the records when it stored them), by tfds alone."""
  import tensorflow_datasets as tfds
  records = list(tfds.as_numpy(tfds.load("jaxclust_indexed", split="train", data_dir=str(data_dir))))
  return (np.stack([r["image"] for r in records]).astype(np.float32) / 255,
          np.asarray([r["label"] for r in records]))


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


# report=False: a run checked for training and resume; the report has its own tests (tests/test_report.py)
TINY_STREAM = ["epochs=2", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0", "input=tf.data",
               "report=False"]


def test_streamed_swav_trains_predicts_and_resumes_to_the_same_result(tmp_path):
  """jaxclust fit swav --set input=tf.data on digits: the log, exemplars and predict; SIGKILL after epoch 1
  (the queue in use), resume, same labels."""
  run_cli("swav", tmp_path / "reference", TINY_STREAM)
  reference = json.loads((tmp_path / "reference" / "summary.json").read_text())
  lines = [json.loads(l) for l in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in lines] == [1, 2]
  assert all(r["loss"] - r["loss_minus_ln_k"] == pytest.approx(np.log(10)) for r in lines)  # 10 prototypes
  assert not (tmp_path / "reference" / "report.html").exists()  # report=False
  assert not any("size_entropy" in r for r in lines)  # the streamed epochs log no dataset-wide usage
  assert all(0.0 < r["batch_spread"] < 1.0 for r in lines)  # but the spread of the steps' embeddings
  assert reference["n"] == 1797 and 0.0 < reference["acc"] <= 1.0
  labels = np.load(tmp_path / "reference" / "labels.npy")
  assert labels.shape == (1797,)
  # The final pass streams the images untransformed (8x8 crops of 8x8 digits): predict agrees.
  assert np.mean(engine.predict(tmp_path / "reference", sources.load("digits").x).labels == labels) >= 0.999
  with pytest.raises(ValueError, match="trained on"):
    engine.predict(tmp_path / "reference", sources.load("digits").x[:, :4, :4]).labels
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
  assert np.mean(engine.predict(tmp_path / "run", images).labels == labels) >= 0.999
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
  """jaxclust fit scan --set input=tf.data on an array in memory: the four stages on tf.data views (an
  array gives the SCAN stage its neighbours' images), the passes over the whole dataset streamed, no image
  on the devices; stopping after a stage and running again gives the uninterrupted run's labels (views
  depend on seed, stage, epoch and position)."""
  from test_scan_train import records, tiny_config
  c = tiny_config()
  c.input = "tf.data"
  c.pretext.epochs, c.scan.epochs, c.selflabel.epochs = 1, 2, 1
  views, passes = [], []  # every epoch of every stage draws its views from tf.data; every pass streams
  original_views, original_pass = stream.source_view_batches, stream.predict_in_order
  monkeypatch.setattr(stream, "source_view_batches", lambda source, **kw: views.append(
      kw.get("neighbors") is not None) or original_views(source, **kw))
  monkeypatch.setattr(stream, "predict_in_order", lambda *a, **kw: passes.append(1) or original_pass(*a, **kw))
  monkeypatch.setattr(parallel, "global_rows", lambda *a: pytest.fail("the images were placed on the devices"))
  whole = engine.fit(c, tmp_path / "whole", log=lambda _: None, mesh=ONE_DEVICE)
  assert views == [False, True, True, False]  # pretext, SCAN (neighbour pairs) x 2, self-labeling
  assert len(passes) == 5  # mining, the clusters after each SCAN and self-labeling epoch, the readout
  assert [r["stage"] for r in records(tmp_path / "whole")] == ["pretext", "mine", "scan", "scan", "selflabel"]
  assert 0.0 < whole["acc"] <= 1.0 and np.load(tmp_path / "whole" / "neighbors.npy").shape == (1797, 6)
  assert engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE, stop_after="scan") == {"stage": "scan"}
  split = engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE)
  np.testing.assert_array_equal(np.load(tmp_path / "split" / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  assert split["acc"] == whole["acc"]


def test_source_view_batches_stream_a_tfds_split_image_by_image(tmp_path):
  """View pairs of a stored tfds split: both views of a row from one image, every image once per epoch (the
  last batch padded and masked), the same views for the same (seed, epoch); neighbours refused."""
  source = stream.open_source(stored_tfds(tmp_path), data_dir=str(tmp_path))
  same = lambda image, seed: image
  run = lambda epoch, views=(same, same): list(stream.source_view_batches(
      source, views=views, batch_size=16, seed=0, epoch=epoch, mesh=ONE_DEVICE))
  batches = run(0)
  assert len(batches) == 4 and batches[0]["views"][0].shape == (16, 8, 8, 1)
  keep = np.concatenate([np.asarray(b["mask"]) for b in batches])
  assert keep.sum() == 50 and not keep[50:].any()
  index = np.concatenate([np.asarray(b["index"]) for b in batches])[keep]
  np.testing.assert_array_equal(np.sort(index), np.arange(50))
  images, _ = split_in_order(tmp_path)
  for view in (0, 1):  # both views of a row are its image's
    value = np.concatenate([np.asarray(b["views"][view]) for b in batches])[keep]
    np.testing.assert_allclose(value, images[index], atol=1e-6)
  again, other = run(0), run(1)
  np.testing.assert_array_equal(np.asarray(again[1]["index"]), np.asarray(batches[1]["index"]))
  assert not np.array_equal(np.asarray(other[0]["index"]), np.asarray(batches[0]["index"]))
  from jaxclust.data import augment_tf
  weak = lambda image, seed: augment_tf.simclr_view(image, seed, size=(8, 8), scale=(0.2, 1.0), flip_p=0.5)
  first, second = run(0, (weak, weak)), run(0, (weak, weak))
  np.testing.assert_array_equal(np.asarray(first[2]["views"][1]), np.asarray(second[2]["views"][1]))
  with pytest.raises(ValueError, match="only an in-memory array gives"):
    next(stream.source_view_batches(source, views=(same, same), batch_size=16, seed=0, epoch=0, mesh=ONE_DEVICE,
                                    neighbors=np.zeros((50, 3), np.int64)))


def _frozen_scan(dataset, data_dir):
  """The tiny SCAN settings with the heads on frozen features, streamed from ``dataset``."""
  from test_scan_train import tiny_config
  c = tiny_config()
  c.dataset, c.data_dir, c.input = dataset, str(data_dir), "tf.data"
  c.pretext.epochs, c.scan.epochs, c.selflabel.epochs = 1, 2, 1
  c.pretext.batch_size = c.scan.batch_size = c.selflabel.batch_size = 32
  c.scan.update_backbone, c.scan.augment = False, False
  return c


def test_scan_streams_a_tfds_dataset_never_loaded_whole(tmp_path, monkeypatch):
  """SCAN with the frozen-features recipe on a stored tfds dataset streamed (input=tf.data): every stage
  runs with nothing loaded whole (k from the label feature, the true labels from the readout's pass), and
  stopping after mining then running again gives the uninterrupted run's labels."""
  from test_scan_train import records
  name = stored_tfds(tmp_path / "tfds", n=64)
  monkeypatch.setattr(sources, "load", lambda *a, **kw: pytest.fail("the dataset was loaded whole"))
  c = _frozen_scan(name, tmp_path / "tfds")
  whole = engine.fit(c, tmp_path / "whole", log=lambda _: None, mesh=ONE_DEVICE)
  assert (whole["n"], whole["k"], whole["shape"]) == (64, 3, [8, 8, 1]) and 0.0 < whole["acc"] <= 1.0
  assert [r["stage"] for r in records(tmp_path / "whole")] == ["pretext", "mine", "scan", "scan", "selflabel"]
  assert "neighbor_accuracy" in records(tmp_path / "whole")[1]  # the labels of the mining pass
  assert np.load(tmp_path / "whole" / "neighbors.npy").shape == (64, 6)
  images, y = split_in_order(tmp_path / "tfds")
  np.testing.assert_array_equal(np.load(tmp_path / "whole" / "true_labels.npy"), y)
  labels = np.load(tmp_path / "whole" / "labels.npy")
  assert labels.shape == (64,) and (tmp_path / "whole" / "exemplars.png").exists()
  assert engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE, stop_after="mine") == {"stage": "mine"}
  engine.fit(c, tmp_path / "split", log=lambda _: None, mesh=ONE_DEVICE)
  np.testing.assert_array_equal(np.load(tmp_path / "split" / "labels.npy"), labels)
  np.testing.assert_array_equal(engine.predict(tmp_path / "whole", images).labels, labels)  # in the split's order


def test_scan_refuses_neighbour_images_from_a_tfds_stream(tmp_path):
  """The SCAN stage on the images of each image's neighbours needs rows at random: refused on a tfds
  stream before any work, naming the settings and what works."""
  c = _frozen_scan(stored_tfds(tmp_path / "tfds"), tmp_path / "tfds")
  for backbone, augment in ((True, True), (True, False), (False, True)):
    c.scan.update_backbone, c.scan.augment = backbone, augment
    with pytest.raises(ValueError, match=f"scan.update_backbone={backbone} and scan.augment={augment} train on the "
                       "images of each image's neighbours, which a stream cannot read at random: set "
                       "scan.update_backbone=False and scan.augment=False"):
      engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  assert not (tmp_path / "run").exists()


# The tiny settings of test_scan_train with the heads on frozen features, for a stored tfds dataset of 8x8 images
# (the small-image recipe, without its warm-up), without self-labeling: its compilation would be a
# fifth of each of the test's three processes (test_scan_streams_a_tfds_dataset_never_loaded_whole runs it).
STREAMED_SCAN = ["pretext.epochs=2", "scan.epochs=2", "selflabel.epochs=0", "backbone=small_cnn",
                 "cnn_channels=(8, 16)", "augment.flip_p=0.0", "pretext.head_hidden=32", "pretext.head_out=16",
                 "scan.heads=2", "mine.neighbors=5", "selflabel.threshold=0.15", "selflabel.strong_ops=1",
                 "pretext.batch_size=32", "scan.batch_size=32", "selflabel.batch_size=32", "scan.update_backbone=False",
                 "scan.augment=False", "input=tf.data", "pretext.warmup_epochs=0"]


def test_killed_streamed_scan_resumes_to_the_uninterrupted_result(tmp_path):
  """jaxclust fit scan on a stored tfds dataset streamed, SIGKILLed in the pretext (after epoch 1 of 2), then
  rerun: the uninterrupted run's labels (the views depend only on seed, stage, epoch and position). A run
  resumed after mining, whose neighbours come from neighbors.npy and whose features from a new pass over the
  stream, is test_scan_streams_a_tfds_dataset_never_loaded_whole's."""
  data = {"dataset": stored_tfds(tmp_path / "tfds", n=64), "data_dir": tmp_path / "tfds"}
  run_cli("scan", tmp_path / "whole", STREAMED_SCAN + ["report=False"], **data)
  workdir = tmp_path / "killed"
  kill_cli_run("scan", workdir, STREAMED_SCAN + ["report=False"], checkpoint=1, **data)
  run_cli("scan", workdir, STREAMED_SCAN + ["report=False"], **data)
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  stages = [json.loads(line)["stage"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert stages == ["pretext", "pretext", "mine", "scan", "scan"]
