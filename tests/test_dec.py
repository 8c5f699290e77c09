"""DEC/IDEC against numpy transcriptions of the papers' equations and the paper's own gradient."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxclust import parallel
from jaxclust.methods import dec
from jaxclust.models.autoencoder import MLPAutoencoder


def numpy_q(z, mu, alpha):
  d2 = ((z[:, None, :] - mu[None]) ** 2).sum(-1)
  kernel = (1 + d2 / alpha) ** (-(alpha + 1) / 2)
  return kernel / kernel.sum(1, keepdims=True)


def numpy_p(q):
  w = q ** 2 / q.sum(0)
  return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_soft_assignment_and_target_match_the_equations(alpha):
  rng = np.random.default_rng(0)
  z, mu = rng.normal(size=(40, 5)), rng.normal(size=(4, 5))
  q = np.asarray(dec.soft_assignment(jnp.asarray(z, jnp.float32), jnp.asarray(mu, jnp.float32), alpha))
  np.testing.assert_allclose(q, numpy_q(z, mu, alpha), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dec.target_distribution(jnp.asarray(q))), numpy_p(q), rtol=1e-5)
  p = numpy_p(q)
  np.testing.assert_allclose(float(dec.kl_divergence(jnp.asarray(p), jnp.asarray(q))),
                             (p * np.log(p / q)).sum(1).mean(), rtol=1e-5)


def test_kl_gradients_equal_the_papers_formulas():
  """Xie et al. 2016, eq. 4 and 5, for L = sum_i KL(P_i || Q_i) with alpha = 1 and P fixed."""
  rng = np.random.default_rng(1)
  z, mu = rng.normal(size=(30, 3)), rng.normal(size=(5, 3))
  p = numpy_p(numpy_q(z, mu, 1.0))
  loss = lambda z, mu: 30 * dec.kl_divergence(jnp.asarray(p, jnp.float32), dec.soft_assignment(z, mu, 1.0))
  gz, gmu = jax.grad(loss, argnums=(0, 1))(jnp.asarray(z, jnp.float32), jnp.asarray(mu, jnp.float32))
  q = numpy_q(z, mu, 1.0)
  diff = z[:, None, :] - mu[None]  # [n, k, e]
  inv = 1.0 / (1.0 + (diff ** 2).sum(-1))  # (1 + |z_i - mu_j|^2)^-1
  eq4 = 2.0 * ((inv * (p - q))[..., None] * diff).sum(1)
  eq5 = -2.0 * ((inv * (p - q))[..., None] * diff).sum(0)
  np.testing.assert_allclose(np.asarray(gz), eq4, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gmu), eq5, rtol=1e-4, atol=1e-6)


def test_target_frequency_ignores_padding():
  q = jnp.asarray(np.random.default_rng(2).dirichlet(np.ones(3), 10), jnp.float32)
  padded = jnp.concatenate([q, jnp.full((6, 3), 1 / 3)])
  mask = jnp.arange(16) < 10
  np.testing.assert_allclose(np.asarray(dec.target_distribution(padded, mask)[:10]),
                             np.asarray(dec.target_distribution(q)), rtol=1e-6)


def make_problem(n=64, k=3, seed=0, keep_decoder=True):
  model = MLPAutoencoder(input_dim=12, hidden=(16, 16), latent=4)
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(n, 12)), jnp.float32)
  params = model.init(jax.random.key(seed), x[:2])["params"]
  tx = dec.sgd(0.01, 0.9)
  state = dec.init(params, x[:k, :4], n, tx, keep_decoder=keep_decoder)
  state = dec.init(params, dec.embed(model, state.params, x[:k]), n, tx, keep_decoder=keep_decoder)
  state, _ = dec.refresh_target(state, x, model=model)
  return model, tx, x, state


@pytest.mark.parametrize("gamma", [0.0, 0.1], ids=["dec", "idec"])
def test_train_steps_reduce_the_loss(gamma):
  model, tx, x, state = make_problem(keep_decoder=gamma > 0)
  step = jax.jit(functools.partial(dec.train_step, model=model, tx=tx, gamma=gamma))
  batch = {"x": x, "index": jnp.arange(64), "mask": jnp.ones(64, bool)}
  _, first = step(state, batch, jax.random.key(0))
  for i in range(30):
    state, metrics = step(state, batch, jax.random.key(i))
  assert float(metrics["loss"]) < float(first["loss"])
  assert int(state.step) == 30
  if gamma:
    assert set(metrics) == {"loss", "kl", "reconstruction"}


def test_refresh_reports_changed_labels():
  model, tx, x, state = make_problem()
  same, changed = dec.refresh_target(state, x, model=model)
  assert float(changed) == 0.0  # nothing trained since the last refresh
  moved = state.replace(params={**state.params, "centers": state.params["centers"][::-1]})
  _, changed = dec.refresh_target(moved, x, model=model)
  assert float(changed) > 0.0


def test_train_step_traces_once():
  model, tx, x, state = make_problem()
  def train_step(state, batch, rng):
    return dec.train_step(state, batch, rng, model=model, tx=tx)

  step = jax.jit(chex.assert_max_traces(train_step, n=1), donate_argnums=0)
  batch = {"x": x[:16], "index": jnp.arange(16), "mask": jnp.ones(16, bool)}
  for i in range(3):
    state, _ = step(state, {**batch, "index": batch["index"] + i}, jax.random.key(i))


def test_sharded_step_and_refresh_equal_single_device(mesh):
  model, tx, x, state = make_problem()
  step = jax.jit(functools.partial(dec.train_step, model=model, tx=tx, gamma=0.1))
  batch = {"x": x[:32], "index": jnp.arange(32), "mask": jnp.ones(32, bool)}
  single, m1 = step(state, batch, jax.random.key(0))
  sharded_batch = jax.tree.map(lambda a: parallel.shard_rows(a, mesh), batch)
  replicated = jax.device_put(state, NamedSharding(mesh, P()))
  sharded, m2 = step(replicated, sharded_batch, jax.random.key(0))
  chex.assert_trees_all_close(single.params, sharded.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
  refresh = jax.jit(functools.partial(dec.refresh_target, model=model))
  a, ca = refresh(single, x)
  b, cb = refresh(jax.device_put(sharded, NamedSharding(mesh, P())), parallel.shard_rows(x, mesh))
  np.testing.assert_allclose(np.asarray(a.target), np.asarray(b.target), rtol=1e-5)
  assert float(ca) == float(cb)
  # In chunks (7 rows, the last chunk ragged), on one device and each device its own rows: the same P and labels.
  chunked = jax.jit(functools.partial(dec.refresh_target, model=model, chunk=7))
  c, cc = chunked(single, x)
  d, cd = jax.jit(functools.partial(dec.refresh_target, model=model, chunk=7, mesh=mesh))(
      jax.device_put(sharded, NamedSharding(mesh, P())), parallel.shard_rows(x, mesh))
  for out, changed in ((c, cc), (d, cd)):
    np.testing.assert_allclose(np.asarray(out.target), np.asarray(a.target), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.labels), np.asarray(a.labels))
    assert float(changed) == float(ca)


def test_idec_is_reconstruction_plus_gamma_kl():
  from jaxclust.methods import idec
  from jaxclust.models.autoencoder import reconstruction_loss
  model, tx, x, state = make_problem()
  batch = {"x": x, "index": jnp.arange(64), "mask": jnp.ones(64, bool)}
  _, metrics = idec.train_step(state, batch, jax.random.key(0), model=model, tx=tx)
  z, x_hat = model.apply({"params": state.params["ae"]}, x)
  q = dec.soft_assignment(z, state.params["centers"])
  expected = float(reconstruction_loss(x, x_hat)) + 0.1 * float(dec.kl_divergence(state.target, q))
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="gamma=0 must be > 0"):
    idec.train_step(state, batch, jax.random.key(0), model=model, tx=tx, gamma=0)


def test_dec_state_drops_the_decoder_and_idec_keeps_it():
  from jaxclust.methods import idec
  model, tx, x, _ = make_problem()
  params = model.init(jax.random.key(0), x[:2])["params"]
  assert set(dec.init(params, jnp.zeros((3, 4)), 64, tx).params["ae"]) == {"encoder_0", "encoder_1", "embedding"}
  assert set(idec.init(params, jnp.zeros((3, 4)), 64, tx).params["ae"]) == set(params)


def test_the_clustering_optimizer_is_the_one_named():
  """``cluster.optimizer``: two updates of optax's SGD with momentum or Adam (the references), step for step."""
  params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
  grads = [{"w": jnp.asarray([0.5, -1.0, 2.0])}, {"w": jnp.asarray([-0.25, 0.75, 1.5])}]
  for name, reference in (("sgd", optax.sgd(0.1, momentum=0.99)), ("adam", optax.adam(1e-3))):
    tx = dec.optimizer(name, 0.1 if name == "sgd" else 1e-3, 0.99)
    state, ref_state = tx.init(params), reference.init(params)
    for g in grads:
      updates, state = tx.update(g, state, params)
      expected, ref_state = reference.update(g, ref_state, params)
      np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="cluster.optimizer='rmsprop' must be one of 'sgd', 'adam'"):
    dec.optimizer("rmsprop", 0.1, 0.9)
