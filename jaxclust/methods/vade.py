"""VaDE: Variational Deep Embedding (Jiang, Zheng, Tan, Tang & Zhou, IJCAI 2017).

A VAE whose prior is a Gaussian mixture: ``c ~ Cat(pi)``, ``z ~ N(mu_c, diag(var_c))``,
``x ~ Bernoulli(f(z))``. The encoder gives ``q(z | x) = N(mu~, diag(var~))``, and ``q(c | x)`` is
approximated by ``gamma_c = p(c | z)`` at a sample of z (eq. 16). The loss is the negative of the
ELBO of eq. 12, with one Monte Carlo sample per point. The mixture is initialized by a diagonal
GMM fitted by EM (:func:`jaxclust.kernels.gmm.gmm_diag`) on the pretrained embeddings. The mixture
weights are parameterized by logits and the variances by their logs, so that every gradient step
keeps them valid.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxclust.models.autoencoder import MLPAutoencoder


class VaDEModel(MLPAutoencoder):
  """:class:`jaxclust.models.autoencoder.MLPAutoencoder` plus a log-variance head.

  Layer names are the autoencoder's, so pretrained parameters carry over (``embedding`` becomes
  the posterior mean); ``reconstruction`` outputs Bernoulli logits.
  """

  def setup(self):
    super().setup()
    self.log_var = nn.Dense(self.latent, kernel_init=nn.initializers.glorot_uniform(), name="log_var")

  def encode(self, x):
    h = self.features(x)
    return self.embedding(h), self.log_var(h)

  def __call__(self, x, eps):
    mean, log_var = self.encode(x)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return mean, log_var, z, self.decode(z)


def mixture_params(weights, means, variances) -> dict:
  """Prior parameters (as trained) from a fitted GMM."""
  return {"logits": jnp.log(jnp.asarray(weights, jnp.float32)), "means": jnp.asarray(means, jnp.float32),
          "log_var": jnp.log(jnp.asarray(variances, jnp.float32))}


def log_responsibility(z, prior):
  """``log p(c | z)`` ([n, K]) under the mixture prior: eq. 16's gamma, in the log domain."""
  log_pi = jax.nn.log_softmax(prior["logits"])
  var = jnp.exp(prior["log_var"])
  log_normal = -0.5 * jnp.sum(math.log(2 * math.pi) + prior["log_var"]
                              + (z[:, None, :] - prior["means"]) ** 2 / var, axis=-1)
  joint = log_pi + log_normal
  return joint - jax.nn.logsumexp(joint, axis=-1, keepdims=True)


def elbo(x, x_logits, mean, log_var, z, prior):
  """Per-sample ELBO of eq. 12 (one sample ``z`` of ``q(z | x)``, Bernoulli decoder), ``[n]``.

  ``sum_i [x_i log mu_x + (1 - x_i) log(1 - mu_x)]
   - 1/2 sum_c gamma_c sum_j (log var_cj + var~_j / var_cj + (mu~_j - mu_cj)^2 / var_cj)
   + sum_c gamma_c log(pi_c / gamma_c) + 1/2 sum_j (1 + log var~_j)``
  """
  x = x.reshape(x.shape[0], -1)
  reconstruction = -jnp.sum(optax.sigmoid_binary_cross_entropy(x_logits, x), axis=-1)
  log_gamma = log_responsibility(z, prior)
  gamma = jnp.exp(log_gamma)
  var_c = jnp.exp(prior["log_var"])
  expected_log_prior = -0.5 * jnp.sum(
      gamma * jnp.sum(prior["log_var"] + jnp.exp(log_var)[:, None, :] / var_c
                      + (mean[:, None, :] - prior["means"]) ** 2 / var_c, axis=-1), axis=-1)
  categorical = jnp.sum(gamma * (jax.nn.log_softmax(prior["logits"]) - log_gamma), axis=-1)
  entropy = 0.5 * jnp.sum(1.0 + log_var, axis=-1)
  return reconstruction + expected_log_prior + categorical + entropy


class VaDEState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # {"vae": VaDEModel params, "prior": mixture_params(...)}
  opt_state: Any


def init(vae_params, prior, tx: optax.GradientTransformation) -> VaDEState:
  params = {"vae": vae_params, "prior": prior}
  return VaDEState(step=jnp.int32(0), params=params, opt_state=tx.init(params))


def train_step(state: VaDEState, batch, rng, *, model: VaDEModel, tx):
  """One step on ``-mean ELBO`` of ``{"x": [b, ...], "mask": [b]}`` with a fresh sample of z."""
  rng = jax.random.fold_in(rng, state.step)
  x = batch["x"]
  mask = batch.get("mask")

  def loss_fn(params):
    eps = jax.random.normal(rng, (x.shape[0], model.latent))
    mean, log_var, z, x_logits = model.apply({"params": params["vae"]}, x, eps)
    per_sample = -elbo(x, x_logits, mean, log_var, z, params["prior"])
    if mask is None:
      return jnp.mean(per_sample)
    return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), {"loss": loss}


def predict(model: VaDEModel, params, x):
  """Cluster of each row: ``argmax_c p(c | z)`` at the posterior mean ``z = mu~(x)``."""
  mean, _ = model.apply({"params": params["vae"]}, x, method=model.encode)
  return jnp.argmax(log_responsibility(mean, params["prior"]), axis=-1)
