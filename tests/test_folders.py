"""Image folders (jaxclust/data/folders.py): PNG/JPEG files read, resized and labelled by their class folders,
loaded whole or streamed, and every way a folder can be bad."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxclust import cli, engine, parallel
from jaxclust.data import folders, pipeline, sources, stream

ONE_DEVICE = parallel.make_mesh(1)
# DEC in seconds on 30 tiny images.
TINY = ["pretrain.epochs=2", "hidden=(16,)", "latent=4", "cluster.max_steps=6", "cluster.update_interval=2",
        "cluster.kmeans_n_init=1", "pretrain.batch_size=8", "cluster.batch_size=8"]


def draw(rng, shape, level):
  return np.clip(rng.normal(level, 25, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Two class folders of 12x10 images (dark "cats", light "dogs"; gray PNG, RGB PNG, RGBA PNG, JPEG), one
  24x20 image of one colour, a truncated JPEG, a text file and hidden files (ignored)."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for name, level in (("cats", 60), ("dogs", 190)):
    (root / name).mkdir()
    for i in range(15):
      kind = i % 4
      if kind == 0:
        Image.fromarray(draw(rng, (12, 10), level), "L").save(root / name / f"{i:02d}.png")
      elif kind == 1:
        Image.fromarray(draw(rng, (12, 10, 3), level)).save(root / name / f"{i:02d}.png")
      elif kind == 2:
        Image.fromarray(draw(rng, (12, 10, 4), level), "RGBA").save(root / name / f"{i:02d}.png")
      else:
        Image.fromarray(draw(rng, (12, 10, 3), level)).save(root / name / f"{i:02d}.jpg", quality=95)
  Image.fromarray(np.full((24, 20, 3), (10, 200, 90), np.uint8)).save(root / "dogs" / "big.png")
  (root / "dogs" / "cut.jpg").write_bytes((root / "dogs" / "03.jpg").read_bytes()[:150])  # a copy that stopped early
  (root / "notes.txt").write_text("not an image")
  (root / ".hidden.png").write_bytes(b"junk")
  (root / "cats" / "._01.png").write_bytes(b"junk")  # macOS metadata beside a copied file
  return root


def test_listing_labels_the_class_folders_in_sorted_order(folder):
  found = folders.listing(folder)
  assert found.classes == ("cats", "dogs") and found.ignored == 1
  assert len(found.files) == 32 and found.files == tuple(sorted(found.files))
  np.testing.assert_array_equal(found.labels, [0] * 15 + [1] * 17)


def test_describe_is_a_listing_and_a_few_headers(folder, monkeypatch):
  monkeypatch.setattr(pipeline, "tensorflow", lambda: pytest.fail("describe decoded images"))
  assert sources.describe(str(folder)) == (32, (12, 10, 3))  # the size most images have; RGB
  assert sources.describe(str(folder), image_size=40) == (32, (40, 40, 3))


def test_loaded_images_are_rgb_in_0_1_resized_and_bad_files_named_or_skipped(folder):
  with pytest.raises(ValueError, match=r"image file \S*dogs/cut.jpg cannot be read: .*--skip-bad-files"):
    sources.load(str(folder))
  data = sources.load(str(folder), skip_bad_files=True)
  assert data.x.shape == (31, 12, 10, 3) and data.x.dtype == np.float32
  np.testing.assert_array_equal(data.y, [0] * 15 + [1] * 16)
  assert data.info["classes"] == ["cats", "dogs"] and data.info["skipped_files"] == 1
  assert data.info["skipped_examples"] == [str(folder / "dogs" / "cut.jpg")]
  files = folders.listing(folder).files
  gray, rgb, rgba = (np.asarray(Image.open(files[i]), np.float32) / 255 for i in range(3))
  # TensorFlow scales by multiplying with 1 / 255: within a float32 rounding of the division.
  np.testing.assert_allclose(data.x[0], np.repeat(gray[..., None], 3, -1), rtol=1e-6)  # gray: its channel 3 times
  np.testing.assert_allclose(data.x[1], rgb, rtol=1e-6)
  np.testing.assert_allclose(data.x[2], rgba[..., :3], rtol=1e-6)  # alpha dropped
  big = files.index(str(folder / "dogs" / "big.png"))
  np.testing.assert_allclose(data.x[big], np.broadcast_to(np.float32([10, 200, 90]) / 255, (12, 10, 3)), atol=1e-6)
  assert abs(data.x[:15].mean() - 60 / 255) < 0.03 and abs(data.x[15:30].mean() - 190 / 255) < 0.03
  assert sources.load(str(folder), skip_bad_files=True, image_size=6).x.shape == (31, 6, 6, 3)


def test_a_streamed_folder_reads_the_rows_loaded_whole(folder):
  data = sources.load(str(folder), skip_bad_files=True)
  source = stream.open_source(str(folder), skip_bad_files=True)
  assert (source.n, source.shape, stream.classes(source)) == (31, (12, 10, 3), 2)
  assert source.info == data.info and source.array is None
  (rows,), truth, _ = stream.predict_in_order(lambda x: (x,), source, size=None, batch_size=8, mesh=ONE_DEVICE)
  np.testing.assert_array_equal(rows, data.x)
  np.testing.assert_array_equal(truth, data.y)
  batches = list(stream.row_batches(source, batch_size=8, seed=0, epoch=0, mesh=ONE_DEVICE))
  index = np.concatenate([np.asarray(b["index"])[np.asarray(b["mask"])] for b in batches])
  np.testing.assert_array_equal(np.sort(index), np.arange(31))  # every image once, in a shuffled order
  assert not np.array_equal(index, np.arange(31))
  x = np.concatenate([np.asarray(b["x"])[np.asarray(b["mask"])] for b in batches])
  np.testing.assert_array_equal(x, data.x[index])


def bad_folder(kind, root):
  if kind == "empty":
    return root
  if kind == "no images":
    (root / "a.txt").write_text("x")
    (root / "sub").mkdir()
    (root / "sub" / "b.csv").write_text("1")
    return root
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "top.png")
  if kind == "top and classes":
    (root / "cats").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "cats" / "a.png")
  if kind == "all bad":
    (root / "top.png").write_bytes(b"\x89PNG\r\n\x1a\n")
  return root


@pytest.mark.parametrize("kind, kwargs, message", [
    ("empty", {}, r"image folder \S+ is empty"),
    ("no images", {}, r"image folder \S+ holds no images \(.png, .jpg.*\), only 2 other files"),
    ("top and classes", {}, r"has images both at its top level \(e.g. top.png\) and in subfolders \(cats\)"),
    ("all bad", {}, r"none of the 1 images sampled for the size could be read, e.g. \S*top.png; set image_size"),
    ("all bad", {"skip_bad_files": True, "image_size": 8}, r"none of its 1 images can be read, e.g. \S*top.png"),
    ("all bad", {"image_size": 8}, r"image file \S*top.png cannot be read"),
    ("one", {"image_size": -1}, r"image_size=-1 must be an integer >= 0"),
])
def test_a_bad_folder_is_one_error_naming_it(tmp_path, kind, kwargs, message):
  root = bad_folder(kind, tmp_path)
  with pytest.raises(ValueError, match=message):
    sources.load(str(root), **kwargs)


def test_cli_fit_on_a_folder_says_its_classes_and_skipped_files_then_predicts(folder, tmp_path, capsys):
  workdir = tmp_path / "run"
  assert cli.main(["fit", "dec", "--dataset", str(folder), "--workdir", str(workdir)]) == 2  # the bad file
  assert "cut.jpg cannot be read" in capsys.readouterr().err and not workdir.exists()
  assert cli.main(["fit", "dec", "--dataset", str(folder), "--workdir", str(workdir), "--skip-bad-files",
                   *[f"--set={s}" for s in TINY]]) == 0
  out = capsys.readouterr().out
  assert "labels from 2 class folders: 0=cats, 1=dogs; skipped 1 unreadable file" in out, out
  summary = json.loads((workdir / "summary.json").read_text())
  assert (summary["n"], summary["shape"], summary["classes"], summary["skipped_files"]) == (31, [12, 10, 3],
                                                                                           ["cats", "dogs"], 1)
  assert summary["acc"] > 0.9  # dark and light images
  np.testing.assert_array_equal(np.load(workdir / "true_labels.npy"), [0] * 15 + [1] * 16)
  good = tmp_path / "good"  # predict reads a folder at the run's size (its unreadable file removed)
  (good / "x").mkdir(parents=True)
  for name in ("00.png", "01.png", "03.jpg", "big.png"):
    (good / "x" / name).write_bytes((folder / ("dogs" if name == "big.png" else "cats") / name).read_bytes())
  assert cli.main(["predict", "--workdir", str(workdir), "--input", str(good), "--output", str(tmp_path / "p.npy")]) == 0
  labels = np.load(workdir / "labels.npy")
  np.testing.assert_array_equal(np.load(tmp_path / "p.npy")["label"][:3], labels[[0, 1, 3]])


def test_a_streamed_folder_is_opened_not_loaded_and_takes_labels_from_a_file(folder, tmp_path, monkeypatch):
  """input=tf.data: fit reads the folder file by file (a Source; its rows are checked above); --labels replaces
  the class folders' labels, and labels of another length stop the run before its workdir is made."""
  (tmp_path / "y.csv").write_text("class\n" + "".join(f"{i % 3}\n" for i in range(31)))
  config = cli.make_config("dec", str(folder), settings=[*TINY, "input=tf.data", "skip_bad_files=true",
                                                         f"labels={tmp_path / 'y.csv'}"])
  monkeypatch.setattr(sources, "load", lambda *a, **k: pytest.fail("a streamed folder was loaded whole"))
  data = engine._data(config, None)  # pylint: disable=protected-access
  assert isinstance(data, stream.Source) and data.n == 31 and data.info["skipped_files"] == 1
  np.testing.assert_array_equal(data.y, np.arange(31) % 3)
  assert stream.classes(data) == 3  # n_clusters=0 finds 3 clusters
  (tmp_path / "short.csv").write_text("".join(f"{i % 3}\n" for i in range(30)))
  config.labels = str(tmp_path / "short.csv")
  with pytest.raises(ValueError, match=r"labels file \S*short.csv has 30 labels but dataset \S+ has 31 rows"):
    engine.fit(config, tmp_path / "other", log=lambda _: None, mesh=ONE_DEVICE)
  assert not (tmp_path / "other").exists()
