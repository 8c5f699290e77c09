"""VaDE: Variational Deep Embedding (Jiang, Zheng, Tan, Tang & Zhou, IJCAI 2017).

A VAE whose prior is a Gaussian mixture: ``c ~ Cat(pi)``, ``z ~ N(mu_c, diag(var_c))``,
``x ~ Bernoulli(f(z))`` for data in [0, 1] (the paper's images), else ``x ~ N(f(z), I)``: a Bernoulli
likelihood of values outside [0, 1] has no lower bound (the loss ran to -1e24 on z-scored features and every
row ended in one cluster). ``vade.likelihood="auto"`` chooses by the data's range before the run starts and
config.json records the choice; ``pretrain.loss="auto"`` follows it (binary cross-entropy, or squared error). The encoder gives ``q(z | x) = N(mu~, diag(var~))``, and ``q(c | x)`` is
approximated by ``gamma_c = p(c | z)`` at a sample of z (eq. 16). The loss is the negative of the
ELBO of eq. 12, with one Monte Carlo sample per point. The mixture is initialized by a diagonal
GMM fitted by EM (:func:`jaxclust.kernels.gmm.gmm_diag`) on the pretrained embeddings. The mixture
weights are parameterized by logits and the variances by their logs, so that every gradient step
keeps them valid.

A run (:func:`stages`): autoencoder pretraining for Bernoulli logits
(:mod:`jaxclust.methods.pretrain`), the mixture fitted on the pretrained embeddings, then epochs of Adam
on the negative ELBO with the official code's step decay of the learning rate.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxclust import engine, epochs, parallel, seeding
from jaxclust import metrics as cluster_metrics
from jaxclust.kernels.gmm import gmm_diag
from jaxclust.methods import networks, pretrain
from jaxclust.models.autoencoder import MLPAutoencoder

RECIPES, REUSE = pretrain.RECIPES, pretrain.REUSE


LIKELIHOODS = ("bernoulli", "gaussian")
# Settings added after runs were made, with what those runs trained as (jaxclust.workdir.check_same_config).
LEGACY = {"vade.likelihood": "bernoulli", "vade.gmm_restarts": 1}


def config():
  """The shared autoencoder settings; the decoder's likelihood and the pretraining loss chosen by the data."""
  c = pretrain.config()
  c.pretrain.loss = "auto"
  c.vade.likelihood = "auto"
  # GMM fits on the pretrained embedding, each from its own k-means (cluster.kmeans_n_init restarts); the one of
  # highest likelihood starts the mixture (the official recipe fits one; the reproduction tries several).
  c.vade.gmm_restarts = 1
  return c


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


def elbo(x, x_logits, mean, log_var, z, prior, likelihood: str = "bernoulli"):
  """Per-sample ELBO of eq. 12 (one sample ``z`` of ``q(z | x)``), ``[n]``.

  ``log p(x | z)
   - 1/2 sum_c gamma_c sum_j (log var_cj + var~_j / var_cj + (mu~_j - mu_cj)^2 / var_cj)
   + sum_c gamma_c log(pi_c / gamma_c) + 1/2 sum_j (1 + log var~_j)``, with ``log p(x | z)`` =
  ``sum_i [x_i log mu_x + (1 - x_i) log(1 - mu_x)]`` (``likelihood="bernoulli"``, ``x_logits`` the logits of
  ``mu_x``) or ``-1/2 sum_i [(x_i - f_i)^2 + log 2 pi]`` (``"gaussian"``, unit variance, ``x_logits`` the mean f).
  """
  x = x.reshape(x.shape[0], -1)
  if likelihood == "bernoulli":
    reconstruction = -jnp.sum(optax.sigmoid_binary_cross_entropy(x_logits, x), axis=-1)
  elif likelihood == "gaussian":
    reconstruction = -0.5 * jnp.sum((x - x_logits) ** 2 + math.log(2 * math.pi), axis=-1)
  else:
    raise ValueError(f"likelihood={likelihood!r} must be one of {', '.join(LIKELIHOODS)}")
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


def train_step(state: VaDEState, batch, rng, *, model: VaDEModel, tx, likelihood: str = "bernoulli"):
  """One step on ``-mean ELBO`` of ``{"x": [b, ...], "mask": [b]}`` with a fresh sample of z."""
  rng = jax.random.fold_in(rng, state.step)
  x = batch["x"]
  mask = batch.get("mask")

  def loss_fn(params):
    eps = jax.random.normal(rng, (x.shape[0], model.latent))
    mean, log_var, z, x_logits = model.apply({"params": params["vae"]}, x, eps)
    per_sample = -elbo(x, x_logits, mean, log_var, z, params["prior"], likelihood)
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


# -- The run: what the engine (jaxclust.engine) calls.

def prepare(config, data, mesh) -> engine.Prepared:
  """:func:`pretrain.prepare` after choosing the likelihood (``vade.likelihood``, ``pretrain.loss``), which
  config.json then records."""
  choose_likelihood(config, data)
  return pretrain.prepare(config, data, mesh=mesh, conv=False,
                          batch_sizes=("pretrain.batch_size", "cluster.batch_size", "vade.batch_size"))


