"""Collapse monitor of the online clustering methods (SwAV, DeepCluster-v2), computed every epoch.

A collapsed run puts (almost) every image on one prototype, or gives every image the same scores on
all of them: the loss, a cross-entropy over the K prototypes in both methods, then sits at ln K, the
value of uniform predictions. :func:`monitor` logs the usage of the prototypes and the loss's distance
from ln K, and warns at that plateau; :func:`geometry` measures the embeddings' spread and how much of
them the prototypes span (the scores see only that share); :func:`target_stability` is DeepCluster's
measure of how much its k-means targets still move.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxclust import metrics as cluster_metrics


@functools.partial(jax.jit, static_argnums=(2, 3))
def geometry(z, prototypes, n, span):
  """Collapse figures of the first ``n`` unit embeddings ``z``: ``embedding_spread``, 1 - |mean z|^2
  (0 when every image has the same embedding), and with ``span`` (SwAV) ``prototype_span``, the mean
  share of |z|^2 inside the span of the unit ``prototypes [K, e]``: 1 when they span the embedding
  space (K >= e), about K / e for random directions. The scores see only that share: embeddings
  outside the span score alike on every prototype, and the loss sits at ln K."""
  z = z[:n]
  mean = jnp.mean(z, 0)
  out = {"embedding_spread": 1.0 - mean @ mean}
  if span:
    basis, _ = jnp.linalg.qr(prototypes.T)  # orthonormal, [e, min(K, e)]
    out["prototype_span"] = jnp.mean(jnp.sum((z @ basis) ** 2, -1))
  return out


def target_stability(targets, previous, y):
  """DeepCluster-v2's k-means targets (first prototype set): their NMI to the previous epoch's targets
  (the DeepCluster paper's measure of how much the clustering still moves) and, with true labels, to
  those."""
  out = {}
  if previous is not None:
    out["targets_nmi_previous"] = cluster_metrics.nmi(previous, targets)
  if y is not None:
    out["targets_nmi_labels"] = cluster_metrics.nmi(y, targets)
  return out


def monitor(labels, codes, clusters, k, loss, figures=None, *, name: str, advice: str):
  """What shows a collapse: the usage of the ``k`` prototypes (``codes``: each image's nearest prototype)
  and how far the loss is from ln K (a cross-entropy over the K prototypes, in SwAV and DeepCluster-v2).
  Also the size entropy and empty clusters of the reported ``clusters`` (``labels``), recorded only:
  when over-clustering, the readout of a barely trained network may group almost every image together
  while training is healthy (the kNN readout on epoch 1 did, on MNIST), so the warning looks at the
  prototypes. ``figures`` (SwAV's ``batch_spread`` from the training steps, and :func:`geometry` when the
  epoch computed the embeddings) is recorded and quoted by the ln K warning, which names the method
  (``name``) and what to try (``advice``)."""
  out = {}
  if labels is not None:
    out.update(usage(labels, clusters, "size_entropy", "empty_clusters"))
  if codes is not None and k != clusters:
    out.update(usage(codes, k, "prototype_entropy", "unused_prototypes"))
  out["loss_minus_ln_k"] = loss - math.log(k)
  out.update(figures or {})
  if abs(out["loss_minus_ln_k"]) < 0.01 * math.log(k):
    shape = "".join(f", {key.replace('_', ' ')} {out[key]:.4f}" for key in (
        "embedding_spread", "prototype_span", "batch_spread") if key in out)
    warnings.warn(f"{name} loss {loss:.4f} sits at ln K = {math.log(k):.4f}, the value of uniform predictions: "
                  f"training may have collapsed{shape} ({advice})")
  entropy, unused = ("prototype_entropy", "unused_prototypes") if "prototype_entropy" in out else (
      "size_entropy", "empty_clusters")
  if out.get(entropy, 1.0) < 0.5:
    warnings.warn(f"prototypes are collapsing: the normalized entropy of their usage is {out[entropy]:.3f}, "
                  f"{out[unused]} of {k} prototypes unused")
  return out


def usage(labels, count, entropy, empty):
  """Normalized entropy of the sizes of ``count`` clusters and how many are empty, named as given."""
  sizes = np.bincount(labels, minlength=count)
  p = sizes[sizes > 0] / sizes.sum()
  return {entropy: float(-np.sum(p * np.log(p)) / math.log(count)), empty: int(np.sum(sizes == 0))}
