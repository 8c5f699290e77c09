"""DeepCluster-v2: the loss against numpy, re-clustering of the bank (per prototype set), bank updates,
sharded == single device."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxclust import parallel
from jaxclust.data import augment
from jaxclust.methods import deepcluster
from jaxclust.models import heads, resnet


def test_cluster_loss_matches_numpy():
  rng = np.random.default_rng(0)
  z, prototypes = rng.normal(size=(10, 6)), rng.normal(size=(4, 6))
  prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
  targets = rng.integers(0, 4, 10)
  logits = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ prototypes.T / 0.1
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  expected = -np.mean(log_p[np.arange(10), targets])
  np.testing.assert_allclose(deepcluster.cluster_loss(z.astype(np.float32), prototypes.astype(np.float32),
                                                      targets), expected, rtol=1e-5)


def _setup(sets=1, banks=1):
  model = heads.Pretext(resnet.SmallCNN(channels=(8, 16)), heads.ProjectionHead(32, 16))
  tx = optax.sgd(0.05, momentum=0.9)
  images = jax.random.uniform(jax.random.key(0), (32, 28, 28, 1))
  state = deepcluster.init(model, jax.random.key(1), images[:2], tx, n=32, k=4, dim=16, sets=sets, banks=banks)
  return model, tx, images, state


def test_recluster_assigns_each_row_to_its_nearest_prototype_in_every_set():
  """Set i clusters bank i % banks (the paper's crops_for_assign), each set its own k-means run."""
  from jaxclust.kernels.kmeans import kmeans
  _, _, _, state = _setup(sets=3, banks=2)
  assert state.bank.shape == (2, 32, 16) and not np.allclose(state.bank[0], state.bank[1])
  state = deepcluster.recluster(state, jax.random.key(2))
  assert state.prototypes.shape == (3, 4, 16) and state.assignments.shape == (3, 32)
  for i, bank in zip(range(3), (0, 1, 0)):
    cosine = np.asarray(state.bank[bank] @ state.prototypes[i].T)
    np.testing.assert_array_equal(state.assignments[i], cosine.argmax(1))
    np.testing.assert_allclose(np.linalg.norm(state.prototypes[i], axis=1), 1.0, rtol=1e-5)
    assert len(np.unique(state.assignments[i])) == 4  # no empty cluster
    # Each set is its own k-means run, started from the key fold_in(rng, set).
    alone = kmeans(state.bank[bank], 4, rng=jax.random.fold_in(jax.random.key(2), i), spherical=True,
                   max_iter=10)
    np.testing.assert_array_equal(state.assignments[i], alone.labels)


def _spherical_lloyd(x, centers, iterations):
  """Spherical k-means in numpy from given centers (the reference for the warm start)."""
  for _ in range(iterations):
    labels = (x @ centers.T).argmax(1)
    centers = np.stack([x[labels == j].sum(0) for j in range(len(centers))])
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
  return labels, centers


def test_recluster_warm_start_continues_from_the_current_prototypes():
  """Started from the current prototypes, each set's clusters keep their prototypes' numbering and
  match numpy's Lloyd iterations from them (k-means++ would number 8 clusters in any of 8! orders)."""
  _, _, _, state = _setup(sets=2, banks=2)
  rng = np.random.default_rng(0)
  directions = rng.normal(size=(8, 16))
  truth = np.tile(np.arange(8), 4)  # 32 rows, 8 groups of 4
  bank = directions[truth] + 0.3 * rng.normal(size=(2, 32, 16))
  bank /= np.linalg.norm(bank, axis=-1, keepdims=True)
  orders = np.stack([rng.permutation(8) for _ in range(2)])  # set i's prototype j sits near group orders[i, j]
  start = directions[orders] + 0.3 * rng.normal(size=(2, 8, 16))
  start /= np.linalg.norm(start, axis=-1, keepdims=True)
  state = state.replace(bank=jnp.asarray(bank, jnp.float32), prototypes=jnp.asarray(start, jnp.float32))
  warm = deepcluster.recluster(state, jax.random.key(2), warm_start=True)
  for i in range(2):
    labels, centers = _spherical_lloyd(bank[i], start[i], 10)
    np.testing.assert_array_equal(warm.assignments[i], labels)
    np.testing.assert_allclose(warm.prototypes[i], centers, atol=1e-5)
    np.testing.assert_array_equal(orders[i][np.asarray(warm.assignments[i])], truth)
  # The same on the 8-device mesh the drivers place the state on.
  on_mesh = jax.jit(functools.partial(deepcluster.recluster, warm_start=True))(
      parallel.put(state, parallel.make_mesh()), jax.random.key(2))
  assert len(on_mesh.assignments.sharding.device_set) == 8
  np.testing.assert_array_equal(on_mesh.assignments, warm.assignments)
  np.testing.assert_allclose(on_mesh.prototypes, warm.prototypes, atol=1e-6)


def test_fill_bank_puts_the_normalized_embeddings_in_every_bank():
  _, _, _, state = _setup(banks=2)
  z = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32) * 3.0
  filled = deepcluster.fill_bank(state, z)
  expected = z / np.linalg.norm(z, axis=1, keepdims=True)
  assert filled.bank.shape == (2, 32, 16)
  for b in range(2):
    np.testing.assert_allclose(filled.bank[b], expected, rtol=1e-5, atol=1e-6)


