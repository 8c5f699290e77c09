"""jaxclust: deep clustering in JAX, on sharded on-device k-means, kNN and Sinkhorn kernels."""

from jaxclust import metrics, parallel
from jaxclust.k_choice import Choice, choose_k
from jaxclust.api import DEC, IDEC, SCAN, ContrastiveClustering, DeepCluster, DeepClusterV2, MoCo, SimCLR, SwAV, VaDE
from jaxclust.kernels.gmm import GMMOutput, gmm_diag
from jaxclust.kernels.kmeans import KMeansOutput, kmeans
from jaxclust.kernels.knn import KNNOutput, knn
from jaxclust.kernels.pca import PCAOutput, pca, pca_transform
from jaxclust.kernels.minibatch import MiniBatchState, minibatch_init, minibatch_kmeans, minibatch_update
from jaxclust.kernels.sinkhorn import sinkhorn_knopp

__version__ = "0.1.0"

__all__ = [
    "Choice", "ContrastiveClustering", "DEC", "DeepCluster", "DeepClusterV2", "IDEC", "MoCo", "SCAN", "SimCLR", "SwAV", "VaDE", "GMMOutput", "choose_k", "KMeansOutput", "KNNOutput", "gmm_diag", "MiniBatchState", "kmeans", "knn", "metrics", "minibatch_init",
    "minibatch_kmeans", "minibatch_update", "parallel", "PCAOutput", "pca", "pca_transform", "sinkhorn_knopp",
]
