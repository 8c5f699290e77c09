"""jaxclust fit swav / deepcluster on the engine: end to end, SIGKILL and resume to the same result, the
ImageNet recipe."""

import json

import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import collapse, configs, engine, parallel
from jaxclust import workdir as workdirs
from jaxclust.methods import deepcluster, swav

ONE_DEVICE = parallel.make_mesh(1)  # the kill-and-resume tests run on one device

# The queue (256) fills after 2 of the 15 batches of 128 and is used from then on.
TINY = {"swav": ["epochs=3", "cnn_channels=(8, 16)", "queue_length=256", "queue_start_epoch=0"],
        "deepcluster": ["epochs=3", "cnn_channels=(8, 16)"]}


# What each method's collapse warnings say: its name and what to try.
WORDS = {method: {"name": method.NAME, "advice": method.COLLAPSE_ADVICE} for method in (swav, deepcluster)}


def tiny_config(method):
  c = configs.get_config(method, "digits")
  c.epochs, c.cnn_channels = 3, (8, 16)
  if method == "swav":
    c.queue_length, c.queue_start_epoch = 256, 0
  return c


def final_state(workdir):
  """The last checkpoint's state of the finished run in ``workdir``, restored as predict restores it."""
  import jax
  import ml_collections
  import orbax.checkpoint as ocp
  from jaxclust import methods
  summary = json.loads((workdir / "summary.json").read_text())
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  rows = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]["rows"]
  run = engine.Run(config, workdirs.path(workdir), ONE_DEVICE, summary["k"], summary["n"], tuple(summary["shape"]),
                   rows)
  template = methods.get(config.method).stages(run)[-1].template(run)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


def test_cli_run_logs_predicts_and_resumes_after_sigkill(tmp_path):
  """``jaxclust fit deepcluster``: the log, exemplars and predict; SIGKILL after epoch 2 and resume to the
  same labels. SwAV's command-line run, kill and resume: test_stream's streamed run (the queue in use)."""
  method = "deepcluster"
  settings = TINY[method] + ["report=False"]  # the report has its own tests (tests/test_report.py)
  run_cli(method, tmp_path / "reference", settings)
  reference = json.loads((tmp_path / "reference" / "summary.json").read_text())
  lines = [json.loads(l) for l in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in lines] == [1, 2, 3] and all("size_entropy" in r for r in lines)
  assert not any("batch_spread" in r for r in lines)  # only SwAV's steps measure it
  assert all(r["loss"] - r["loss_minus_ln_k"] == pytest.approx(np.log(10)) for r in lines)  # 10 prototypes
  assert not (tmp_path / "reference" / "report.html").exists() and 0.0 < reference["acc"] <= 1.0
  # predict on the training images from the last checkpoint gives the run's labels. The run was made
  # in another process (XLA's client with 1 device), so the last float bits may differ: a label whose
  # two best scores tie to within them may flip.
  from jaxclust.data import sources
  images = sources.load("digits").x
  labels = np.load(tmp_path / "reference" / "labels.npy")
  assert np.mean(engine.predict(tmp_path / "reference", images).labels == labels) >= 0.999
  with pytest.raises(ValueError, match="trained on"):
    engine.predict(tmp_path / "reference", images[:, :4, :4]).labels
  workdir = tmp_path / "killed"
  kill_cli_run(method, workdir, settings, checkpoint=2)  # epoch 2 saved: the bank refreshed
  run_cli(method, workdir, settings)
  resumed = json.loads((workdir / "summary.json").read_text())
  np.testing.assert_array_equal(np.load(workdir / "labels.npy"), np.load(tmp_path / "reference" / "labels.npy"))
  assert resumed["acc"] == reference["acc"]
  killed = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert resumed["train_seconds"] == pytest.approx(sum({r["epoch"]: r["seconds"] for r in killed}.values()))