def test_train_step_refreshes_the_bank_and_shards():
  model, tx, images, state = _setup()
  state = deepcluster.recluster(state, jax.random.key(2))
  aug = functools.partial(augment.multi_crop, crops=((2, 28, (0.3, 1.0)), (2, 12, (0.1, 0.3))))
  step = jax.jit(functools.partial(chex.assert_max_traces(deepcluster.train_step, n=2), model=model, tx=tx,
                                   augment=aug))  # once per placement
  index = jnp.arange(16, 32, dtype=jnp.int32)
  batch = {"image": images[16:], "index": index, "mask": jnp.ones(16, bool)}
  single, m1 = step(jax.device_put(state, jax.devices()[0]), batch, jax.random.key(3))
  np.testing.assert_array_equal(single.bank[:, :16], state.bank[:, :16])  # rows not in the batch are kept
  assert not np.allclose(single.bank[:, 16:], state.bank[:, 16:])
  np.testing.assert_allclose(np.linalg.norm(single.bank, axis=-1), 1.0, rtol=1e-5)
  mesh = parallel.make_mesh()
  sharded_batch = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P("data"))), batch)
  sharded, m2 = step(parallel.put(state, mesh), sharded_batch, jax.random.key(3))
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(sharded.bank, single.bank, rtol=1e-4, atol=1e-5)


def test_every_crop_is_trained_against_the_assignment_of_every_set():
  """The loss is the mean cross-entropy over all crops and prototype sets, each crop size group in its
  own train-mode pass."""
  model, tx, images, state = _setup(sets=2, banks=2)
  state = deepcluster.recluster(state, jax.random.key(2))
  assert not np.array_equal(state.assignments[0], state.assignments[1])  # the sets' targets differ
  x = images[:8]
  small = x[:, 4:16, 4:16]
  crops = [x, x[:, ::-1], small]
  step = jax.jit(functools.partial(deepcluster.train_step, model=model, tx=tx, augment=lambda rng, im: crops))
  index = jnp.arange(8, dtype=jnp.int32)
  new, m = step(state, {"image": x, "index": index}, jax.random.key(3))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  z_large, _ = model.apply(variables, jnp.concatenate(crops[:2]), train=True, mutable=["batch_stats"])
  z_small, _ = model.apply(variables, small, train=True, mutable=["batch_stats"])
  z = np.concatenate([np.asarray(z_large), np.asarray(z_small)])
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  per_set = []
  for prototypes, assignments in zip(np.asarray(state.prototypes), np.asarray(state.assignments)):
    logits = z @ prototypes.T / 0.1
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    per_set.append(-np.mean(log_p[np.arange(24), np.tile(assignments[:8], 3)]))
  np.testing.assert_allclose(m["loss"], np.mean(per_set), rtol=1e-5)
  np.testing.assert_allclose(new.bank[0, :8], z[:8], rtol=1e-4, atol=1e-5)  # crop 0 fills bank 0,
  np.testing.assert_allclose(new.bank[1, :8], z[8:16], rtol=1e-4, atol=1e-5)  # crop 1 bank 1
  np.testing.assert_array_equal(new.bank[:, 8:], state.bank[:, 8:])
