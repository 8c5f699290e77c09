"""Seeding with a few labels (jaxclust.seeding): reading and checking seed files, the seeded start against
scikit-learn and numpy, the Hungarian naming against brute force, and seeded fits through the API and CLI."""

import itertools
import json

import chex
import jax
import flax.linen as nn
import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import jaxclust
from jaxclust import cli, engine, seeding
from jaxclust.methods import dec, scan
from jaxclust.models.heads import Clusterer
from test_cli import error_line
from test_guarantees import SHORTER, TINY
from test_train import FAST, fast_config


@pytest.mark.parametrize("text, message", [
    ("index,label\n3,1\n5000,2\n", "row index 5000 is not a row of the training data (0..99)"),
    ("3,1\n-1,2\n", "row index -1 is not a row"),
    ("3,1\n4,10\n", "class 10 is out of range: integer labels are cluster numbers, 0..9 for n_clusters=10"),
    ("3,a\n4,b\n5,c\n", "name 3 classes but n_clusters=2"),
    ("3,1\n3,2\n", "row 3 is labelled both '1' and '2'"),
])
def test_seed_labels_that_do_not_fit_the_data_are_refused_naming_the_value(tmp_path, text, message):
  (tmp_path / "s.csv").write_text(text)
  k = 2 if "c\n" in text else 10
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    seeding.resolve(*seeding.read(tmp_path / "s.csv"), n=100, k=k)


@pytest.mark.parametrize("text, message", [
    ("", "has no rows"), ("index,label\n", "has no rows"), ("3,1,2\n", "row 1: expected `index,label`"),
    ("3,1\nx,2\n", "row 2: expected `index,label` with an integer index, got 'x,2'")])
def test_a_malformed_seed_file_is_refused_naming_the_row(tmp_path, text, message):
  (tmp_path / "s.csv").write_text(text)
  with pytest.raises(ValueError, match=message):
    seeding.read(tmp_path / "s.csv")
  with pytest.raises(ValueError, match="does not exist"):
    seeding.read(tmp_path / "missing.csv")


def test_integer_labels_are_cluster_numbers_and_names_are_sorted_into_the_first_clusters():
  ints = seeding.resolve([4, 2, 9, 4], ["7", "0", "7", "7"], n=10, k=8)
  np.testing.assert_array_equal(ints.index, [2, 4, 9])
  np.testing.assert_array_equal(ints.cluster, [0, 7, 7])
  assert ints.names == ("0", None, None, None, None, None, None, "7")
  names = seeding.resolve([1, 2, 3], ["dog", "cat", "dog"], n=10, k=4)
  np.testing.assert_array_equal(names.cluster, [1, 0, 1])
  assert names.names == ("cat", "dog", None, None)
  # The API's forms: a mapping, or [n] labels with -1 / None unlabelled.
  assert seeding.from_arrays({5: 2, 1: "x"}) == (pytest.approx(np.array([1, 5])), ["x", "2"])
  index, labels = seeding.from_arrays(np.array([-1, 3, -1, 0.0]))
  np.testing.assert_array_equal(index, [1, 3])
  assert labels == ["3", "0"]
  index, labels = seeding.from_arrays(["a", None, "b"])
  assert index.tolist() == [0, 2] and labels == ["a", "b"]


