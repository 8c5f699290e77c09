"""The methods: one module each, run by :mod:`jaxclust.engine`. A new method is a module and a line here."""

import importlib

REGISTRY = {
    "dec": "jaxclust.methods.dec",
    "idec": "jaxclust.methods.idec",
    "vade": "jaxclust.methods.vade",
    "scan": "jaxclust.methods.scan",
    "swav": "jaxclust.methods.swav",
    "deepcluster": "jaxclust.methods.deepcluster",
    "simclr": "jaxclust.methods.contrastive",  # SimCLR pretraining, then k-means of its features
    "moco": "jaxclust.methods.contrastive",  # MoCo v2 pretraining, then k-means
    "cc": "jaxclust.methods.cc",
    "deepcluster2018": "jaxclust.methods.deepcluster2018",  # DeepCluster (Caron et al. 2018)
}


def get(name: str):
  """The module of method ``name`` (imported on first use)."""
  if name not in REGISTRY:
    raise ValueError(f"method={name!r} must be one of {', '.join(REGISTRY)}")
  return importlib.import_module(REGISTRY[name])
