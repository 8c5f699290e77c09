"""VaDE against a numpy transcription of the paper's ELBO (Jiang et al. 2017, eq. 12)."""

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy.special import logsumexp

from jaxclust import parallel
from jaxclust.methods import vade
from jaxclust.models.autoencoder import MLPAutoencoder


def numpy_elbo(x, x_logits, mean, log_var, z, pi, mu_c, var_c, likelihood="bernoulli"):
  if likelihood == "bernoulli":
    mu_x = 1 / (1 + np.exp(-x_logits))
    rec = (x * np.log(mu_x) + (1 - x) * np.log(1 - mu_x)).sum(1)
  else:  # log N(x; f, I), f = x_logits
    rec = (-0.5 * (x - x_logits) ** 2 - 0.5 * np.log(2 * np.pi)).sum(1)
  log_joint = np.log(pi) + (-0.5 * (np.log(2 * np.pi * var_c)[None] + (z[:, None] - mu_c) ** 2 / var_c)).sum(-1)
  gamma = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
  var = np.exp(log_var)
  term2 = -0.5 * (gamma * (np.log(var_c)[None] + var[:, None] / var_c + (mean[:, None] - mu_c) ** 2 / var_c).sum(-1)).sum(1)
  term3 = (gamma * np.log(pi / gamma)).sum(1)
  term4 = 0.5 * (1 + log_var).sum(1)
  return rec + term2 + term3 + term4


def random_problem(n=20, d=12, j=3, k=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n, d))
  pi = rng.dirichlet(np.ones(k))
  mu_c, var_c = rng.normal(size=(k, j)), rng.uniform(0.5, 2.0, (k, j))
  mean, log_var = rng.normal(size=(n, j)), rng.normal(scale=0.3, size=(n, j))
  z = mean + np.exp(0.5 * log_var) * rng.normal(size=(n, j))
  return x, rng.normal(size=(n, d)), mean, log_var, z, pi, mu_c, var_c


def test_elbo_matches_equation_12():
  x, x_logits, mean, log_var, z, pi, mu_c, var_c = random_problem()
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  ours = vade.elbo(f32(x), f32(x_logits), f32(mean), f32(log_var), f32(z), vade.mixture_params(pi, mu_c, var_c))
  np.testing.assert_allclose(np.asarray(ours), numpy_elbo(x, x_logits, mean, log_var, z, pi, mu_c, var_c), rtol=1e-4)


def test_the_gaussian_elbo_matches_equation_12_with_a_normal_decoder():
  x, x_logits, mean, log_var, z, pi, mu_c, var_c = random_problem(seed=3)
  x = x * 8 - 4  # real values outside [0, 1]
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  ours = vade.elbo(f32(x), f32(x_logits), f32(mean), f32(log_var), f32(z), vade.mixture_params(pi, mu_c, var_c),
                   "gaussian")
  np.testing.assert_allclose(np.asarray(ours), numpy_elbo(x, x_logits, mean, log_var, z, pi, mu_c, var_c, "gaussian"),
                             rtol=1e-4)


def test_the_likelihood_is_chosen_by_the_data_and_a_bernoulli_on_real_values_refused():
  from jaxclust import configs
  from jaxclust.data import sources
  rng = np.random.default_rng(0)
  for rows, likelihood, loss in ((rng.random((50, 4)), "bernoulli", "bce"), (rng.normal(size=(50, 4)), "gaussian", "mse")):
    config = configs.get_config("vade", "array", n=50, shape=(4,))
    vade.choose_likelihood(config, sources.from_arrays(rows.astype(np.float32)))
    assert (config.vade.likelihood, config.pretrain.loss) == (likelihood, loss)
  config = configs.get_config("vade", "array", n=50, shape=(4,))
  config.vade.likelihood, config.pretrain.loss = "bernoulli", "mse"  # explicit choices are kept
  vade.choose_likelihood(config, sources.from_arrays(rng.random((50, 4)).astype(np.float32)))
  assert (config.vade.likelihood, config.pretrain.loss) == ("bernoulli", "mse")
  with pytest.raises(ValueError, match=r"vade.likelihood='bernoulli' needs rows in \[0, 1\], but they span"):
    vade.choose_likelihood(config, sources.from_arrays(rng.normal(size=(50, 4)).astype(np.float32)))
  config.vade.likelihood = "poisson"
  with pytest.raises(ValueError, match="must be 'auto', 'bernoulli' or 'gaussian'"):
    vade.choose_likelihood(config, sources.from_arrays(rng.random((50, 4)).astype(np.float32)))