def test_the_seeded_start_is_the_class_means_then_k_means_plus_plus_and_lloyd_matches_scikit_learn():
  x, y = load_digits(return_X_y=True)
  x = x.astype(np.float32)
  rng = np.random.default_rng(0)
  rows = np.concatenate([rng.choice(np.flatnonzero(y == c), 3, replace=False) for c in range(6)])
  seeds = seeding.resolve(rows, [str(y[i]) for i in rows], n=len(x), k=9)
  start = seeding.initial_centers(x, seeds, 9, seed=1)
  for c in range(6):  # the labelled classes: their rows' mean
    np.testing.assert_allclose(start[c], x[rows[y[rows] == c]].mean(0), rtol=1e-6)
  for c in range(6, 9):  # the others: data rows, distinct, drawn away from the seeded centers
    assert np.any(np.all(x == start[c], axis=1))
  assert len({tuple(r) for r in start}) == 9
  np.testing.assert_array_equal(start, seeding.initial_centers(x, seeds, 9, seed=1))
  centers, labels = seeding.kmeans(x, seeds, 9, seed=1)
  reference = KMeans(9, init=start, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(x)
  free = np.ones(len(x), bool)
  free[rows] = False
  assert np.mean(labels[free] == reference.labels_[free]) > 0.995
  np.testing.assert_allclose(centers, reference.cluster_centers_, atol=1e-2)
  np.testing.assert_array_equal(labels[rows], y[rows])  # labelled rows keep their class


def test_naming_finds_the_best_renumbering_as_brute_force_does():
  rng = np.random.default_rng(3)
  k = 5
  for trial in range(20):
    labels = rng.integers(0, k, 60)
    index = rng.choice(60, 15, replace=False)
    classes = rng.integers(0, 3, 15)  # three classes labelled, two clusters unnamed
    seeds = seeding.Seeds(index, classes.astype(np.int32), ("a", "b", "c", None, None))
    out, order = seeding.name_clusters(labels, seeds, k)
    best = max(np.sum(np.asarray(p)[labels[index]] == classes) for p in itertools.permutations(range(k)))
    assert np.sum(order[labels[index]] == classes) == best, trial
    assert sorted(order) == list(range(k))
    np.testing.assert_array_equal(out[index], classes)
    free = np.setdiff1d(np.arange(60), index)
    np.testing.assert_array_equal(out[free], order[labels[free]])
  # Already numbered as the classes: nothing moves, unnamed clusters included.
  labels = np.arange(20) % k
  seeds = seeding.Seeds(np.array([0, 1, 2]), np.array([0, 1, 2], np.int32), ("0", "1", "2", None, None))
  np.testing.assert_array_equal(seeding.name_clusters(labels, seeds, k)[1], np.arange(k))


def test_dec_refresh_holds_seeded_rows_at_their_class():
  rng = np.random.default_rng(0)
  q = rng.dirichlet(np.ones(4), size=12).astype(np.float32)
  fixed = np.full(12, -1, np.int32)
  fixed[[2, 7]] = [3, 0]
  state = dec.DECState(step=0, params={}, opt_state=(), target=np.zeros((12, 4), np.float32),
                       labels=np.full(12, -1, np.int32))
  out, _ = dec.refresh_from_assignments(state, q, None, fixed)
  p = q ** 2 / q.sum(0)
  p /= p.sum(1, keepdims=True)
  p[2], p[7] = np.eye(4)[3], np.eye(4)[0]
  np.testing.assert_allclose(out.target, p, rtol=1e-5)
  labels = q.argmax(1)
  labels[[2, 7]] = [3, 0]
  np.testing.assert_array_equal(out.labels, labels)


@pytest.mark.parametrize("method", ["dec", "vade"])
def test_a_seeded_fit_names_its_clusters_and_keeps_the_labelled_rows(tmp_path, method):
  x, y = load_digits(return_X_y=True)
  x = (x / 16).astype(np.float32)
  names = {0: "zero", 1: "one", 2: "two"}
  rng = np.random.default_rng(1)
  rows = np.concatenate([rng.choice(np.flatnonzero(y == c), 4, replace=False) for c in names])
  estimator = getattr(jaxclust, method.upper() if method == "dec" else "VaDE")
  model = estimator(10, workdir=tmp_path / "run", **{k.replace(".", "__"): v for k, v in _fast(method).items()})
  model.fit(x, y, seed_labels={int(i): names[y[i]] for i in rows})
  assert model.cluster_names_ == ["one", "two", "zero"] + [None] * 7
  wanted = np.array([{"one": 0, "two": 1, "zero": 2}[names[y[i]]] for i in rows])
  np.testing.assert_array_equal(model.labels_[rows], wanted)
  assert model.summary_["seed_labels"] == len(rows) and model.summary_["seed_classes"] == 3
  assert "unlabelled_acc" in model.summary_ and "named_accuracy" not in model.summary_  # names, not numbers
  # predict numbers new rows as the fit numbered the training rows
  free = np.setdiff1d(np.arange(len(x)), rows)
  agree = np.mean(model.predict(x[free]) == model.labels_[free])
  assert agree > (0.999 if method == "dec" else 0.9), agree
  # DEC: a labelled class's rows are at least twice as common in its named cluster as in the data (4 short
  # pretraining epochs: the clusters are rough; 3 VaDE epochs leave its mixture rougher still)
  for c, cluster in ((0, 2), (1, 0), (2, 1)) if method == "dec" else ():
    inside = model.labels_[free] == cluster
    assert np.mean(y[free][inside] == c) > 2 * np.mean(y[free] == c), (c, cluster, np.mean(y[free][inside] == c))
  # the report and the command line's predict show the names
  assert "Named clusters" in (tmp_path / "run" / "report.html").read_text()
  np.save(tmp_path / "new.npy", x[:5])
  assert cli.main(["predict", "--workdir", str(tmp_path / "run"), "--input", str(tmp_path / "new.npy"),
                   "--output", str(tmp_path / "p.csv")]) == 0
  table = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()]
  assert table[0][:2] == ["label", "name"]
  names_by_number = ["one", "two", "zero"] + [""] * 7
  assert [row[1] for row in table[1:]] == [names_by_number[int(row[0])] for row in table[1:]]
  # the run's own copy of the seed labels; resuming with the same labels reads the finished run
  assert (tmp_path / "run" / seeding.FILE).read_text().startswith("index,label\n")
  again = estimator(10, workdir=tmp_path / "run", **{k.replace(".", "__"): v for k, v in _fast(method).items()})
  again.fit(x, y, seed_labels={int(i): names[y[i]] for i in rows})
  np.testing.assert_array_equal(again.labels_, model.labels_)