def choose_likelihood(config, data) -> None:
  """``vade.likelihood="auto"``: Bernoulli for rows in [0, 1] (a streamed dataset's images are read in [0, 1]),
  else Gaussian; an explicit Bernoulli on rows outside [0, 1] is refused. ``pretrain.loss="auto"``: binary
  cross-entropy for Bernoulli, squared error for Gaussian."""
  c = config.vade
  if c.likelihood not in ("auto", *LIKELIHOODS):
    raise ValueError(f"vade.likelihood={c.likelihood!r} must be 'auto', 'bernoulli' or 'gaussian'")
  if config.pretrain.loss not in ("auto", "mse", "bce"):
    raise ValueError(f"pretrain.loss={config.pretrain.loss!r} must be 'auto', 'mse' or 'bce'")
  rows = getattr(data, "x", None)
  low, high = (0.0, 1.0) if rows is None else (float(np.min(rows)), float(np.max(rows)))
  unit = 0.0 <= low and high <= 1.0
  if c.likelihood == "auto":
    c.likelihood = "bernoulli" if unit else "gaussian"
  elif c.likelihood == "bernoulli" and not unit:
    raise ValueError(f"vade.likelihood='bernoulli' needs rows in [0, 1], but they span [{low:.4g}, {high:.4g}]: "
                     "its loss has no lower bound there; use 'gaussian' or 'auto'")
  if config.pretrain.loss == "auto":
    config.pretrain.loss = "bce" if c.likelihood == "bernoulli" else "mse"


def stages(run):
  autoencoder = networks.autoencoder(run.config, run.shape, conv=False)
  return pretrain.stage(run, autoencoder), _mixture_stage(run, autoencoder)


def readout(run, state) -> engine.Readout:
  """The clusters of every row; the embedding, the posterior mean of z (the autoencoder's encoder)."""
  model, _ = _model(run.config, int(np.prod(run.shape)))
  z = pretrain.embed(run, networks.autoencoder(run.config, run.shape, conv=False), state.params["vae"])
  return engine.Readout(_labels(run, model, state.params), embedding=parallel.fetch(z))


def _labels(run, model, params):
  """The cluster of every row, on the host."""
  if run.source is None:
    return parallel.fetch(_predict_jit(model, params, run.x))[:run.n]
  labels, = run.in_order(lambda rows: (_predict_jit(model, params, rows),), run.config.vade.batch_size)
  return labels


def centers(run, state) -> np.ndarray:
  """``[k, latent]`` the mixture's means in the embedding (the API's ``cluster_centers_``)."""
  del run
  return parallel.fetch(state.params["prior"]["means"])


def with_centers(run, state, centers):
  """``state`` with the mixture's means ``[k, latent]`` replaced (``jaxclust update``'s mini-batch k-means)."""
  del run
  prior = {**state.params["prior"], "means": jnp.asarray(centers, jnp.float32)}
  return state.replace(params={**state.params, "prior": prior})


def assign(run, state, x) -> engine.Assignment:
  """New rows ``x`` under a finished run: ``argmax_c p(c | z)`` at the posterior mean, that probability, the
  posterior mean."""
  model, _ = _model(run.config, int(np.prod(run.shape)))
  mean, log_gamma = _posterior_jit(model, state.params, jnp.asarray(x.reshape(len(x), -1)))
  gamma = np.exp(parallel.fetch(log_gamma))
  return engine.Assignment(np.argmax(gamma, -1), np.max(gamma, -1), parallel.fetch(mean))


def _m_step(z, labels, k: int):
  """``(weights, means, variances)`` of hard assignments ``labels`` of ``z`` (an empty cluster: the data's)."""
  weights, means, variances = np.zeros(k), np.zeros((k, z.shape[1])), np.zeros((k, z.shape[1]))
  for c in range(k):
    rows = z[labels == c] if np.any(labels == c) else z
    weights[c], means[c], variances[c] = max(np.sum(labels == c), 1) / len(z), rows.mean(0), rows.var(0) + 1e-6
  return weights, means, variances


def step_flops(config, shape, k: int) -> dict:
  """Model FLOPs per training row (``jaxclust bench steps``): the autoencoder forward and backward (3 forward
  passes) in pretraining and in the VaDE stage (its log-variance head and the mixture's terms left out)."""
  del k
  whole, _ = pretrain.autoencoder_flops(networks.autoencoder(config, shape, conv=False), shape)
  return {"pretrain": 3 * whole, "cluster": 3 * whole}


