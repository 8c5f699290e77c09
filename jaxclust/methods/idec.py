"""IDEC: Improved Deep Embedded Clustering with local structure preservation (Guo et al., IJCAI 2017).

DEC's clustering loss plus the autoencoder's reconstruction loss, ``L = L_r + gamma * L_c`` with
``gamma = 0.1`` (eq. 6), so the decoder is kept and the embedding cannot distort freely. Everything
else (Student-t Q, target P refreshed over the whole dataset, the tol stopping rule) is DEC's, so
this module reuses :mod:`jaxclust.methods.dec` and fixes the loss weight.
"""

from __future__ import annotations

from jaxclust.methods import dec, pretrain
from jaxclust.methods.dec import DECState, embed, predict, refresh_target  # noqa: F401  (IDEC's API)
# The run is DEC's with the configuration's cluster.gamma (0.1 in IDEC's configs).
from jaxclust.methods.dec import assign, centers, prepare, readout, stages, step_flops, with_centers  # noqa: F401, E402

GAMMA = 0.1
RECIPES, REUSE = pretrain.RECIPES, pretrain.REUSE


def config():
  """DEC's settings with IDEC's loss weight and the paper's MNIST optimizer (Sec. 4.2): Adam at 0.001, the
  target refreshed every 140 steps. The paper's USPS settings are SGD at 0.1 with momentum 0.99 and a refresh
  every 30 steps (``--set cluster.optimizer=sgd --set cluster.learning_rate=0.1 --set cluster.momentum=0.99
  --set cluster.update_interval=30``), as experiments/reproduce_ae.py runs it."""
  c = pretrain.config()
  c.cluster.update({"gamma": GAMMA, "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.99})  # momentum: SGD's
  return c


def init(ae_params, centers, n: int, tx) -> DECState:
  """DEC's state, keeping the decoder that IDEC's reconstruction term trains."""
  return dec.init(ae_params, centers, n, tx, keep_decoder=True)


def train_step(state: DECState, batch, rng, *, model, tx, alpha: float = 1.0, gamma: float = GAMMA):
  """One step of ``reconstruction + gamma * KL(P || Q)``; see :func:`jaxclust.methods.dec.train_step`."""
  if gamma <= 0:
    raise ValueError(f"gamma={gamma} must be > 0 for IDEC (gamma = 0 is DEC)")
  return dec.train_step(state, batch, rng, model=model, tx=tx, alpha=alpha, gamma=gamma)
