"""An offline stand-in for a Google Cloud Storage bucket, for tests of ``gs://`` workdirs.

``gs://BUCKET/PATH`` stays a URL everywhere (etils.epath, orbax), and only the storage is swapped: epath's
fsspec backend (which it uses where TensorFlow is absent) gets a "gcs" filesystem that keeps objects under ``root``,
and orbax's TensorStore kvstore for gs:// becomes the "file" driver on the same folder. Orbax asks
google-cloud-storage whether a bucket has a hierarchical namespace; here it has none.
"""

import functools
import importlib
import os

import fsspec
from etils.epath import backend, gpath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils


def use_fake_gcs(root, monkeypatch):
  """Routes ``gs://`` URLs to the folder ``root`` until ``monkeypatch`` undoes it."""
  root = os.fspath(root)

  class FakeGCS(DirFileSystem):  # a class per root: fsspec caches instances by class and arguments
    protocol = ("gs", "gcs")

    def __init__(self, *args, **kwargs):
      super().__init__(path=root, fs=LocalFileSystem())

    @classmethod
    def _strip_protocol(cls, path):
      return str(path).removeprefix("gs://")

    def _join(self, path):
      return super()._join(path.removeprefix("gs://") if isinstance(path, str) else path)

  def kvstore(path):
    bucket, name = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(root, bucket, name)}

  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else epath opens gs:// with tf.io.gfile
  registry = importlib.import_module("fsspec.registry")._registry
  for name in FakeGCS.protocol:
    monkeypatch.setitem(registry, name, FakeGCS)
  # epath caches one filesystem per protocol: a fresh cache for this root, the old one back afterwards
  fs_backend = backend._FileSystemSpecBackend  # pylint: disable=protected-access
  monkeypatch.setattr(fs_backend, "_get_filesystem", functools.lru_cache()(fs_backend._get_filesystem.__wrapped__))
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda _: False)