def _mixture_stage(run, autoencoder) -> engine.Stage:
  config, d = run.config, int(np.prod(run.shape))
  model, tx = _model(config, d, run.n)

  def template(run):
    params = model.init(jax.random.key(0), jnp.zeros((2, d)), jnp.zeros((2, config.latent)))["params"]
    prior = mixture_params(jnp.ones(run.k), jnp.zeros((run.k, config.latent)), jnp.ones((run.k, config.latent)))
    return parallel.put(init(params, prior, tx), run.mesh)

  def start(run, pretrained):
    # The mixture starts from the k-means DEC uses (n_init restarts), not scikit-learn's single run: on
    # pretrained MNIST embeddings one k-means run gave initial ACC 0.65-0.85 by seed.
    z = pretrain.embed(run, autoencoder, pretrained.params)
    start = None
    if run.seeds is not None:  # the mixture's first M-step from the seeded k-means (jaxclust.seeding)
      _, labels = seeding.kmeans(z, run.seeds, run.k, seed=run.config.seed)
      start = _m_step(np.asarray(z, np.float64), labels, run.k)
      run.log(f"mixture seeded from {len(run.seeds.index)} labelled rows")
    restarts = 1 if start is not None else config.vade.get("gmm_restarts", 1)
    key = jax.random.fold_in(run.key, 2)
    fits = [gmm_diag(z, run.k, rng=key if r == 0 else jax.random.fold_in(key, r),
                     kmeans_n_init=config.cluster.kmeans_n_init, init=start) for r in range(restarts)]
    chosen = max(range(restarts), key=lambda r: float(fits[r].log_likelihood))  # the first of equals
    fit = fits[chosen]
    run.log(f"GMM on embeddings: mean log-likelihood {float(fit.log_likelihood):.4f} after {int(fit.n_iter)} "
            f"EM steps" + (f" (the best of {restarts} fits: "
                           f"{', '.join(f'{float(f.log_likelihood):.4f}' for f in fits)})" if restarts > 1 else ""))
    if restarts > 1:
      run.record("gmm", log_likelihoods=[float(f.log_likelihood) for f in fits], chosen=chosen)
    params = model.init(jax.random.fold_in(run.key, 3), jnp.zeros((2, d)), jnp.zeros((2, config.latent)))["params"]
    params = {**params, **jax.tree.map(np.asarray, pretrained.params)}
    prior = mixture_params(fit.weights, fit.means, fit.variances)
    return parallel.put(init(params, jax.tree.map(np.asarray, prior), tx), run.mesh)

  def epoch(run, state, epoch):
    rng = jax.random.fold_in(run.key, 3_000_000 + epoch)
    if run.source is None:
      state, m = _epoch(model, tx, config.vade.batch_size, run.n, epochs.shard(run.mesh),
                        config.vade.likelihood)(state, run.x, rng)
    else:
      step, losses = epochs.host_step(train_step, model=model, tx=tx, likelihood=config.vade.likelihood), []
      for batch in run.batches(config.vade.batch_size, 3_000_000 + epoch):
        state, m = step(state, batch, rng)  # the step folds its count into rng
        losses.append(m["loss"])
      m = {"loss": jnp.mean(jnp.stack(losses))}
    record = {"loss": float(m["loss"])}
    if run.y is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == config.vade.epochs):
      record.update(cluster_metrics.evaluate(run.y, _labels(run, model, state.params)))
    return state, record

  return engine.Stage("cluster", config.vade.epochs, start, template, epoch)


@epochs.compiled
def _model_cached(input_dim, hidden, latent, n, batch_size, learning_rate, decay, decay_epochs, min_learning_rate):
  # VaDE's official code multiplies the learning rate by `decay` every `decay_epochs` epochs, never going
  # below `min_learning_rate`.
  steps_per_epoch = -(-n // batch_size)
  schedule = optax.exponential_decay(learning_rate, transition_steps=decay_epochs * steps_per_epoch,
                                     decay_rate=decay, staircase=True, end_value=min_learning_rate)
  return VaDEModel(input_dim=input_dim, hidden=hidden, latent=latent), optax.adam(schedule)


def _model(config, input_dim, n=1):
  v = config.vade
  return _model_cached(input_dim, tuple(config.hidden), config.latent, n, v.batch_size, v.learning_rate,
                       v.lr_decay, v.lr_decay_epochs, v.min_learning_rate)


@epochs.compiled
def _epoch(model, tx, batch_size, n, batch_sharding, likelihood="bernoulli"):
  @functools.partial(jax.jit, donate_argnums=0)
  def epoch(state, x, rng):
    index, mask = epochs.epoch_batches(rng, n, batch_size)

    def step(state, batch):
      xb, m = x[batch[0]], batch[1]
      if batch_sharding is not None:
        xb, m = jax.lax.with_sharding_constraint((xb, m), batch_sharding)
      return train_step(state, {"x": xb, "mask": m}, rng, model=model, tx=tx, likelihood=likelihood)

    state, m = jax.lax.scan(step, state, (index, mask))
    return state, {"loss": jnp.mean(m["loss"])}

  return epoch


@functools.partial(jax.jit, static_argnums=0)
def _predict_jit(model, params, x):
  return predict(model, params, x)


@functools.partial(jax.jit, static_argnums=0)
def _posterior_jit(model, params, x):
  """The posterior mean of each row and ``log p(c | z)`` there."""
  mean, _ = model.apply({"params": params["vae"]}, x, method=model.encode)
  return mean, log_responsibility(mean, params["prior"])
