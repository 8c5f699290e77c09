"""The report every fit writes (jaxclust/report.py): its data, its page, ``jaxclust report``, and the page in a
real browser (headless Chromium).

Two tiny runs serve every test: DEC on digits as vectors (a .npz of [1797, 64] rows: the feature profile) and
SwAV on digits as images (no confidence: members ranked by their distance to the cluster's center). They are
built once per session, even under pytest-xdist (a lock in the session's shared temporary folder).
"""

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxclust import cli, engine, parallel, report
from jaxclust import workdir as workdirs
from test_train import FAST, fast_config

ONE_DEVICE = parallel.make_mesh(1)
SWAV = ["epochs=1", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
  """``{"vectors": workdir, "images": workdir}`` of two finished runs, made by the first worker to get here."""
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "report_runs"
  root.mkdir(exist_ok=True)
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    x, y = digits
    if not (root / "vectors" / "summary.json").exists():
      np.savez(root / "digits_vectors.npz", x=_vectors(x), y=y)
      config = cli.make_config("dec", str(root / "digits_vectors.npz"),
                               settings=FAST + ["pretrain.epochs=2", "cluster.max_steps=40"])
      engine.fit(config, root / "vectors", log=lambda _: None, mesh=ONE_DEVICE)
    if not (root / "images" / "summary.json").exists():
      engine.fit(cli.make_config("swav", "digits", settings=SWAV), root / "images", log=lambda _: None,
                 mesh=ONE_DEVICE)
  return {"vectors": root / "vectors", "images": root / "images"}


def _vectors(x):
  """Digits as rows of their 61 non-constant pixels in [0, 1] (the vector recipe standardizes every feature)."""
  return (x[:, x.std(0) > 0] / 16.0).astype(np.float32)


def _copy(runs, kind, tmp_path):
  """A copy of a shared run to change (the shared ones are read by other tests at the same time)."""
  shutil.copytree(runs[kind], tmp_path / kind, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
  return tmp_path / kind


def test_the_label_free_scores_are_sklearns_on_the_methods_embedding(tmp_path):
  """The engine scores the readout's embedding (a method stub here): silhouette on a sample, Davies-Bouldin and
  Calinski-Harabasz on every row, as scikit-learn computes them; then the input rows when it gives none."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300)
  labels[labels == 2] = 0  # an empty cluster id
  z = (rng.normal(size=(300, 5)) + 3.0 * labels[:, None]).astype(np.float32)
  rows = rng.uniform(size=(300, 3)).astype(np.float32)

  class Stub:
    embedding = z

    @classmethod
    def readout(cls, run, state):
      return engine.Readout(labels, embedding=cls.embedding)

  run = engine.Run(fast_config(), workdirs.path(tmp_path), ONE_DEVICE, k=4, n=300, shape=(3,), rows=300)
  summary = engine._finish(Stub, run, None, rows, time.perf_counter())
  assert summary["quality_space"] == "embedding"
  assert summary["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(z.astype(np.float64), labels), rel=2e-5)
  assert summary["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(z.astype(np.float64), labels),
                                                       rel=2e-5)
  assert summary["silhouette"] == pytest.approx(skm.silhouette_score(z, labels), abs=1e-5)  # 300 < 2,000: all rows
  assert json.loads((tmp_path / "summary.json").read_text())["silhouette"] == summary["silhouette"]
  Stub.embedding = None
  (tmp_path / "summary.json").unlink()
  summary = engine._finish(Stub, run, None, rows, time.perf_counter())
  assert summary["quality_space"] == "input rows"
  assert summary["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(rows.astype(np.float64), labels), rel=2e-5)
  assert "the input rows (the method gives no usable embedding)" in (tmp_path / "report.html").read_text()


def test_a_report_that_fails_does_not_fail_the_run(tmp_path, monkeypatch):
  def broken(workdir):
    raise RuntimeError("no fonts")

  monkeypatch.setattr(report, "render", broken)
  messages = []
  run = engine.Run(fast_config(), workdirs.path(tmp_path), ONE_DEVICE, k=2, n=10, shape=(3,), rows=10,
                   log=messages.append)
  stub = type("Stub", (), {"readout": staticmethod(lambda run, state: engine.Readout(np.arange(10) % 2))})
  summary = engine._finish(stub, run, None, np.eye(10, 3, dtype=np.float32), time.perf_counter())
  assert json.loads((tmp_path / "summary.json").read_text())["n"] == summary["n"] == 10  # the run is finished
  assert "RuntimeError: no fonts" in (tmp_path / "error.log").read_text()
  assert messages == [f"WARNING: the report could not be written (RuntimeError: no fonts); details in "
                      f"{tmp_path / 'error.log'}; try `jaxclust report --workdir {tmp_path}`"]


@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_a_fit_writes_the_report_and_its_data(runs, digits, kind):
  workdir = runs[kind]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["quality_space"] == "embedding"
  assert -1 <= summary["silhouette"] <= 1 and summary["davies_bouldin"] > 0 and summary["calinski_harabasz"] > 0
  figures = {"sizes", "map", "confusion", "curves"} | ({"profile"} if kind == "vectors" else {"typical", "ambiguous"})
  assert {f"{name}.png" for name in figures} <= {p.name for p in (workdir / "report").iterdir()}
  data = np.load(workdir / "report" / "data.npz")
  labels, (_, y) = np.load(workdir / "labels.npy"), digits
  assert str(data["space"]) == "embedding" and len(data["index"]) == len(labels) == 1797  # fewer than 5,000 rows
  np.testing.assert_array_equal(data["labels"], labels[data["index"]])
  np.testing.assert_array_equal(data["y"], y[data["index"]])
  assert data["components"].shape[0] == 1797 and data["explained"][0] >= data["explained"][-1]
  page = (workdir / "report.html").read_text()
  # Self-contained: every image is embedded, and the PNG files hold the same bytes.
  sources = re.findall(r'<img src="([^"]+)"', page)
  assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
  assert base64.b64decode(sources[0].split(",", 1)[1]) == (workdir / "report" / "sizes.png").read_bytes()
  assert "http" not in page.replace('lang="en"', "")
  assert f"ACC {summary['acc']:.4f}" in page and f"{summary['silhouette']:.4f}" in page


def test_the_profile_of_vector_data_is_each_clusters_feature_means_as_z_scores(runs, digits):
  x = _vectors(digits[0]).astype(np.float64)
  labels = np.load(runs["vectors"] / "labels.npy")
  data = np.load(runs["vectors"] / "report" / "data.npz")
  used = np.unique(labels)
  means = np.stack([x[labels == c].mean(0) for c in used])
  std = x.std(0)
  expected = np.where(std > 0, (means - x.mean(0)) / np.where(std > 0, std, 1), 0.0)
  np.testing.assert_allclose(data["profile"][used], expected, atol=1e-4)
  np.testing.assert_array_equal(data["profile_sizes"], np.bincount(labels, minlength=10))
  assert data["profile"].shape == (10, 61)
  page = (runs["vectors"] / "report.html").read_text()
  c = int(used[0])
  top = int(np.argmax(np.abs(expected[0])))
  assert re.search(rf"<li>cluster {c} \(\d+ rows\): feature {top} [+-]", page)


def test_image_exemplars_are_ranked_by_distance_to_the_center_without_confidence(runs):
  workdir = runs["images"]
  assert str(np.load(workdir / "report" / "data.npz")["ranking"]) == "distance to the cluster's center"
  assert (workdir / "exemplars.png").read_bytes() == (workdir / "report" / "typical.png").read_bytes()
  assert "Most ambiguous members" in (workdir / "report.html").read_text()


def test_many_clusters_show_the_largest_and_a_umap_when_umap_learn_is_there(tmp_path, monkeypatch):
  """k = 25 image clusters: the grids show the 20 largest. A stand-in umap module: the map is a UMAP."""
  import sys
  import types

  class UMAP:
    def __init__(self, n_components, random_state):
      pass

    def fit_transform(self, x):
      return x[:, :2] * 2.0

  monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(25), np.arange(1, 26))  # cluster c has c + 1 rows
  images = rng.uniform(size=(len(labels), 6, 6, 1)).astype(np.float32)
  confidence = rng.uniform(size=len(labels)).astype(np.float32)
  run = engine.Run(fast_config(), workdirs.path(tmp_path), ONE_DEVICE, k=25, n=len(labels), shape=(6, 6, 1),
                   rows=len(labels))
  stub = type("Stub", (), {"readout": staticmethod(lambda run, state: engine.Readout(
      labels, confidence, embedding=rng.normal(size=(len(labels), 3)).astype(np.float32)))})
  engine._finish(stub, run, None, images, time.perf_counter())
  data = np.load(tmp_path / "report" / "data.npz")
  np.testing.assert_allclose(data["umap"], data["components"][:, :2] * 2.0)
  page = (tmp_path / "report.html").read_text()
  assert "UMAP of 325 sampled rows of the embedding" in page and "Members ranked by confidence" in page
  assert _png_rows(tmp_path / "report" / "typical.png") == 20 * 0.9 * 80  # 20 rows of 0.9 inches at 80 dpi
  assert "Against the true labels" not in page  # the stub knows none


def _png_rows(file) -> int:
  from matplotlib import image
  return image.imread(file).shape[0]


def test_jaxclust_report_draws_it_again_from_the_workdir_alone(runs, tmp_path, capsys):
  workdir = _copy(runs, "images", tmp_path)  # no checkpoints: the network is not needed
  before = (workdir / "report.html").read_text()
  (workdir / "report.html").unlink()
  (workdir / "report" / "map.png").unlink()
  assert cli.main(["report", "--workdir", str(workdir)]) == 0
  assert capsys.readouterr().out.strip() == f"report: {workdir / 'report.html'}"
  after = (workdir / "report.html").read_text()
  assert (workdir / "report" / "map.png").exists()
  strip = lambda page: re.sub(r"Rendered in [0-9.]+ s", "", page)
  assert strip(after) == strip(before)  # the same page (figures drawn from the same saved data)


def test_a_run_finished_before_reports_gets_what_its_files_allow(runs, tmp_path):
  workdir = _copy(runs, "vectors", tmp_path)
  shutil.rmtree(workdir / "report")
  summary = json.loads((workdir / "summary.json").read_text())
  for name in ("silhouette", "davies_bouldin", "calinski_harabasz", "quality_space"):
    del summary[name]
  (workdir / "summary.json").write_text(json.dumps(summary))
  report.render(workdir)
  page = (workdir / "report.html").read_text()
  assert page.count("the run finished before jaxclust saved report data") == 2  # quality, map
  assert "Cluster sizes" in page and "Against the true labels" in page and "Training" in page


def test_bad_workdirs_are_one_line(tmp_path, capsys):
  def error(*args):
    assert cli.main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxclust: error: ")
    return err

  assert f"--workdir {tmp_path / 'missing'} does not exist" in error("--workdir", str(tmp_path / "missing"))
  (tmp_path / "started").mkdir()
  (tmp_path / "started" / "config.json").write_text("{}")  # a run that never finished
  assert "holds no finished run (no summary.json)" in error("--workdir", str(tmp_path / "started"))
  (tmp_path / "notes.txt").write_text("")
  assert "is not a directory" in error("--workdir", str(tmp_path / "notes.txt"))
  assert "the following arguments are required: --workdir" in error()


# The page in a real browser. CI installs Chromium (.ci/run) and sets JAXCLUST_REQUIRE_BROWSER, so a missing
# browser fails there; elsewhere the test is skipped without it.
_RECORD_IMAGES = """<script>
window.addEventListener("load", () => document.body.setAttribute("data-images",
    JSON.stringify(Array.from(document.images, (i) => i.complete ? i.naturalWidth : -1))));
</script>"""


def _chromium() -> str:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(name):
      return shutil.which(name)
  if os.environ.get("JAXCLUST_REQUIRE_BROWSER"):
    pytest.fail("JAXCLUST_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
  pytest.skip("chromium is not installed (JAXCLUST_REQUIRE_BROWSER=1 makes this a failure)")


@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_the_report_renders_in_a_browser(runs, tmp_path, kind):
  browser = _chromium()
  page = (runs[kind] / "report.html").read_text()
  probe = tmp_path / "report.html"  # the page and a script recording whether each image loaded
  probe.write_text(page.replace("</body>", _RECORD_IMAGES + "</body>"))
  common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}"]
  dom = subprocess.run(common + ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
  found = re.search(r'data-images="([^"]*)"', dom.stdout)
  assert found, dom.stderr[-2000:]
  widths = json.loads(found.group(1).replace("&quot;", '"'))
  assert len(widths) == page.count("<img ") >= 5 and all(w > 0 for w in widths)  # every image loaded
  shot = tmp_path / "shot.png"
  done = subprocess.run(common + ["--window-size=1200,2400", f"--screenshot={shot}",
                                  (runs[kind] / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
  assert shot.exists(), done.stderr[-2000:]
  from matplotlib import image
  pixels = image.imread(shot)[..., :3]
  dark = np.mean(pixels.min(-1) < 0.5)  # text, bars, points, images: not a blank page
  assert 0.01 < dark < 0.9 and pixels.std() > 0.05