def _fast(method):
  """fast_config's settings as the estimator's keyword arguments."""
  c = fast_config(method)
  return {"pretrain.epochs": c.pretrain.epochs, "hidden": list(c.hidden), "standardize": False,
          "cluster.update_interval": c.cluster.update_interval, "cluster.max_steps": c.cluster.max_steps,
          "cluster.tol": c.cluster.tol, "cluster.kmeans_n_init": c.cluster.kmeans_n_init,
          "vade.epochs": c.vade.epochs, "vade.batch_size": c.vade.batch_size}


def test_the_command_line_refuses_bad_seed_labels_in_one_line(tmp_path, capsys):
  (tmp_path / "s.csv").write_text("index,label\n1,3\n2,12\n")
  argv = ["fit", "dec", "--dataset", "digits", "--workdir", str(tmp_path / "run"), "--seed-labels",
          str(tmp_path / "s.csv"), *sum((["--set", s] for s in FAST), [])]
  assert cli.main(argv) == 2
  assert "class 12 is out of range" in error_line(capsys)
  assert not (tmp_path / "run").exists()
  missing = argv[:argv.index("--seed-labels") + 1] + [str(tmp_path / "none.csv")]
  assert cli.main(missing) == 2
  line = error_line(capsys)
  assert "seed labels file" in line and "does not exist" in line


def test_seeded_rows_are_the_labelled_rows_and_their_neighbours_of_one_class():
  neighbors = np.array([[0, 1, 2], [1, 0, 3], [2, 4, 0], [3, 1, 4], [4, 2, 3]])  # column 0: the row itself
  rows, classes = scan.seeded_rows(np.array([0, 3]), np.array([5, 7]), neighbors)
  # row 0 (class 5) brings 1 and 2; row 3 (class 7) brings 1 (claimed by both: left out) and 4
  assert rows.tolist() == [0, 2, 3, 4] and classes.tolist() == [5, 5, 7, 7]
  rows, classes = scan.seeded_rows(np.array([0, 1]), np.array([2, 3]), neighbors)  # a labelled row keeps its own
  assert dict(zip(rows.tolist(), classes.tolist())) == {0: 2, 1: 3, 2: 2, 3: 3}


