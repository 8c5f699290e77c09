"""TensorBoard-readable scalar logs without TensorFlow.

clu's metric writers import TensorFlow (or torch) to write event files; training must run where
neither is installed (accelerator images), so scalars are written with the ``tensorboard``
package's own event-file writer and protos, which need neither.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

# tensorboard.compat.tf imports TensorFlow whenever it is installed (5 s here) unless a module
# named tensorboard.compat.notf exists; that module is a Bazel target missing from the pip package,
# so an empty one is registered to select tensorboard's TF-free stub, as its own code intends.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402


class ScalarWriter:
  """Appends ``{tag: value}`` scalars at a step to an event file under ``logdir``.

  tensorboard's own writer reaches local folders only: under a URL ``logdir`` (``gs://...``) the event
  file is written in a local temporary folder and copied whole to ``logdir`` at every write (an event
  file of a run is a few kilobytes)."""

  def __init__(self, logdir):
    self._remote = None
    if "://" in str(logdir):
      import tempfile
      from etils import epath
      self._remote, logdir = epath.Path(str(logdir)), tempfile.mkdtemp(prefix="jaxclust-events-")
      self._remote.mkdir(parents=True, exist_ok=True)
    Path(logdir).mkdir(parents=True, exist_ok=True)
    self._writer = EventFileWriter(str(logdir))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary_pb2.Summary(value=values)))
    self._writer.flush()
    self._upload()

  def close(self) -> None:
    self._writer.close()
    self._upload()

  def _upload(self):
    if self._remote is not None:
      local = Path(self._writer.get_logdir())
      for file in local.iterdir():
        (self._remote / file.name).write_bytes(file.read_bytes())
