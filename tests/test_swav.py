"""SwAV's swapped-prediction loss against a numpy transcription of Algorithm 1; global Sinkhorn on 8 devices."""

import jax
import numpy as np
import pytest

from jaxclust import parallel
from jaxclust.methods import swav


def sinkhorn_reference(scores, eps=0.05, iters=3):
  q = np.exp(scores / eps).T  # [K, B], as in the paper's code
  q /= q.sum()
  k, b = q.shape
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def log_softmax(a):
  a = a - a.max(-1, keepdims=True)
  return a - np.log(np.exp(a).sum(-1, keepdims=True))


def swav_reference(crops, n_assign, temperature, queues=None):
  loss = 0.0
  for i in range(n_assign):
    scores = crops[i] if queues is None else np.concatenate([queues[i], crops[i]])
    q = sinkhorn_reference(scores.astype(np.float64))[-len(crops[i]):]
    sub = 0.0
    for v in range(len(crops)):
      if v != i:
        sub -= np.mean(np.sum(q * log_softmax(crops[v].astype(np.float64) / temperature), axis=1))
    loss += sub / (len(crops) - 1)
  return loss / n_assign


def make_scores(rng, n_crops, b=16, k=12, d=6):
  prototypes = rng.normal(size=(d, k))
  prototypes /= np.linalg.norm(prototypes, axis=0)
  crops = []
  for _ in range(n_crops):
    z = rng.normal(size=(b, d))
    crops.append((z / np.linalg.norm(z, axis=1, keepdims=True) @ prototypes).astype(np.float32))
  return crops, prototypes


@pytest.mark.parametrize("n_crops", [2, 5])
def test_loss_matches_algorithm_1(n_crops):
  crops, _ = make_scores(np.random.default_rng(n_crops), n_crops)
  loss, codes = swav.swav_loss(crops, n_assign=2, temperature=0.1)
  np.testing.assert_allclose(loss, swav_reference(crops, 2, 0.1), rtol=1e-5)
  np.testing.assert_allclose(codes[0], sinkhorn_reference(crops[0].astype(np.float64)), rtol=1e-4, atol=1e-6)


def test_queue_joins_the_assignment_only():
  rng = np.random.default_rng(7)
  crops, prototypes = make_scores(rng, 4)
  queues = [make_scores(rng, 1, b=32)[0][0] for _ in range(2)]
  loss, codes = swav.swav_loss(crops, n_assign=2, temperature=0.1, queue_scores=queues)
  np.testing.assert_allclose(loss, swav_reference(crops, 2, 0.1, queues), rtol=1e-5)
  assert codes[0].shape == (16, 12)


def test_global_sinkhorn_on_8_devices_equals_one_device():
  rng = np.random.default_rng(3)
  crops, _ = make_scores(rng, 3, b=32)
  queues = [make_scores(rng, 1, b=64)[0][0] for _ in range(2)]
  mesh = parallel.make_mesh()
  sharded = [parallel.shard_rows(c, mesh) for c in crops]
  for queue in (None, queues):
    loss, codes = jax.jit(lambda c, q: swav.swav_loss(c, n_assign=2, queue_scores=q, mesh=mesh))(sharded, queue)
    ref_loss, ref_codes = swav.swav_loss(crops, n_assign=2, queue_scores=queue)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(codes[1], ref_codes[1], rtol=1e-4, atol=1e-7)
    # Per-device Sinkhorn (a silent difference from the paper in some libraries) would differ:
    local = np.concatenate([np.asarray(swav.codes(crops[1][i:i + 4])) for i in range(0, 32, 4)])
    if queue is None:
      assert not np.allclose(local, ref_codes[1], atol=1e-3)


def test_train_step_freezes_prototypes_fills_the_queue_and_shards():
  import functools

  import chex
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from jaxclust.data import augment
  from jaxclust.models import resnet

  model = swav.SwAVModel(resnet.SmallCNN(channels=(8, 16)), hidden=32, out=16, prototypes=20)
  images = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  crops = functools.partial(augment.multi_crop, crops=((2, 28, (0.3, 1.0)), (2, 16, (0.1, 0.3))))
  tx = optax.sgd(0.1, momentum=0.9)
  mesh = parallel.make_mesh()
  state = swav.init(model, jax.random.key(1), images[:2], tx, queue_length=32)
  normalized = swav.normalize(state.params["prototypes"]["kernel"], axis=0)
  outs = []
  # Traced once per placement, never again per step (the queue fills, the freeze ends): as in the
  # driver, the state is placed on the mesh first (a placement change of the state would re-trace).
  counted = chex.assert_max_traces(swav.train_step, n=2)
  for m, placed in ((None, images), (mesh, jax.device_put(images, NamedSharding(mesh, P("data"))))):
    step = jax.jit(functools.partial(counted, model=model, tx=tx, augment=crops, freeze_prototypes=2,
                                     update_queue=True, mesh=m))
    s = state if m is None else parallel.put(state, mesh)
    for i in range(3):
      s, metrics = step(s, {"image": placed}, jax.random.key(5))
      if i < 2:  # frozen: only re-normalized
        np.testing.assert_allclose(s.params["prototypes"]["kernel"], normalized, rtol=1e-6, atol=1e-7)
    outs.append((s, metrics))
  (single, m1), (sharded, m2) = outs
  assert int(single.queue_filled) == 32 and np.isfinite(m1["loss"])  # full after 2 steps; used in step 3
  assert not np.allclose(single.params["prototypes"]["kernel"], normalized)  # trained after the freeze
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-4)
  # The queue's front holds step 3's assignment embeddings: their spread is the step's batch_spread.
  front = np.asarray(single.queue[:, :16])
  np.testing.assert_allclose(m1["batch_spread"], 1 - np.mean(np.sum(front.mean(1) ** 2, -1)), rtol=1e-5)
  np.testing.assert_allclose(m2["batch_spread"], m1["batch_spread"], rtol=1e-4)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-3, atol=1e-5)
  chex.assert_trees_all_close(sharded.queue, single.queue, rtol=1e-4, atol=1e-5)
