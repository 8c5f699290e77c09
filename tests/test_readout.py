"""readout="knn": cluster transitions against a loop, the grouping against scikit-learn, SwAV and DeepCluster-v2
end to end (neighbour counts against scikit-learn's exact neighbours)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from jaxclust import readout


def test_transitions_count_each_pair_from_its_rows_cluster():
  rng = np.random.default_rng(0)
  clusters, views = rng.integers(0, 7, 50), rng.integers(0, 7, (50, 4))
  mask = rng.random(50) < 0.8
  expected = np.zeros((7, 7))
  for i, v in itertools.product(range(50), range(4)):
    if mask[i]:
      expected[clusters[i], views[i, v]] += 1
  out = jax.jit(readout.cluster_transitions, static_argnums=2)(jnp.asarray(clusters), jnp.asarray(views), 7,
                                                               jnp.asarray(mask))
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(readout.cluster_transitions(clusters, views, 7).sum(), 200)
  with pytest.raises(ValueError, match=r"same b; got shapes \(50,\) and \(40, 4\)"):
    readout.cluster_transitions(jnp.asarray(clusters), jnp.asarray(views[:40]), 7)


def _prototypes(k, rng):
  p = rng.normal(size=(k, 5))
  return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_grouping_is_average_linkage_on_the_normalized_symmetric_transitions():
  """The same partition as scikit-learn's average-linkage agglomerative clustering of 1 - S."""
  rng = np.random.default_rng(1)
  for trial in range(5):
    counts = rng.poisson(3.0, (12, 12)).astype(float) * (rng.random((12, 12)) < 0.6)
    np.fill_diagonal(counts, 0.0)
    counts[0, 1] += 1.0  # every cluster has a transition (no isolated row by chance)
    counts += np.diag(rng.poisson(50.0, 12))  # staying in its own cluster: ignored
    a = counts + counts.T - 2 * np.diag(np.diag(counts))
    assert np.all(a.sum(1) > 0)
    s = a / np.sqrt(np.outer(a.sum(1), a.sum(1)))
    reference = AgglomerativeClustering(4, metric="precomputed", linkage="average").fit(1.0 - s).labels_
    groups = readout.group_clusters(counts, 4, _prototypes(12, rng))
    assert groups.shape == (12,) and set(groups) == set(range(4))
    assert adjusted_rand_score(reference, groups) == 1.0, trial


def test_grouping_recovers_planted_groups_of_unequal_size():
  """Pairs fall mostly within planted groups (sizes 2, 5, 9), with uniform noise across all clusters."""
  rng = np.random.default_rng(2)
  truth = np.repeat([0, 1, 2], [2, 5, 9])
  counts = rng.poisson(2.0, (16, 16)).astype(float)
  counts += 30.0 * (truth[:, None] == truth[None, :])
  groups = readout.group_clusters(counts, 3, _prototypes(16, rng))
  assert adjusted_rand_score(truth, groups) == 1.0


def test_clusters_without_transitions_join_their_nearest_prototypes_group():
  rng = np.random.default_rng(3)
  prototypes = _prototypes(6, rng)
  prototypes[5] = prototypes[1] + 0.01 * rng.normal(size=5)  # cluster 5 never visited, next to 1
  counts = np.zeros((6, 6))
  counts[0, 1] = counts[2, 3] = counts[3, 4] = 10.0
  counts[1, 2] = 1.0
  counts[5, 5] = 4.0  # its images pair only among themselves: no transition to group it by
  groups = readout.group_clusters(counts, 2, prototypes)
  assert groups[0] == groups[1] == groups[5] and groups[2] == groups[3] == groups[4] and groups[0] != groups[2]
  # A collapsed run: two clusters with transitions give at most two groups; nothing fails.
  counts = np.zeros((6, 6))
  counts[0, 1] = 3.0
  groups = readout.group_clusters(counts, 4, prototypes)
  assert set(groups) == {0, 1} and groups[0] != groups[1]
  assert set(readout.group_clusters(np.zeros((6, 6)), 4, prototypes)) == {0}


def test_bad_input_is_refused_with_its_value():
  p = _prototypes(4, np.random.default_rng(4))
  with pytest.raises(ValueError, match=r"n_groups=5 must be <= K \(the clusters\)=4"):
    readout.group_clusters(np.ones((4, 4)), 5, p)
  with pytest.raises(ValueError, match=r"square \[K, K\] matrix; got shape \(4, 3\)"):
    readout.group_clusters(np.ones((4, 3)), 2, p)
  with pytest.raises(ValueError, match="non-negative"):
    readout.group_clusters(-np.ones((4, 4)), 2, p)
  with pytest.raises(ValueError, match=r"prototypes has 3 rows but transitions is \[4, 4\]"):
    readout.group_clusters(np.ones((4, 4)), 2, p[:3])


