"""Backbones and the SimCLR / SCAN / self-label train steps: sizes, global BatchNorm, sharded == single device."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxclust import parallel
from jaxclust.data import augment
from jaxclust.methods import scan, simclr
from jaxclust.models import heads, resnet


@pytest.mark.parametrize("name, expected", [("resnet18", 11_176_512), ("resnet34", 21_284_672),
                                            ("resnet50", 23_508_032)])
def test_resnet_sizes_match_the_reference_networks(name, expected):
  # torchvision's resnet18/34/50 without the 1000-way classifier: 11,689,512 - 513,000 etc.
  shapes = jax.eval_shape(resnet.BACKBONES[name](stem="imagenet").init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"])) == expected


def test_batchnorm_uses_the_global_batch_when_sharded():
  model = resnet.SmallCNN(channels=(8, 16))
  x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  out, stats = apply(variables, x)
  sharded_out, sharded_stats = apply(variables, parallel.shard_rows(x, parallel.make_mesh()))
  np.testing.assert_allclose(sharded_out, out, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(sharded_stats, stats, rtol=1e-5, atol=1e-6)
  # Per-device statistics would differ: normalizing one half alone gives another output.
  half, _ = apply(variables, x[:8])
  assert not np.allclose(half, out[:8], atol=1e-3)


def test_bf16_computes_in_bf16_with_fp32_parameters():
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  fp32, bf16 = resnet.ResNet18(), resnet.ResNet18(dtype=jnp.bfloat16)
  variables = fp32.init(jax.random.key(1), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(bf16.init(jax.random.key(1), x)))
  jaxpr = str(jax.make_jaxpr(lambda v: bf16.apply(v, x))(variables))
  assert "bf16[4,32,32,64]" in jaxpr
  np.testing.assert_allclose(bf16.apply(variables, x), fp32.apply(variables, x), rtol=0.1, atol=0.05)


def _images(n=16):
  return jax.random.uniform(jax.random.key(0), (n, 28, 28, 1))


def _sharded(batch):
  mesh = parallel.make_mesh()
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P("data"))), batch)


def _run_both(step, state, batch, steps=2):
  # Committed placements (one device; replicated on the mesh), as a training loop would hold them.
  state, state_sharded = jax.device_put(state, jax.devices()[0]), parallel.put(state, parallel.make_mesh())
  outs = []
  for s, b in ((state, batch), (state_sharded, _sharded(batch))):
    for i in range(steps):
      s, m = step(s, b, jax.random.key(7))
    outs.append((s, m))
  return outs


def test_simclr_step_sharded_equals_single_device():
  model = heads.Pretext(resnet.SmallCNN(channels=(8, 16)), heads.ProjectionHead(32, 16))
  tx = optax.sgd(0.1, momentum=0.9)
  state = simclr.init(model, jax.random.key(1), _images(2), tx)
  aug = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0))

  @jax.jit
  @chex.assert_max_traces(n=2)  # once unsharded, once sharded; never per step
  def step(state, batch, rng):
    return simclr.train_step(state, batch, rng, model=model, tx=tx, augment=aug)

  (single, m1), (sharded, m2) = _run_both(step, state, {"image": _images()})
  assert np.isfinite(m1["loss"]) and float(m1["loss"]) > 0
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(sharded.batch_stats, single.batch_stats, rtol=1e-4, atol=1e-5)


def test_scan_and_selflabel_steps_sharded_equal_single_device():
  model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=3)
  tx = optax.adam(1e-3)
  state = scan.init(model, jax.random.key(1), _images(2), tx)
  aug = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0))
  step = jax.jit(functools.partial(scan.scan_step, model=model, tx=tx, augment=aug))
  batch = {"image": _images(), "neighbor": jnp.flip(_images(), 0)}
  (single, m1), (sharded, m2) = _run_both(step, state, batch)
  assert m1["head_loss"].shape == (3,)
  np.testing.assert_allclose(m2["head_loss"], m1["head_loss"], rtol=1e-5)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)
  strong = augment.batch(augment.strong_view, size=(28, 28), n_ops=1)  # the sharding is under test, not the ops
  label_step = jax.jit(functools.partial(scan.selflabel_step, model=model, tx=tx, weak=aug, strong=strong,
                                         head=1, threshold=0.3))
  (single, m1), (sharded, m2) = _run_both(label_step, single, {"image": _images()})
  assert 0.0 <= float(m1["confident"]) <= 1.0
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)


def test_scan_step_with_frozen_backbone_trains_the_heads_only():
  model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=2)
  tx = scan.head_only(optax.adamw(1e-2, weight_decay=0.1))
  state = scan.init(model, jax.random.key(1), _images(2), tx)
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.5, state.batch_stats))  # not the init values
  identity = lambda rng, images: images
  step = jax.jit(functools.partial(scan.scan_step, model=model, tx=tx, augment=identity, update_backbone=False))
  batch = {"image": _images(), "neighbor": jnp.flip(_images(), 0)}
  new, m = step(state, batch, jax.random.key(0))
  # The loss is eq. 2 on the heads of inference-mode features (numpy reference).
  logits = np.asarray(model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                  jnp.concatenate([batch["image"], batch["neighbor"]]), train=False), np.float64)
  for h in range(2):
    pa = np.exp(logits[h, :16]) / np.exp(logits[h, :16]).sum(1, keepdims=True)
    pn = np.exp(logits[h, 16:]) / np.exp(logits[h, 16:]).sum(1, keepdims=True)
    mean = pa.mean(0)
    expected = -np.mean(np.log(np.sum(pa * pn, 1))) + 5.0 * np.sum(mean * np.log(mean))
    np.testing.assert_allclose(m["head_loss"][h], expected, rtol=1e-4)
  # Backbone weights (weight decay included) and BatchNorm statistics do not move; the heads do.
  chex.assert_trees_all_equal(new.params["backbone"], state.params["backbone"])
  chex.assert_trees_all_equal(new.batch_stats, state.batch_stats)
  for h in ("head_0", "head_1"):
    assert np.abs(np.asarray(new.params[h]["kernel"] - state.params[h]["kernel"])).max() > 1e-4


def test_scan_step_on_precomputed_features_equals_the_step_on_the_images():
  model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=2)
  tx = scan.head_only(optax.adam(1e-2))
  state = scan.init(model, jax.random.key(1), _images(2), tx)
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.5, state.batch_stats))
  images, neighbors = _images(), jnp.flip(_images(), 0)
  on_images = functools.partial(scan.scan_step, model=model, tx=tx, augment=lambda rng, im: im, update_backbone=False)
  new_i, m_i = jax.jit(on_images)(state, {"image": images, "neighbor": neighbors}, jax.random.key(0))
  features = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         jnp.concatenate([images, neighbors]), train=False, method=model.features)
  on_features = functools.partial(scan.scan_step, model=model, tx=tx, augment=None, update_backbone=False)
  new_f, m_f = jax.jit(on_features)(state, {"features": features}, jax.random.key(0))
  np.testing.assert_allclose(m_f["head_loss"], m_i["head_loss"], rtol=1e-5)
  chex.assert_trees_all_close(new_f.params, new_i.params, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="precomputed features, which can only train the heads"):
    scan.scan_step(state, {"features": features}, jax.random.key(0), model=model, tx=tx, augment=None)


def test_moco_step_queue_momentum_and_sharding():
  from jaxclust.methods import moco
  model = heads.Pretext(resnet.SmallCNN(channels=(8, 16)), heads.ProjectionHead(32, 16))
  tx = optax.sgd(0.1, momentum=0.9)
  state = moco.init(model, jax.random.key(1), _images(2), tx, queue_size=32)
  aug = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0))
  step = jax.jit(functools.partial(moco.train_step, model=model, tx=tx, augment=aug, momentum=0.9))
  (single, m1), (sharded, m2) = _run_both(step, state, {"image": _images()})
  assert int(single.queue_ptr) == 0 and int(single.step) == 2  # two batches of 16 filled the 32-key queue
  np.testing.assert_allclose(np.linalg.norm(single.queue, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  chex.assert_trees_all_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(sharded.queue, single.queue, rtol=1e-4, atol=1e-5)
  # The momentum encoder follows the query encoder slowly: k1 = 0.9 k0 + 0.1 q0.
  one, _ = step(jax.device_put(state, jax.devices()[0]), {"image": _images()}, jax.random.key(7))
  expected = jax.tree.map(lambda k, q: 0.9 * k + 0.1 * q, state.key_params, state.params)
  chex.assert_trees_all_close(one.key_params, expected, rtol=1e-6, atol=1e-7)


def test_epoch_loop_on_cpu_equals_the_compiled_scan():
  """The CPU path (one compiled step per batch) trains exactly as the accelerator path (lax.scan)."""
  from jaxclust import epochs
  model = heads.Pretext(resnet.SmallCNN(channels=(8, 16)), heads.ProjectionHead(16, 8))
  tx = optax.sgd(0.1, momentum=0.9)
  aug = augment.batch(augment.simclr_view, size=(28, 28), scale=(0.2, 1.0))
  step = functools.partial(simclr.train_step, model=model, tx=tx, augment=aug)
  x = _images(20)
  out = {}
  for loop in (False, True):
    state = simclr.init(model, jax.random.key(1), x[:2], tx)
    out[loop] = epochs.batch_epoch(step, 8, 20, None, loop=loop)(state, x, jax.random.key(3))
  assert int(out[True][0].step) == int(out[False][0].step) == 3  # 20 rows: 3 batches of 8, the last padded
  np.testing.assert_allclose(out[True][1]["loss"], out[False][1]["loss"], rtol=1e-5)
  chex.assert_trees_all_close(out[True][0].params, out[False][0].params, rtol=1e-4, atol=1e-6)


def test_selflabel_step_uses_train_mode_batchnorm_for_both_views_as_the_official_code():
  """The weak view's targets come from batch statistics (the model is in train mode), and the running
  averages move with the weak batch, then the strong one; the loss matches a numpy transcription."""
  model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=2)
  tx = optax.sgd(0.0)
  state = scan.init(model, jax.random.key(1), _images(2), tx)
  weak_images, strong_images = _images(), jnp.flip(_images(), 1)
  weak, stats = model.apply({"params": state.params, "batch_stats": state.batch_stats}, weak_images, train=True,
                            mutable=["batch_stats"])
  threshold = float(np.median(np.max(jax.nn.softmax(weak[1]), 1)))  # about half the images confident
  step = jax.jit(functools.partial(scan.selflabel_step, model=model, tx=tx, weak=lambda r, x: weak_images,
                                   strong=lambda r, x: strong_images, head=1, threshold=threshold))
  new, m = step(state, {"image": _images()}, jax.random.key(0))
  strong, stats = model.apply({"params": state.params, **stats}, strong_images, train=True, mutable=["batch_stats"])
  chex.assert_trees_all_close(new.batch_stats, stats["batch_stats"], rtol=1e-5, atol=1e-6)
  eval_weak = model.apply({"params": state.params, "batch_stats": state.batch_stats}, weak_images, train=False)
  assert not np.allclose(eval_weak[1], weak[1], atol=1e-3)  # the two modes differ on these images
  expected, confident = _selflabel_reference(weak[1], strong[1], threshold)
  np.testing.assert_allclose(m["loss"], expected, rtol=1e-4)
  np.testing.assert_allclose(m["confident"], confident.mean(), rtol=1e-6)


def _selflabel_reference(weak_logits, strong_logits, threshold):
  """The class-balanced, confidence-masked cross-entropy in numpy: (loss, confident mask)."""
  pw = np.asarray(jax.nn.softmax(weak_logits), np.float64)
  ls = np.asarray(jax.nn.log_softmax(strong_logits), np.float64)
  target, confident = pw.argmax(1), pw.max(1) > threshold
  assert 0 < confident.sum() < len(confident)
  counts = np.bincount(target[confident], minlength=pw.shape[1])
  w = np.where(confident, confident.sum() / np.maximum(counts[target], 1), 0.0)
  return np.sum(w * -ls[np.arange(len(target)), target]) / np.sum(w), confident


def test_selflabel_step_after_a_frozen_backbone_keeps_the_running_batchnorm_statistics():
  """batchnorm_train=False: both views use (and keep) the running statistics; numpy loss reference."""
  model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=2)
  tx = optax.sgd(0.1)
  state = scan.init(model, jax.random.key(1), _images(2), tx)
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.1, state.batch_stats))
  weak_images, strong_images = _images(), jnp.flip(_images(), 1)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  weak, strong = model.apply(variables, weak_images), model.apply(variables, strong_images)
  threshold = float(np.median(np.max(jax.nn.softmax(weak[1]), 1)))
  step = jax.jit(functools.partial(scan.selflabel_step, model=model, tx=tx, weak=lambda r, x: weak_images,
                                   strong=lambda r, x: strong_images, head=1, threshold=threshold,
                                   batchnorm_train=False))
  new, m = step(state, {"image": _images()}, jax.random.key(0))
  chex.assert_trees_all_equal(new.batch_stats, state.batch_stats)
  assert not np.allclose(new.params["head_1"]["kernel"], state.params["head_1"]["kernel"])
  np.testing.assert_allclose(m["loss"], _selflabel_reference(weak[1], strong[1], threshold)[0], rtol=1e-4)


@pytest.mark.parametrize("method", ["simclr", "moco", "scan", "selflabel"])
def test_host_made_views_train_as_the_same_views_made_on_device(method):
  """A batch of ``views`` (input="tf.data") trains exactly as ``image`` batches whose augmentation
  returns those views (here two different fixed transformations)."""
  from jaxclust.methods import moco
  first, second = _images(), jnp.flip(_images(), 2)
  pick = lambda rng, images: images
  tx = optax.sgd(0.1, momentum=0.9)
  if method in ("simclr", "moco"):
    model = heads.Pretext(resnet.SmallCNN(channels=(8, 16)), heads.ProjectionHead(16, 8))
    lib = simclr if method == "simclr" else moco
    options = {"queue_size": 32} if method == "moco" else {}
    state = lib.init(model, jax.random.key(1), _images(2), tx, **options)
    step = jax.jit(functools.partial(lib.train_step, model=model, tx=tx), static_argnames="augment")
    # Device path: augment maps the images to the first view, then (second call) to the second.
    calls = iter([first, second])
    device = step(state, {"image": first}, jax.random.key(3), augment=lambda rng, images: next(calls))
  else:
    model = heads.Clusterer(resnet.SmallCNN(channels=(8, 16)), k=4, heads=2)
    state = scan.init(model, jax.random.key(1), _images(2), tx)
    if method == "scan":
      step = jax.jit(functools.partial(scan.scan_step, model=model, tx=tx), static_argnames="augment")
      device = step(state, {"image": first, "neighbor": second}, jax.random.key(3), augment=pick)
    else:
      step = jax.jit(functools.partial(scan.selflabel_step, model=model, tx=tx, head=1, threshold=0.3),
                     static_argnames=("weak", "strong"))
      device = step(state, {"image": first}, jax.random.key(3), weak=pick,
                    strong=lambda rng, images: jnp.flip(images, 2))
  options = {"weak": None, "strong": None} if method == "selflabel" else {"augment": None}
  host = step(state, {"views": (first, second)}, jax.random.key(3), **options)
  chex.assert_trees_all_close(host, device, rtol=1e-6, atol=1e-6)
