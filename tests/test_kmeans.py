"""k-means against scikit-learn and against hand-written numpy Lloyd."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

import jaxclust
from jaxclust.kernels import kmeans as kmeans_module


def numpy_lloyd(x, centers, n_iter, w=None):
  """Plain Lloyd in float64, the independent reference."""
  x = x.astype(np.float64)
  w = np.ones(len(x)) if w is None else w
  c = centers.astype(np.float64)
  for _ in range(n_iter):
    labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    for j in range(len(c)):
      if w[labels == j].sum() > 0:
        c[j] = (w[labels == j, None] * x[labels == j]).sum(0) / w[labels == j].sum()
  labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
  inertia = (w * ((x - c[labels]) ** 2).sum(-1)).sum()
  return c, labels, inertia


@pytest.mark.parametrize("dataset", ["blobs", "digits"])
@pytest.mark.parametrize("n_init", [1, 5])
def test_inertia_within_one_percent_of_sklearn(dataset, n_init, request):
  x, _ = request.getfixturevalue(dataset)
  k = 10
  ours = jaxclust.kmeans(x, k, rng=jax.random.key(0), n_init=n_init)
  theirs = KMeans(k, n_init=n_init, random_state=0).fit(x)
  assert float(ours.inertia) <= 1.01 * theirs.inertia_
  assert bool(ours.converged)
  assert np.bincount(np.asarray(ours.labels), minlength=k).min() > 0
  # inertia is the sum of squared distances to the assigned centers
  c, lab = np.asarray(ours.centers, np.float64), np.asarray(ours.labels)
  np.testing.assert_allclose(float(ours.inertia), ((x - c[lab]) ** 2).sum(), rtol=1e-4)


def test_same_init_same_iterations_as_numpy_lloyd(digits):
  x, _ = digits
  init = x[np.random.default_rng(1).choice(len(x), 10, replace=False)]
  ours = jaxclust.kmeans(x, 10, rng=jax.random.key(0), init=init, max_iter=7, tol=0.0)
  c, labels, inertia = numpy_lloyd(x, init, 7)
  np.testing.assert_array_equal(np.asarray(ours.labels), labels)
  np.testing.assert_allclose(np.asarray(ours.centers), c, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(ours.inertia), inertia, rtol=1e-5)
  assert int(ours.n_iter) == 7


def test_sample_weight_equals_repeated_points(blobs):
  x, _ = blobs
  x = x[:600]
  reps = np.random.default_rng(0).integers(1, 4, len(x))
  init = x[:6]
  weighted = jaxclust.kmeans(x, 6, rng=jax.random.key(0), init=init, sample_weight=reps.astype(np.float32))
  repeated = jaxclust.kmeans(np.repeat(x, reps, axis=0), 6, rng=jax.random.key(0), init=init)
  np.testing.assert_allclose(np.asarray(weighted.centers), np.asarray(repeated.centers), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(weighted.inertia), float(repeated.inertia), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(weighted.counts), np.bincount(np.asarray(repeated.labels), minlength=6))


def test_spherical_is_a_fixed_point_of_cosine_lloyd(digits):
  x, _ = digits
  x = x + 0.01  # a few digits rows are not all-zero but keep it safe for normalization
  out = jaxclust.kmeans(x, 10, rng=jax.random.key(2), spherical=True, tol=0.0, max_iter=300)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  c = np.asarray(out.centers)
  np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
  labels = (xn @ c.T).argmax(1)
  np.testing.assert_array_equal(np.asarray(out.labels), labels)
  np.testing.assert_allclose(float(out.inertia), (1 - (xn * c[labels]).sum(1)).sum(), rtol=1e-4)
  if bool(out.converged):  # at convergence each center is its cluster's normalized mean direction
    mean = np.stack([xn[labels == j].sum(0) for j in range(10)])
    np.testing.assert_allclose(c, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-4)


def test_batched_problems_equal_separate_calls(blobs, digits):
  x = np.stack([blobs[0][:1000, :12], digits[0][:1000, :12]])
  init = np.stack([x[0, :5], x[1, :5]])
  batched = jaxclust.kmeans(x, 5, rng=jax.random.key(0), init=init)
  assert batched.centers.shape == (2, 5, 12) and batched.labels.shape == (2, 1000)
  for b in range(2):
    single = jaxclust.kmeans(x[b], 5, rng=jax.random.key(0), init=init[b])
    np.testing.assert_array_equal(np.asarray(batched.labels[b]), np.asarray(single.labels))
    np.testing.assert_allclose(float(batched.inertia[b]), float(single.inertia), rtol=1e-5)


def test_chunking_does_not_change_the_result(digits):
  x, _ = digits
  a = jaxclust.kmeans(x, 10, rng=jax.random.key(5), n_init=2)
  b = jaxclust.kmeans(x, 10, rng=jax.random.key(5), n_init=2, chunk_size=100)  # 17 chunks + tail
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-5)


def test_kmeans_plus_plus_beats_random_seeding(digits):
  """Greedy k-means++ seeds are spread out: lower pre-Lloyd inertia than uniform random seeds."""
  x, _ = digits
  seeded = jaxclust.kmeans(x, 10, rng=jax.random.key(0), max_iter=1)
  rand = [numpy_lloyd(x, x[np.random.default_rng(s).choice(len(x), 10, replace=False)], 1)[2] for s in range(5)]
  assert float(seeded.inertia) < np.mean(rand)


def test_empty_clusters_are_reseeded():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(20, 1, (300, 4))]).astype(np.float32)
  init = np.tile(x[:1], (6, 1)) + 1e-3 * np.arange(6)[:, None]  # five of six clusters start empty
  out = jaxclust.kmeans(x, 6, rng=jax.random.key(0), init=init.astype(np.float32))
  assert np.isfinite(np.asarray(out.centers)).all()
  assert np.bincount(np.asarray(out.labels), minlength=6).min() > 0


def test_fewer_distinct_points_than_k_warns():
  x = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)
  with pytest.warns(RuntimeWarning, match="empty clusters"):
    out = jaxclust.kmeans(x, 4, rng=jax.random.key(0))
  assert np.isfinite(np.asarray(out.centers)).all()


def test_no_recompilation_for_same_shapes(digits, monkeypatch):
  x, _ = digits
  traced = kmeans_module.jax.jit(chex.assert_max_traces(kmeans_module._solve_impl, n=1),
                                 static_argnames=kmeans_module._STATIC)
  monkeypatch.setattr(kmeans_module, "_solve", traced)
  jaxclust.kmeans(x, 10, rng=jax.random.key(0), tol=1e-4)
  jaxclust.kmeans(x * 2.0, 10, rng=jax.random.key(1), tol=1e-3)  # new values, seed and tol: same program
  with pytest.raises(AssertionError):  # a new shape is a new trace, which the counter must catch
    jaxclust.kmeans(x[:-1], 10, rng=jax.random.key(0))


def test_jit_and_non_jit_agree(digits):
  x, _ = digits
  init = x[:10]
  eager = jaxclust.kmeans(x, 10, rng=jax.random.key(0), init=init)
  jitted = jax.jit(lambda x: jaxclust.kmeans(x, 10, rng=jax.random.key(0), init=init))(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(eager.labels), np.asarray(jitted.labels))


class TestMiniBatch:

  def test_update_is_sculley_running_mean(self):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 3)).astype(np.float32)
    batches = [rng.normal(size=(50, 3)).astype(np.float32) for _ in range(3)]
    state = jaxclust.minibatch_init(centers)
    c, v = centers.astype(np.float64), np.zeros(4)
    for b in batches:
      state = jaxclust.minibatch_update(state, jnp.asarray(b))
      labels = ((b[:, None] - c[None]) ** 2).sum(-1).argmin(1)
      for xi, j in zip(b, labels):  # Sculley 2010, Algorithm 1: per-center rate 1/v
        v[j] += 1
        c[j] = (1 - 1 / v[j]) * c[j] + xi / v[j]
    np.testing.assert_allclose(np.asarray(state.centers), c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.counts), v)

  def test_close_to_full_kmeans(self, blobs):
    x, _ = blobs
    mb = jaxclust.minibatch_kmeans(x, 8, rng=jax.random.key(0), batch_size=256, n_steps=100)
    full = KMeans(8, n_init=5, random_state=0).fit(x)
    assert float(mb.inertia) <= 1.05 * full.inertia_
    assert np.isfinite(np.asarray(mb.centers)).all()


class TestRange:
  """kmeans_range: every k of a range in one call (choosing k, stability)."""

  def test_best_run_within_one_percent_of_sklearn_for_every_k(self, digits):
    x, _ = digits
    ks = list(range(2, 13))
    out = kmeans_module.kmeans_range(x, ks, rng=jax.random.key(0), runs=4)
    chex.assert_shape(out.labels, (4, len(ks), len(x)))
    for i, k in enumerate(ks):
      theirs = KMeans(k, n_init=4, random_state=0).fit(x).inertia_
      assert float(out.inertia[:, i].min()) <= 1.01 * theirs, k
      run = int(np.argmin(out.inertia[:, i]))
      c, lab = np.asarray(out.centers[run, i], np.float64), np.asarray(out.labels[run, i])
      assert np.isnan(c[k:]).all() and lab.max() < k and np.asarray(out.counts[run, i, k:]).sum() == 0
      np.testing.assert_allclose(float(out.inertia[run, i]), ((x - c[lab]) ** 2).sum(), rtol=1e-4)

  def test_each_k_equals_kmeans_from_the_first_k_seeds(self, blobs):
    x, _ = blobs
    seeds = x[np.random.default_rng(0).choice(len(x), 12, replace=False)][None]
    out = kmeans_module.kmeans_range(x, [3, 8, 12], rng=jax.random.key(0), runs=1, init=seeds)
    for i, k in enumerate([3, 8, 12]):
      alone = jaxclust.kmeans(x, k, rng=jax.random.key(0), init=seeds[0, :k])
      np.testing.assert_array_equal(out.labels[0, i], alone.labels)
      np.testing.assert_allclose(out.centers[0, i, :k], alone.centers, rtol=1e-5, atol=1e-5)
      assert int(out.n_iter[0, i]) == int(alone.n_iter)

  @pytest.mark.parametrize("ks, init, match", [
      ([], None, r"ks=\[\] must be a non-empty sequence"),
      ([2, 101], None, "k=101"),
      ([2, 3], np.zeros((1, 2, 4), np.float32), r"init has shape \(1, 2, 4\), expected \(1, 3, 4\)")])
  def test_bad_input(self, ks, init, match):
    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
      kmeans_module.kmeans_range(x, ks, rng=jax.random.key(0), runs=1, init=init)


def _lloyd_split_reference(x, centers, iters):
  """Lloyd's algorithm with DeepCluster's empty-cluster rule, in numpy, for a case where one cluster is
  the only donor: the empty center becomes the donor's times 1 + eps (alternating signs), the donor's 1 - eps."""
  centers = centers.astype(np.float64).copy()
  sign = np.where(np.arange(x.shape[1]) % 2 == 0, 1.0, -1.0) / 1024
  for _ in range(iters):
    labels = np.argmin(((x[:, None] - centers[None]) ** 2).sum(-1), 1)
    counts = np.bincount(labels, minlength=len(centers))
    new = np.stack([x[labels == j].mean(0) if counts[j] else centers[j] for j in range(len(centers))])
    for j in np.flatnonzero(counts == 0):
      donor = int(np.argmax(counts))
      assert np.sum(counts > 0) == 1  # the case this reference covers: the draw has one outcome
      new[j], new[donor] = new[donor] * (1 + sign), new[donor] * (1 - sign)
    centers = new
  return centers, np.argmin(((x[:, None] - centers[None]) ** 2).sum(-1), 1)


def test_empty_clusters_split_as_deepcluster_does(mesh):
  """empty="split": the paper's rule checked against the numpy reference on a case whose draw is forced (every
  point nearest the first center, so the second cluster is empty and the first is the only donor); on 8 devices
  the same."""
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal([5, 5, 1, 2], 0.5, (100, 4)), rng.normal([-3, 7, 2, -1], 0.5, (92, 4))])
  x = x.astype(np.float32)
  init = np.stack([x.mean(0), np.full(4, 100.0)]).astype(np.float32)
  want_centers, want_labels = _lloyd_split_reference(x.astype(np.float64), init, 30)
  out = jaxclust.kmeans(jnp.asarray(x), 2, rng=jax.random.key(0), init=init, empty="split", max_iter=30, tol=0.0)
  np.testing.assert_array_equal(np.asarray(out.labels), want_labels)
  np.testing.assert_allclose(np.asarray(out.centers), want_centers, rtol=1e-4, atol=1e-4)
  assert set(np.bincount(want_labels)) == {100, 92}  # the split found the two blobs
  sharded = jaxclust.kmeans(jaxclust.parallel.shard_rows(jnp.asarray(x), mesh), 2, rng=jax.random.key(0), init=init, empty="split",
                   max_iter=30, tol=0.0)
  np.testing.assert_array_equal(np.asarray(sharded.labels), want_labels)
  # The default rule moves the empty center onto the farthest point instead: another route, the same blobs here.
  farthest = jaxclust.kmeans(jnp.asarray(x), 2, rng=jax.random.key(0), init=init, max_iter=30, tol=0.0)
  assert set(np.bincount(np.asarray(farthest.labels))) == {100, 92}
  with pytest.raises(ValueError, match="empty='none' must be 'farthest' or 'split'"):
    jaxclust.kmeans(jnp.asarray(x), 2, rng=jax.random.key(0), empty="none")


def test_split_rule_draws_donors_by_size_and_leaves_no_cluster_empty():
  x = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32)
  init = np.concatenate([x[:3], np.full((5, 8), 50.0, np.float32)])  # five centers no point is near
  out = jaxclust.kmeans(jnp.asarray(x), 8, rng=jax.random.key(3), init=init, empty="split", max_iter=50)
  assert np.all(np.asarray(out.counts) > 0)