def test_vade_on_z_scored_features_neither_diverges_nor_collapses(tmp_path):
  """The issue's failure: a Bernoulli loss on z-scored features fell to -1e24 and put every row in one cluster."""
  from sklearn.datasets import make_blobs
  import jaxclust
  x, y = make_blobs(600, n_features=6, centers=3, cluster_std=1.0, random_state=0)
  model = jaxclust.VaDE(3, workdir=tmp_path / "run", standardize=True, pretrain__epochs=10, hidden=[32, 32],
                        vade__epochs=10, vade__batch_size=64, pretrain__batch_size=64, cluster__batch_size=64)
  model.fit(x.astype(np.float32), y)
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["vade"]["likelihood"] == "gaussian" and config["pretrain"]["loss"] == "mse"
  losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]
  assert all(np.isfinite(losses)) and min(losses) > -1e3
  assert not model.summary_["collapsed"] and model.summary_["acc"] > 0.6  # 1/3 when every row is in one cluster


def test_responsibilities_are_the_mixture_posterior():
  _, _, _, _, z, pi, mu_c, var_c = random_problem(seed=1)
  log_gamma = np.asarray(vade.log_responsibility(jnp.asarray(z, jnp.float32), vade.mixture_params(pi, mu_c, var_c)))
  log_joint = np.log(pi) + (-0.5 * (np.log(2 * np.pi * var_c)[None] + (z[:, None] - mu_c) ** 2 / var_c)).sum(-1)
  np.testing.assert_allclose(log_gamma, log_joint - logsumexp(log_joint, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)


def make_state(seed=0):
  model = vade.VaDEModel(input_dim=12, hidden=(16, 16), latent=3)
  x = jnp.asarray(np.random.default_rng(seed).random((48, 12)), jnp.float32)
  ae = MLPAutoencoder(input_dim=12, hidden=(16, 16), latent=3)
  ae_params = ae.init(jax.random.key(seed), x[:2])["params"]
  params = model.init(jax.random.key(seed + 1), x[:2], jnp.zeros((2, 3)))["params"]
  assert set(ae_params) < set(params)  # pretrained layers carry over by name
  params = {**params, **ae_params}
  prior = vade.mixture_params(np.full(4, 0.25), np.random.default_rng(seed).normal(size=(4, 3)), np.ones((4, 3)))
  tx = optax.adam(2e-3)
  return model, tx, x, vade.init(params, prior, tx)


def test_training_reduces_the_negative_elbo():
  model, tx, x, state = make_state()
  step = jax.jit(functools.partial(vade.train_step, model=model, tx=tx))
  batch = {"x": x, "mask": jnp.ones(48, bool)}
  losses = []
  for i in range(60):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-10:]) < np.mean(losses[:10])
  assert vade.predict(model, state.params, x).shape == (48,)


def test_step_traces_once_and_sharded_equals_single(mesh):
  model, tx, x, state = make_state()

  def train_step(state, batch, rng):
    return vade.train_step(state, batch, rng, model=model, tx=tx)

  counted = jax.jit(chex.assert_max_traces(train_step, n=1))
  batch = {"x": x[:32], "mask": jnp.ones(32, bool)}
  for i in range(3):  # same shapes and placement: traced once
    counted(state, {"x": x[i:i + 32], "mask": batch["mask"]}, jax.random.key(i))
  step = jax.jit(train_step)  # a sharded input is a new placement, hence a new trace
  single, m1 = step(state, batch, jax.random.key(3))
  sharded, m2 = step(jax.device_put(state, NamedSharding(mesh, P())),
                     jax.tree.map(lambda a: parallel.shard_rows(a, mesh), batch), jax.random.key(3))
  chex.assert_trees_all_close(single.params, sharded.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)


def test_the_mixture_starts_from_the_most_likely_of_several_gmm_fits(tmp_path):
  from sklearn.datasets import make_blobs
  import jaxclust
  del make_blobs
  rng = np.random.default_rng(0)  # no clusters: k-means from different seeds ends in different partitions
  x, y = rng.normal(size=(600, 6)), rng.integers(0, 4, 600)
  model = jaxclust.VaDE(4, workdir=tmp_path / "run", standardize=True, pretrain__epochs=3, hidden=[32, 32],
                        vade__epochs=1, vade__gmm_restarts=3, vade__batch_size=64, pretrain__batch_size=64,
                        cluster__kmeans_n_init=1, report=False)
  model.fit(x.astype(np.float32), y)
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  gmm = next(r for r in records if r.get("stage") == "gmm")
  assert len(gmm["log_likelihoods"]) == 3 and gmm["chosen"] == int(np.argmax(gmm["log_likelihoods"]))
  assert len(set(gmm["log_likelihoods"])) > 1  # the fits started from different k-means runs
