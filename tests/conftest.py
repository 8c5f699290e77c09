"""Test setup: 8 fake CPU devices for the sharded == single-device checks (must precede jax)."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  return x.astype(np.float32), y


@pytest.fixture(scope="session")
def blobs():
  from sklearn.datasets import make_blobs
  x, y = make_blobs(n_samples=3000, centers=8, n_features=12, cluster_std=2.0, random_state=0)
  return x.astype(np.float32), y


@pytest.fixture(scope="session")
def mesh():
  from jaxclust import parallel
  assert jax.device_count() == 8, "conftest must set XLA_FLAGS before jax initializes"
  return parallel.make_mesh(8)
