"""jaxclust: deep clustering in JAX."""
from jaxclust.kernels.kmeans import KMeansOutput, kmeans

__version__ = "0.1.0"