@pytest.mark.parametrize("method", ["swav", "deepcluster"])
def test_a_run_reads_out_the_neighbour_groups_and_predict_uses_them(tmp_path, method):
  """30 prototypes on digits read out as 10 clusters by their members' nearest neighbours."""
  import json

  from sklearn.neighbors import NearestNeighbors

  from jaxclust import engine, methods, parallel
  from jaxclust.data import sources
  from jaxclust.methods import online
  from test_online_train import final_state, tiny_config
  c = tiny_config(method)
  c.epochs, c.prototypes, c.n_clusters, c.readout, c.readout_neighbors = 2, 30, 10, "knn", 5
  (tmp_path / "run").mkdir()
  np.save(tmp_path / "run" / "centroids.npy", np.zeros((10, c.head_out)))  # another readout's file: removed
  summary = engine.fit(c, tmp_path / "run", log=lambda _: None, mesh=parallel.make_mesh(1))
  groups, labels = np.load(tmp_path / "run" / "groups.npy"), np.load(tmp_path / "run" / "labels.npy")
  assert not (tmp_path / "run" / "centroids.npy").exists()
  assert groups.shape == (30,) and set(groups) <= set(range(10))
  images = np.asarray(sources.load("digits").x, np.float32)
  np.testing.assert_array_equal(engine.predict(tmp_path / "run", images).labels, labels)
  state, scorer, n = final_state(tmp_path / "run"), methods.get(method).scorer(c), len(images)
  # Each image's cluster is its prototype's group.
  codes = np.asarray(scorer.code(state, images, n))
  np.testing.assert_array_equal(labels, groups[codes])
  last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
  assert last["acc"] == summary["acc"]  # the same readout each epoch and at the end
  # The collapse figures of the last state's embeddings (SwAV's 30 prototypes in head_out dimensions).
  z = np.asarray(scorer.embed(state, images, n), np.float64)
  np.testing.assert_allclose(last["embedding_spread"], 1 - np.sum(z.mean(0) ** 2), rtol=1e-4)
  if method == "swav":
    prototypes = np.asarray(scorer.prototypes(state), np.float64)
    projector = np.linalg.pinv(prototypes) @ prototypes
    np.testing.assert_allclose(last["prototype_span"], np.mean(np.sum((z @ projector) ** 2, 1)), rtol=1e-4)
  else:
    assert "prototype_span" not in last
  # The groups are those of the counts of scikit-learn's exact 5 nearest neighbours (cosine, self left out).
  nearest = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(z).kneighbors(z)[1]
  nearest = np.array([[j for j in row if j != i][:5] for i, row in enumerate(nearest)])
  counts = np.zeros((30, 30))
  np.add.at(counts, (np.repeat(codes, 5), codes[nearest].reshape(-1)), 1.0)
  transitions = readout.neighbor_transitions(jnp.asarray(z, jnp.float32), jnp.asarray(codes), 5, 30)
  np.testing.assert_array_equal(transitions, counts)
  prototypes = np.asarray(scorer.prototypes(state))
  grouped = readout.neighbor_groups(jnp.asarray(z, jnp.float32), jnp.asarray(codes), 5, 10, jnp.asarray(prototypes))
  np.testing.assert_array_equal(grouped, groups)
  assert adjusted_rand_score(readout.group_clusters(counts, 10, prototypes), groups) == 1.0
  # The 8-device mesh (rows sharded, padded to 1800) groups the same.
  mesh = parallel.make_mesh(8)
  labels8, grouping8 = online.labels(c, scorer, parallel.put(state, mesh), parallel.global_rows(images, mesh)[0], n, 10)
  assert adjusted_rand_score(grouping8["groups"], groups) == 1.0
  np.testing.assert_array_equal(labels8, labels)


def test_an_unknown_readout_and_a_bad_neighbour_count_are_refused(tmp_path):
  from jaxclust import engine
  from test_online_train import tiny_config
  c = tiny_config("deepcluster")
  c.readout = "spectral"
  with pytest.raises(ValueError, match="readout='spectral' must be 'kmeans' or 'knn'"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c.readout, c.readout_neighbors = "knn", 1797
  with pytest.raises(ValueError, match=r"readout_neighbors=1797 must be <= n_samples - 1=1796"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  c.readout_neighbors = 0
  with pytest.raises(ValueError, match="readout_neighbors=0 must be >= 1"):
    engine.fit(c, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()