class _Dense(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(6)(x)


def test_seeded_heads_learn_the_labelled_classes_and_leave_the_backbone():
  model = Clusterer(backbone=_Dense(), k=4, heads=2)
  params = model.init(jax.random.key(0), np.zeros((1, 5), np.float32))["params"]
  rng = np.random.default_rng(0)
  classes = rng.integers(0, 4, 40).astype(np.int32)
  features = (np.eye(4)[classes] @ rng.normal(size=(4, 6)) * 3 + rng.normal(size=(40, 6)) * 0.1).astype(np.float32)
  out, losses = scan.seed_heads(model, params, features, classes)
  assert losses[-1] < 0.05 < losses[0]
  logits = model.apply({"params": out}, features, method=model.classify)
  np.testing.assert_array_equal(np.argmax(logits, -1), np.stack([classes, classes]))
  chex.assert_trees_all_equal(out["backbone"], params["backbone"])
  # the loss is the mean cross-entropy of every head, as numpy computes it
  logits = np.asarray(model.apply({"params": params}, features, method=model.classify), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(losses[0], -np.mean(logp[:, np.arange(40), classes]), rtol=1e-5)


@pytest.mark.parametrize("method", ["scan", "swav", "deepcluster"])
def test_a_seeded_self_supervised_run_keeps_the_labelled_rows(tmp_path, method):
  x, y = load_digits(return_X_y=True)
  rng = np.random.default_rng(2)
  rows = np.concatenate([rng.choice(np.flatnonzero(y == c), 3, replace=False) for c in range(10)])
  seeding.write(tmp_path / "s.csv", rows, y[rows])
  config = cli.make_config(method, "digits", settings=TINY[method] + SHORTER[method])
  config.seed_labels = str(tmp_path / "s.csv")
  summary = engine.fit(config, tmp_path / "run", log=lambda _: None)
  if method == "scan":  # the heads were first trained on the labelled rows and their neighbours
    record = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if r.get("stage") == "seed_heads"]
    assert len(record) == 1 and record[0]["last_loss"] < record[0]["first_loss"] and record[0]["rows"] >= len(rows)
  labels = np.load(tmp_path / "run" / "labels.npy")
  np.testing.assert_array_equal(labels[rows], y[rows])
  assert summary["named_accuracy"] > 0.1 and summary["seed_labels"] == 30


def test_deepcluster_reclusters_from_the_seeded_classes_and_holds_the_labelled_targets():
  from jaxclust.methods import deepcluster
  rng = np.random.default_rng(0)
  directions = np.eye(8)[:3]
  classes = np.repeat(np.arange(3), 40)
  bank = directions[classes] + rng.normal(0, 0.1, (120, 8))
  bank = (bank / np.linalg.norm(bank, axis=1, keepdims=True)).astype(np.float32)
  state = deepcluster.DeepClusterState(step=0, params={}, batch_stats={}, opt_state=(), bank=bank[None],
                                       prototypes=np.zeros((1, 5, 8), np.float32),
                                       assignments=np.zeros((1, 120), np.int32))
  labelled = np.array([0, 1, 40, 41, 80])  # classes 0, 0, 1, 1, 2 -> numbered 2, 2, 0, 0, 1
  seeds = seeding.Seeds(labelled, np.array([2, 2, 0, 0, 1], np.int32), ("1", "2", "0", None, None))
  start = deepcluster.seeded_start(state, seeds, 120, warm_start=False, seed=0)
  for c, rows in ((2, [0, 1]), (0, [40, 41]), (1, [80])):
    mean = bank[rows].mean(0)
    np.testing.assert_allclose(start[0, c], mean / np.linalg.norm(mean), rtol=1e-5)
  fixed = seeding.vector(seeds, 120)
  fixed[5] = 4  # a labelled row's target holds whatever the k-means says
  out = deepcluster.recluster(state, jax.random.key(0), init=start, fixed=fixed)
  assignments = np.asarray(out.assignments[0])
  assert assignments[5] == 4
  rest = np.setdiff1d(np.arange(120), [5])
  expected = np.array([2, 0, 1])[classes[rest]]  # a class in its seeded prototype, or split off to an unseeded one
  assert np.all((assignments[rest] == expected) | (assignments[rest] >= 3))
  assert np.mean(assignments[rest] == expected) > 0.5


def test_swav_seeds_the_labelled_classes_prototypes_with_their_mean_embeddings():
  from jaxclust.methods import swav
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(6, 5)).astype(np.float32)
  state = swav.SwAVState(step=0, params={"prototypes": {"kernel": jax.numpy.asarray(kernel)}}, batch_stats={},
                         opt_state=(), queue=None, queue_filled=0)
  z = rng.normal(size=(30, 6))
  seeds = seeding.Seeds(np.array([3, 4, 9]), np.array([1, 1, 3], np.int32), (None, "a", None, "b", None))
  out = np.asarray(swav.seed_prototypes(state, z, seeds).params["prototypes"]["kernel"])
  for c, rows in ((1, [3, 4]), (3, [9])):
    mean = z[rows].mean(0)
    np.testing.assert_allclose(out[:, c], mean / np.linalg.norm(mean), rtol=1e-5)
  np.testing.assert_array_equal(out[:, [0, 2, 4]], kernel[:, [0, 2, 4]])


def test_swav_holds_the_labelled_images_codes_and_leaves_the_others():
  from jaxclust.methods import swav
  rng = np.random.default_rng(1)
  scores = [jax.numpy.asarray(rng.normal(size=(8, 5)), jax.numpy.float32) for _ in range(3)]
  fixed = np.array([-1, 2, -1, -1, 0, -1, -1, -1], np.int32)
  loss, codes = swav.swav_loss(scores, fixed=jax.numpy.asarray(fixed))
  _, free = swav.swav_loss(scores)
  for q, q_free in zip(codes, free):
    np.testing.assert_allclose(np.asarray(q)[[1, 4]], np.eye(5)[[2, 0]])
    np.testing.assert_allclose(np.asarray(q)[fixed < 0], np.asarray(q_free)[fixed < 0], rtol=1e-6)
  # the loss with the held codes, as the paper's formula computes it in numpy
  log_p = [np.asarray(jax.nn.log_softmax(s / 0.1, -1), np.float64) for s in scores]
  expected = np.mean([np.mean([-np.mean(np.sum(np.asarray(codes[i]) * log_p[v], -1)) for v in range(3) if v != i])
                      for i in range(2)])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