def test_over_clustering_reports_k_means_clusters_of_the_embeddings(tmp_path):
  """DeepCluster-v2 trained on 30 prototypes, reported as 10 clusters; predict uses the saved centroids."""
  c = tiny_config("deepcluster")
  c.epochs, c.prototypes, c.n_clusters, c.eval_every = 2, 30, 10, 2
  summary = engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  assert (summary["k"], summary["prototypes"], summary["prototype_sets"]) == (10, 30, c.prototype_sets)
  # The first targets are the k-means clusters of the initial network's embeddings (the bank is filled
  # with them, as in the paper's code), far from chance (random unit vectors: NMI about 0.03 here);
  # later epochs log how much the targets moved since the previous epoch.
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert "targets_nmi_previous" not in lines[0] and lines[0]["targets_nmi_labels"] > 0.25
  assert 0.0 <= lines[1]["targets_nmi_previous"] <= 1.0
  # Over-clustering: the epochs also log the usage of the 30 prototypes (each image's nearest one).
  assert all(0.0 <= r["prototype_entropy"] <= 1.0 and 0 <= r["unused_prototypes"] < 30 for r in lines)
  # eval_every=2: the 10 clusters are read out (and scored) on epoch 2 only.
  assert "acc" not in lines[0] and "size_entropy" not in lines[0]
  assert 0.0 < lines[1]["acc"] <= 1.0 and 0.0 <= lines[1]["size_entropy"] <= 1.0
  labels = np.load(tmp_path / "run" / "labels.npy")
  centroids = np.load(tmp_path / "run" / "centroids.npy")
  assert centroids.shape == (10, c.head_out) and set(np.unique(labels)) <= set(range(10))
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
  from jaxclust.data import sources
  images = sources.load("digits").x
  np.testing.assert_array_equal(engine.predict(tmp_path / "run", images).labels, labels)


def test_resume_may_change_only_what_changes_neither_training_nor_result(tmp_path):
  c = configs.get_config("deepcluster", "mnist")
  workdirs.check_same_config(tmp_path, c)
  c.eval_every, c.data_dir = 1, "/elsewhere"
  workdirs.check_same_config(tmp_path, c)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert (saved["eval_every"], saved["data_dir"]) == (1, "/elsewhere"), "the resumed settings are not recorded"
  c.readout = "kmeans"  # changes the reported clusters
  with pytest.raises(ValueError, match=r"differs in readout: 'knn' -> 'kmeans'\)"):
    workdirs.check_same_config(tmp_path, c)
  # A run saved while DeepCluster-v2's configs still carried SwAV's unused queue and freeze settings resumes.
  old = tmp_path / "old"
  old.mkdir()
  d = configs.get_config("deepcluster", "mnist")
  (old / "config.json").write_text(json.dumps({**json.loads(d.to_json()), "freeze_prototypes_steps": 100,
                                                "queue_length": 0, "queue_start_epoch": 0}))
  workdirs.check_same_config(old, d)
  s = configs.get_config("swav", "mnist")  # SwAV reads them: a run without them is another run
  (old / "config.json").write_text(json.dumps({**json.loads(s.to_json()), "queue_length": 256}))
  with pytest.raises(ValueError, match=r"differs in queue_length: 256 -> 0\)"):
    workdirs.check_same_config(old, s)


def test_collapse_warning_looks_at_the_prototypes_not_the_readout():
  """The warning fires when the prototypes' usage collapses, not when an over-clustering readout groups
  almost every image together (the kNN readout of an MNIST run after one epoch did: size entropy 0.02,
  its prototypes' 0.61); the entropies are scipy's."""
  import warnings
  from scipy import stats
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 30, 3000)
  one_group = np.where(codes < 29, 0, 1)  # a readout of 10 clusters that put all but ~1/30 in one
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = collapse.monitor(one_group, codes, 10, 30, 1.0, **WORDS[deepcluster])
  np.testing.assert_allclose(out["size_entropy"], stats.entropy(np.bincount(one_group)) / np.log(10), rtol=1e-6)
  np.testing.assert_allclose(out["prototype_entropy"], stats.entropy(np.bincount(codes)) / np.log(30), rtol=1e-6)
  assert (out["empty_clusters"], out["unused_prototypes"]) == (8, 0)
  collapsed = np.where(codes < 28, 3, codes)  # only 3, 28 and 29 used
  with pytest.warns(UserWarning, match=r"prototypes are collapsing: .* 0\.\d+, 27 of 30 prototypes unused"):
    collapse.monitor(codes % 10, collapsed, 10, 30, 1.0, **WORDS[deepcluster])
  # One prototype per cluster: the labels are the codes.
  with pytest.warns(UserWarning, match="8 of 10 prototypes unused"):
    assert "prototype_entropy" not in collapse.monitor(one_group, one_group, 10, 10, 1.0, **WORDS[swav])
  for method, name, advice in ((swav, "SwAV", "try a lower sinkhorn_epsilon"),
                               (deepcluster, "DeepCluster-v2", "try a lower learning rate")):
    with pytest.warns(UserWarning, match=f"{name} loss 2.3026 sits at ln K.*{advice}"):
      collapse.monitor(codes % 10, codes % 10, 10, 10, float(np.log(10)), **WORDS[method])


