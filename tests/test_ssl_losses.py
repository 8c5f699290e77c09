"""SimCLR's NT-Xent and SCAN's two losses against loop-by-loop numpy transcriptions of the papers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxclust.methods import scan, simclr


def softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def nt_xent_reference(z1, z2, tau):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  b, losses = len(z1), []
  for i in range(2 * b):
    positive = (i + b) % (2 * b)
    denominator = sum(np.exp(z[i] @ z[j] / tau) for j in range(2 * b) if j != i)
    losses.append(-np.log(np.exp(z[i] @ z[positive] / tau) / denominator))
  return np.mean(losses)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_eq_1(tau):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
  np.testing.assert_allclose(simclr.nt_xent(z1, z2, tau), nt_xent_reference(z1, z2, tau), rtol=1e-5)
  # A masked (padding) image is neither an anchor nor a negative: as if it were not in the batch.
  mask = np.array([True] * 5 + [False])
  np.testing.assert_allclose(simclr.nt_xent(z1, z2, tau, mask), nt_xent_reference(z1[:5], z2[:5], tau), rtol=1e-5)


def test_nt_xent_uses_the_global_batch_when_sharded():
  from jaxclust import parallel
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(2, 16, 4)).astype(np.float32)
  mesh = parallel.make_mesh()
  sharded = jax.jit(simclr.nt_xent)(parallel.shard_rows(z1, mesh), parallel.shard_rows(z2, mesh))
  np.testing.assert_allclose(sharded, nt_xent_reference(z1, z2, 0.1), rtol=1e-5)


def scan_reference(anchor, neighbor, weight):
  pa, pn = softmax(anchor.astype(np.float64)), softmax(neighbor.astype(np.float64))
  consistency = np.mean([-np.log(pa[i] @ pn[i]) for i in range(len(pa))])
  mean_p = pa.mean(0)
  h = -np.sum(mean_p * np.log(mean_p))
  return consistency - weight * h, consistency, h


def test_scan_loss_matches_eq_2():
  rng = np.random.default_rng(2)
  anchor, neighbor = rng.normal(size=(2, 12, 4)).astype(np.float32) * 2
  total, parts = scan.scan_loss(anchor, neighbor, 5.0)
  ref_total, ref_consistency, ref_h = scan_reference(anchor, neighbor, 5.0)
  np.testing.assert_allclose([total, parts["consistency"], parts["entropy"]], [ref_total, ref_consistency, ref_h],
                             rtol=1e-5)
  mask = np.arange(12) < 9
  total, _ = scan.scan_loss(anchor, neighbor, 5.0, mask)
  np.testing.assert_allclose(total, scan_reference(anchor[:9], neighbor[:9], 5.0)[0], rtol=1e-5)


def selflabel_reference(weak, strong, threshold):
  p = softmax(weak.astype(np.float64))
  confident = p.max(1) > threshold
  target = p.argmax(1)[confident]
  if not confident.any():
    return 0.0, 0.0
  classes, counts = np.unique(target, return_counts=True)
  class_weight = np.ones(weak.shape[1])
  class_weight[classes] = len(target) / counts
  log_p = np.log(softmax(strong[confident].astype(np.float64)))
  w = class_weight[target]
  ce = -log_p[np.arange(len(target)), target]
  return np.sum(w * ce) / np.sum(w), confident.mean()  # torch CrossEntropyLoss(weight), reduction "mean"


def test_selflabel_loss_matches_the_class_balanced_cross_entropy():
  rng = np.random.default_rng(3)
  weak = rng.normal(size=(40, 5)).astype(np.float32) * 6  # many confident samples, unbalanced classes
  strong = rng.normal(size=(40, 5)).astype(np.float32)
  loss, metrics = scan.selflabel_loss(weak, strong, 0.9)
  ref_loss, ref_share = selflabel_reference(weak, strong, 0.9)
  assert 0 < ref_share < 1
  np.testing.assert_allclose([loss, metrics["confident"]], [ref_loss, ref_share], rtol=1e-5)
  # The weak view is the target only: no gradient flows into it.
  grad_weak = jax.grad(lambda w: scan.selflabel_loss(w, strong, 0.9)[0])(jnp.asarray(weak))
  assert not np.any(np.asarray(grad_weak))


def test_selflabel_loss_without_confident_samples_is_zero_not_nan():
  weak = np.zeros((8, 4), np.float32)  # uniform: nobody passes 0.99
  loss, metrics = scan.selflabel_loss(weak, np.ones((8, 4), np.float32), 0.99)
  grads = jax.grad(lambda s: scan.selflabel_loss(weak, s, 0.99)[0])(jnp.ones((8, 4)))
  assert float(loss) == 0.0 and float(metrics["confident"]) == 0.0 and np.all(np.isfinite(grads))


def test_info_nce_matches_moco_eq_1():
  from jaxclust.methods import moco
  rng = np.random.default_rng(4)
  q, k, queue = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.normal(size=(10, 5))
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  qn, kn, queuen = unit(q), unit(k), unit(queue)
  losses = []
  for i in range(6):
    positive = np.exp(qn[i] @ kn[i] / 0.2)
    negatives = sum(np.exp(qn[i] @ queuen[j] / 0.2) for j in range(10))
    losses.append(-np.log(positive / (positive + negatives)))
  np.testing.assert_allclose(moco.info_nce(q.astype(np.float32), k.astype(np.float32), queue.astype(np.float32)),
                             np.mean(losses), rtol=1e-5)
  grad_k = jax.grad(lambda k: moco.info_nce(jnp.asarray(q, jnp.float32), k, jnp.asarray(queue, jnp.float32)))(
      jnp.asarray(k, jnp.float32))
  assert not np.any(np.asarray(grad_k))  # keys come from the momentum encoder: no gradient
