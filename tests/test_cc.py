"""Contrastive Clustering (jaxclust/methods/cc.py): its loss against a numpy transcription of the paper's
equations, and a run with the guarantees every method gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import kill_cli_run, run_cli
from jaxclust import cli, configs, engine, parallel
from jaxclust.data import sources
from jaxclust.methods import cc

ONE_DEVICE = parallel.make_mesh(1)
TINY = ["report=False", "epochs=3", "cnn_channels=(8, 16)", "batch_size=128"]


def _paper_loss(za, zb, ya, yb, tau_i, tau_c):
  """Li et al. 2021, eqs. 2-10, transcribed with loops: the instance loss over the 2N rows, the cluster loss over
  the 2M columns of the assignment matrices, H(Y) of the cluster sizes of both views."""
  def cos(u, v):
    return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))

  def nt_xent(a, b, tau):  # a, b: [m, d] items of the two augmentations
    m, total = len(a), 0.0
    for first, second in ((a, b), (b, a)):
      for i in range(m):
        positive = np.exp(cos(first[i], second[i]) / tau)
        denominator = sum(np.exp(cos(first[i], first[j]) / tau) for j in range(m) if j != i)
        denominator += sum(np.exp(cos(first[i], second[j]) / tau) for j in range(m))
        total += -np.log(positive / denominator)
    return total / (2 * m)

  def entropy(y):
    p = y.sum(0) / np.abs(y).sum()
    return -np.sum(p * np.log(p))

  instance = nt_xent(za, zb, tau_i)
  cluster = nt_xent(ya.T, yb.T, tau_c) - (entropy(ya) + entropy(yb))
  return instance + cluster, instance, cluster


def test_loss_matches_the_papers_equations():
  rng = np.random.default_rng(0)
  n, m, d = 12, 4, 6
  za, zb = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  ya, yb = (np.asarray(jax.nn.softmax(rng.normal(size=(n, m)) * 2, axis=-1)) for _ in range(2))
  loss, parts = cc.cc_loss(*(jnp.asarray(a, jnp.float32) for a in (za, zb, ya, yb)), instance_temperature=0.5,
                           cluster_temperature=1.0)
  want, instance, cluster = _paper_loss(za, zb, ya, yb, 0.5, 1.0)
  np.testing.assert_allclose(float(parts["instance_loss"]), instance, rtol=1e-5)
  np.testing.assert_allclose(float(parts["cluster_loss"]), cluster, rtol=1e-5)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # Padding rows leave both losses as the real rows alone give them.
  mask = np.arange(n + 3) < n
  pad = lambda a: jnp.asarray(np.concatenate([a, rng.uniform(size=(3, a.shape[1]))]), jnp.float32)
  masked, _ = cc.cc_loss(pad(za), pad(zb), pad(ya), pad(yb), mask=jnp.asarray(mask))
  np.testing.assert_allclose(float(masked), want, rtol=1e-5)


def test_the_entropy_term_rewards_balanced_clusters():
  one = jnp.tile(jnp.eye(4)[:1], (8, 1)) * 0.97 + 0.01  # every row in cluster 0
  spread = jnp.tile(jnp.eye(4), (2, 1)) * 0.97 + 0.01
  assert float(cc.size_entropy(spread)) == pytest.approx(np.log(4), rel=1e-6)
  assert float(cc.size_entropy(one)) < 0.2
  collapsed, _ = cc.cluster_loss(one, one)
  balanced, _ = cc.cluster_loss(spread, spread)
  assert float(balanced) < float(collapsed)


def config(*extra):
  return cli.make_config("cc", "digits", settings=TINY + list(extra))


@pytest.fixture(scope="module")
def cc_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cc") / "run"
  return workdir, engine.fit(config(), workdir, log=lambda _: None, mesh=ONE_DEVICE)


def test_a_run_reads_out_the_cluster_head_and_predict_agrees(cc_run):
  workdir, summary = cc_run
  assert summary["method"] == "cc" and summary["k"] == 10 and summary["acc"] > 0.2
  import json
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in records if r.get("stage") == "cc" and "instance_loss" in r]
  assert len(epochs) == 3 and all(0 < r["entropy"] <= 2 * np.log(10) + 1e-5 for r in epochs)
  x = sources.load("digits").x
  out = engine.predict(workdir, x[:300])
  labels = np.load(workdir / "labels.npy")
  np.testing.assert_array_equal(out.labels, labels[:300])
  assert np.all((out.confidence >= 0.1) & (out.confidence <= 1)) and out.embedding.shape == (300, 16)


def test_killed_run_resumes_to_the_uninterrupted_result_and_8_devices_equal_1(tmp_path, cc_run):
  run_cli("cc", tmp_path / "whole", TINY)
  kill_cli_run("cc", tmp_path / "killed", TINY, checkpoint=2)
  run_cli("cc", tmp_path / "killed", TINY)
  np.testing.assert_array_equal(np.load(tmp_path / "killed" / "labels.npy"), np.load(tmp_path / "whole" / "labels.npy"))
  eight = engine.fit(config(), tmp_path / "eight", log=lambda _: None)
  assert eight["devices"] == 8
  agreement = np.mean(np.load(tmp_path / "eight" / "labels.npy") == np.load(cc_run[0] / "labels.npy"))
  assert agreement >= 0.995, agreement


def test_streamed_run_reaches_the_accuracy_in_memory(tmp_path, cc_run):
  streamed = engine.fit(config("input=tf.data"), tmp_path / "streamed", log=lambda _: None, mesh=ONE_DEVICE)
  assert abs(streamed["acc"] - cc_run[1]["acc"]) < 0.1


def test_a_diverging_run_stops(tmp_path):
  from jaxclust.validation import Diverged
  with pytest.raises(Diverged, match=r"^stage cc diverged at epoch 1: loss nan"):
    engine.fit(config("learning_rate=1e30"), tmp_path / "nan", log=lambda _: None, mesh=ONE_DEVICE)


@pytest.mark.parametrize("settings, message", [
    (["batch_size=100"], "batch_size=100 is not divisible by the 8 devices"),
    (["cluster_temperature=0.0"], "cluster_temperature=0.0 must be > 0"),
    (["n_clusters=1"], "n_clusters=1 must be >= 2"),
])
def test_bad_settings_are_refused_before_training(tmp_path, settings, message):
  with pytest.raises(ValueError, match=message):
    engine.fit(config(*settings), tmp_path / "bad", log=lambda _: None)
  assert not (tmp_path / "bad" / "config.json").exists()


def test_python_api_on_vector_rows(tmp_path, blobs):
  import jaxclust
  x, y = blobs
  model = jaxclust.ContrastiveClustering(8, workdir=str(tmp_path / "api"), epochs=3, report=False)
  model.fit(x[:1000], y[:1000])
  assert model.config_.backbone == "mlp" and model.labels_.shape == (1000,)
  np.testing.assert_array_equal(model.predict(x[:100]), model.labels_[:100])
  assert model.summary_["acc"] > 0.5


def test_recipes():
  c = configs.get_config("cc", "tfds:cifar10")
  assert (c.backbone, c.epochs, c.batch_size, c.learning_rate) == ("resnet34", 1000, 256, 3e-4)
  assert (c.instance_temperature, c.cluster_temperature) == (0.5, 1.0)
  small = configs.get_config("cc", "own", n=7000, shape=(28, 28, 1))
  assert small.backbone == "small_cnn" and small.epochs == 500  # 3.5M images seen