def test_the_engine_trains_with_the_configured_sinkhorn_epsilon(tmp_path, monkeypatch):
  class Seen(Exception):
    pass

  def step(*args, epsilon, **kwargs):  # stops the run where it first traces the step: nothing to compile
    raise Seen(epsilon)

  monkeypatch.setattr(swav, "train_step", step)
  c = tiny_config("swav")
  c.epochs, c.sinkhorn_epsilon = 1, 0.0375
  with pytest.raises(Seen) as seen:
    engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  assert seen.value.args == (0.0375,)


def test_geometry_of_the_embeddings_against_numpy():
  """The collapse figures: spread 1 - |mean z|^2 and the share of |z|^2 in the prototypes' span (numpy's
  projector onto their row space), padded rows left out; embeddings where every prototype scores 0
  have share 0, and the ln K warning quotes both."""
  rng = np.random.default_rng(0)
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  z, prototypes = unit(rng.normal(size=(70, 12))).astype(np.float32), unit(rng.normal(size=(5, 12))).astype(np.float32)
  out = collapse.geometry(z, prototypes, 64, True)
  projector = np.linalg.pinv(prototypes.astype(np.float64)) @ prototypes
  np.testing.assert_allclose(out["prototype_span"], np.mean(np.sum((z[:64] @ projector) ** 2, 1)), rtol=1e-5)
  np.testing.assert_allclose(out["embedding_spread"], 1 - np.sum(np.mean(z[:64], 0) ** 2), rtol=1e-5)
  assert "prototype_span" not in collapse.geometry(z, prototypes, 64, False)
  wide = unit(rng.normal(size=(20, 12))).astype(np.float32)  # 20 prototypes span the 12 dimensions
  np.testing.assert_allclose(collapse.geometry(z, wide, 64, True)["prototype_span"], 1.0, rtol=1e-5)
  hidden = np.zeros((64, 12), np.float32)
  hidden[:, 11] = 1.0  # every image at one point outside the span of prototypes in the first 11 dimensions
  flat = prototypes.copy()
  flat[:, 11] = 0.0
  geometry = {key: float(value) for key, value in collapse.geometry(hidden, unit(flat), 64, True).items()}
  assert geometry == {"embedding_spread": 0.0, "prototype_span": 0.0}
  with pytest.warns(UserWarning, match=r"SwAV loss 1.6094 sits at ln K .* collapsed, embedding spread 0.0000, "
                                       r"prototype span 0.0000"):
    out = collapse.monitor(None, None, 5, 5, float(np.log(5)), geometry, **WORDS[swav])
  assert out["prototype_span"] == 0.0


def test_epoch_end_bank_keeps_the_targets_on_the_content(tmp_path):
  """With bank_source="epoch_end" the second epoch's targets cluster the trained network's embeddings of
  the clean images: as far from chance as the first (the bank written during training gave NMI
  0.05-0.07 to the labels here, three seeds)."""
  c = tiny_config("deepcluster")
  c.epochs, c.prototypes, c.n_clusters, c.bank_source = 2, 30, 10, "epoch_end"
  c.kmeans_warm_start, c.keep_checkpoints = True, 2
  summary = engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=ONE_DEVICE)
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert lines[1]["targets_nmi_labels"] > 0.25 and lines[1]["targets_nmi_previous"] > 0.25
  # The last epoch's clusters come from the embeddings that refilled the bank, the summary's from a
  # fresh pass of the same network: the same partition.
  assert lines[1]["acc"] == summary["acc"] and lines[1]["nmi"] == summary["nmi"]
  # kmeans_warm_start: epoch 2's k-means started from epoch 1's centroids (checkpoint 1 holds them and
  # the bank refilled after epoch 1); a warm start does not draw from the key.
  import jax
  import orbax.checkpoint as ocp
  first, second = (ocp.StandardCheckpointer().restore(tmp_path / "run" / "checkpoints" / str(i) / "state")
                   for i in (1, 2))
  again = deepcluster.recluster(deepcluster.DeepClusterState(**first), jax.random.key(123), warm_start=True)
  np.testing.assert_array_equal(again.assignments, second["assignments"])
  np.testing.assert_allclose(again.prototypes, second["prototypes"], atol=1e-6)
  # The logged prototype usage is that of the last checkpoint's nearest prototypes, computed from the
  # images (the path predict takes) rather than from the embeddings the epoch reused.
  from scipy import stats
  from jaxclust.data import sources
  images = jax.numpy.asarray(sources.load("digits").x, np.float32)
  codes = np.asarray(deepcluster.scorer(c).code(deepcluster.DeepClusterState(**second), images, len(images)))
  np.testing.assert_allclose(lines[1]["prototype_entropy"], stats.entropy(np.bincount(codes)) / np.log(30),
                             rtol=1e-5)
  assert lines[1]["unused_prototypes"] == 30 - len(np.unique(codes))


