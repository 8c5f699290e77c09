"""Over-clustering read out as fewer clusters: grouping K prototypes by their nearest neighbours.

SwAV and DeepCluster-v2 train with more prototypes than there are classes (30 and 200 for MNIST's 10 in
jaxclust's MNIST recipes, 3000 for ImageNet's 1000 in the papers). Reporting ``n`` clusters then needs
a grouping of the K prototype clusters into ``n``. Spherical k-means of the embeddings into ``n``
(``readout="kmeans"``) optimizes a criterion that can prefer the wrong grouping: on MNIST it merges
part of the 9s with the 7s while the 100 clusters are 96% pure (experiments/RESULTS.md).

``readout="knn"`` (not in the papers) groups the clusters by the embedding's neighbourhoods instead,
the relation SCAN mines (Van Gansbeke et al. 2020): each image is assigned to its cluster, and so are
its ``k`` nearest neighbours (cosine similarity of the embeddings, :func:`jaxclust.knn`);
``transitions[a, b]`` counts the neighbours of images of cluster ``a`` that lie in cluster ``b``
(:func:`cluster_transitions`). Clusters whose members are each other's neighbours hold the same kind of
image. :func:`group_clusters` groups them by average linkage (UPGMA, scipy) on the symmetric,
degree-normalized counts ``S[a, b] = (T + T^T)[a, b] / sqrt(d_a d_b)``: every pair of groups is merged by
the mean affinity of their members, so a large cluster does not absorb its neighbours by size, and no
group-size prior is imposed.

An earlier version counted where each image's training augmentations land instead of its
neighbours. On MNIST that merged digits whose crops look alike (a crop of a 7 often looks like a 1),
and it scored 0.82-0.84 on four of six DeepCluster-v2 checkpoints where the neighbours score within
0.007 of the purity of the prototype clusters (experiments/RESULTS.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.cluster.hierarchy import cut_tree, linkage
from scipy.spatial.distance import squareform

from jaxclust import parallel, validation
from jaxclust.kernels.kmeans import kmeans
from jaxclust.kernels.knn import knn

READOUTS = ("kmeans", "knn")


def cluster_transitions(clusters, other_clusters, k: int, mask=None):
  """``[k, k]`` counts: ``out[a, b]`` = number of pairs (row in cluster ``a``, one of its ``v`` others in ``b``).

  Args:
    clusters: ``[b]`` int cluster of every row.
    other_clusters: ``[b, v]`` int cluster of each of ``v`` rows related to every row (its neighbours).
    k: number of clusters.
    mask: optional ``[b]``, False on padding rows.

  Returns:
    ``[k, k]`` float32 counts (a sum over rows, so under ``jit`` a row-sharded batch gives the global counts).
  """
  k = validation.check_count(k, "k", low=1)
  if clusters.ndim != 1 or other_clusters.ndim != 2 or other_clusters.shape[0] != clusters.shape[0]:
    raise ValueError(f"clusters [b] and other_clusters [b, v] must have the same b; got shapes {clusters.shape} "
                     f"and {other_clusters.shape}")
  source = jax.nn.one_hot(clusters, k, dtype=jnp.float32)
  if mask is not None:
    source = source * mask[:, None].astype(jnp.float32)
  target = jnp.sum(jax.nn.one_hot(other_clusters, k, dtype=jnp.float32), axis=1)  # [b, k] others per cluster
  return source.T @ target


def group_clusters(transitions, n_groups: int, prototypes) -> np.ndarray:
  """The group (``0 .. n_groups - 1``) of each of K clusters, by average linkage on their transitions.

  Args:
    transitions: ``[K, K]`` non-negative counts (:func:`cluster_transitions`); the diagonal is ignored.
    n_groups: number of groups, at most K.
    prototypes: ``[K, e]`` unit prototypes. A cluster that no pair left or reached has no transitions
      to group it by; it joins the group of the visited cluster with the most similar prototype.

  Returns:
    ``[K]`` int32 groups. With fewer than ``n_groups`` visited clusters (a collapsed run) only that many
    groups are used.
  """
  transitions = np.asarray(transitions, np.float64)
  prototypes = np.asarray(prototypes, np.float64)
  k = transitions.shape[0]
  if transitions.ndim != 2 or transitions.shape != (k, k):
    raise ValueError(f"transitions must be a square [K, K] matrix; got shape {transitions.shape}")
  if not np.all(np.isfinite(transitions)) or np.any(transitions < 0):
    raise ValueError("transitions must be finite and non-negative counts")
  if prototypes.shape[0] != k:
    raise ValueError(f"prototypes has {prototypes.shape[0]} rows but transitions is [{k}, {k}]")
  n_groups = validation.check_count(n_groups, "n_groups", low=1, high=k, high_name="K (the clusters)")
  affinity = transitions + transitions.T
  np.fill_diagonal(affinity, 0.0)
  degree = affinity.sum(1)
  visited = np.flatnonzero(degree > 0)
  groups = np.zeros(k, np.int32)
  if len(visited) >= 2:
    s = affinity[np.ix_(visited, visited)] / np.sqrt(np.outer(degree[visited], degree[visited]))
    # Average linkage is unchanged by an affine map of the distances: max(S) - S is S's order reversed.
    tree = linkage(squareform(s.max() - s, checks=False), method="average")
    groups[visited] = cut_tree(tree, n_clusters=min(n_groups, len(visited)))[:, 0]
  if 0 < len(visited) < k:
    unvisited = np.flatnonzero(degree == 0)
    nearest = visited[np.argmax(prototypes[unvisited] @ prototypes[visited].T, axis=1)]
    groups[unvisited] = groups[nearest]
  return groups


def over_cluster(z, clusters: int, *, readout: str, rng, codes=None, neighbors: int = 0, prototypes=None):
  """``clusters`` clusters of rows whose K prototype clusters are more: ``(labels [n], files)``, where
  ``files`` is what assigns new rows to them (``{"centroids"}`` or ``{"groups"}``).

  Args:
    z: ``[n, e]`` unit embeddings of the rows (row-sharded or on the host).
    clusters: how many clusters to report, fewer than the prototypes.
    readout: ``"kmeans"``: spherical k-means of ``z`` into ``clusters`` (10 restarts, key ``rng``); a new
      row joins the nearest of the unit ``centroids [clusters, e]``. ``"knn"``: the prototype clusters
      grouped by the ``neighbors`` nearest neighbours of their members (:func:`neighbor_groups`); a row's
      cluster is its prototype's group, ``groups [K]``.
    codes: ``[n]`` each row's prototype (``"knn"`` only).
    prototypes: ``[K, e]`` unit prototypes (``"knn"`` only).
  """
  if readout == "knn":
    groups = neighbor_groups(jnp.asarray(z), jnp.asarray(codes), neighbors, clusters, prototypes)
    return groups[parallel.fetch(codes)], {"groups": groups}
  if readout != "kmeans":
    raise ValueError(f"readout={readout!r} must be one of {', '.join(READOUTS)}")
  out = kmeans(jnp.asarray(z), clusters, rng=rng, n_init=10, spherical=True)
  return parallel.fetch(out.labels), {"centroids": np.asarray(parallel.fetch(_unit(out.centers)))}


def neighbor_groups(z, codes, neighbors: int, clusters: int, prototypes) -> np.ndarray:
  """:func:`group_clusters` of the prototype clusters ``codes [n]`` by :func:`neighbor_transitions`."""
  transitions = neighbor_transitions(z, codes, neighbors, prototypes.shape[0])
  return group_clusters(parallel.fetch(transitions), clusters, parallel.fetch(prototypes))


def neighbor_transitions(z, codes, neighbors: int, k: int):
  """:func:`cluster_transitions` from each row's cluster to those of its ``neighbors`` nearest neighbours
  in ``z`` (cosine, the row itself left out)."""
  nearest = knn(z, neighbors + 1).indices[:, 1:]  # column 0: the row itself (or an exact duplicate of it)
  return _transitions_jit(codes, nearest, k)


@functools.partial(jax.jit, static_argnums=2)
def _transitions_jit(codes, nearest, k):
  return cluster_transitions(codes, codes[nearest], k)


def _unit(v):
  v = v.astype(jnp.float32)
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