def test_imagenet_recipe():
  import jax
  import jax.numpy as jnp
  c = configs.get_config("swav", "tfds:imagenet2012")
  assert (c.backbone, c.stem, c.crops, c.prototypes, c.temperature, c.batch_size, c.queue_length,
          c.queue_start_epoch, c.optimizer) == ("resnet50", "imagenet", ((2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14))),
                                                3000, 0.1, 4096, 3840, 15, "lars")
  model = swav.network(c)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 96, 96, 3)))
  z, scores = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 224, 224, 3))), shapes)
  assert z.shape == (2, 128) and scores.shape == (2, 3000)
  assert c.sinkhorn_epsilon == 0.05 and "sinkhorn_epsilon" not in configs.get_config("deepcluster", "mnist")
  mnist = configs.get_config("swav", "mnist")  # measured: experiments/RESULTS.md
  assert (mnist.prototypes, mnist.epochs, mnist.sinkhorn_epsilon, mnist.readout) == (30, 30, 0.025, "knn")
  digits = configs.get_config("deepcluster", "mnist")  # measured on four seeds: experiments/RESULTS.md
  assert (digits.prototypes, digits.epochs, digits.readout, digits.n_clusters) == (200, 40, "knn", 10)
  d = configs.get_config("deepcluster", "tfds:imagenet2012")
  assert (d.prototypes, d.prototype_sets, d.temperature) == (3000, 3, 0.1)  # 3 x 3000
  # DeepCluster-v2 has no queue and no prototype freeze: no such settings to set in vain.
  assert not {"queue_length", "queue_start_epoch", "freeze_prototypes_steps"} & set(d)


def test_bad_settings_are_refused_before_the_workdir_is_claimed(tmp_path):
  c = tiny_config("swav")
  c.batch_size = 100
  with pytest.raises(ValueError, match="batch_size=100 is not divisible by the 8 devices"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.prototypes = 5000
  with pytest.raises(ValueError, match="prototypes=5000"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.prototype_sets = 0
  with pytest.raises(ValueError, match="prototype_sets=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.bank_source = "queue"
  with pytest.raises(ValueError, match="bank_source='queue' must be 'training' or 'epoch_end'"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  del c["kmeans_warm_start"]
  c.kmeans_warm_start = "false"  # a config file's string: refused, not read as True
  with pytest.raises(ValueError, match="kmeans_warm_start='false' must be True or False"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.epochs = 0
  with pytest.raises(ValueError, match="epochs=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.eval_every = 0
  with pytest.raises(ValueError, match="eval_every=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("swav")
  c.batch_size = 0
  with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("swav")
  c.temperature = float("nan")
  with pytest.raises(ValueError, match="temperature=nan must be a finite number > 0"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("swav")
  c.sinkhorn_epsilon = 0.0
  with pytest.raises(ValueError, match="sinkhorn_epsilon=0.0 must be a finite number > 0"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("swav")
  c.crops = ((2, 8, (0.5, 1.0)), (2, 0, (0.1, 0.3)))
  with pytest.raises(ValueError, match=r"crops\[1\] size=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c = tiny_config("deepcluster")
  c.bank_crops = 3
  with pytest.raises(ValueError, match=r"bank_crops=3 must be <= crops\[0\]\[0\], the large crops=2"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()
