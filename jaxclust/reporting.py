"""What a run shows while it trains: console lines, metrics.jsonl, TensorBoard scalars, a progress bar; and
the mosaic of each cluster's images that the report draws (:mod:`jaxclust.report`)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import tqdm

from jaxclust.metric_writer import ScalarWriter


class Logger:
  """One place for run output: console lines, metrics.jsonl, TensorBoard scalars, a progress bar.

  ``append(path, line)`` writes a line to a file of the workdir (local or URL); ``enabled`` is False off
  the lead process, which writes nothing."""

  def __init__(self, workdir, log, start: float, append, enabled: bool = True):
    self.workdir, self.log, self.start, self.append, self.enabled = workdir, log, start, append, enabled
    self.writer = ScalarWriter(workdir / "tensorboard") if enabled else None
    self.bar = None

  def stage(self, name: str, total: int, done: int):
    """A progress bar with ETA on a terminal (tqdm hides it when stderr is not a TTY)."""
    if self.bar is not None:
      self.bar.close()
    if not self.enabled:
      return
    self.bar = tqdm.tqdm(total=total, initial=done, desc=name, file=sys.stderr, disable=None, leave=False)

  def record(self, advance: int = 0, **fields):
    if not self.enabled:
      return
    fields["elapsed"] = time.perf_counter() - self.start  # seconds since this fit call started
    self.append(self.workdir / "metrics.jsonl", json.dumps(fields))
    position = fields.get("epoch", fields.get("step", 0))
    self.writer.write(position, {f"{fields['stage']}/{k}": v for k, v in fields.items()
                                 if isinstance(v, (int, float)) and k not in ("epoch", "step", "of")})
    line = format_fields(fields)
    if self.bar is not None and not self.bar.disable:
      self.bar.write(line)
      self.bar.update(advance)
    else:
      self.log(line)

  def close(self):
    if self.bar is not None:
      self.bar.close()
    if self.writer is not None:
      self.writer.close()


def format_fields(fields: dict) -> str:
  """``name=value ...``, floats to 4 decimals: a log line for a record or a summary."""
  return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def exemplar_grid(images, labels, confidence, k: int, per_cluster: int = 8, pad: int = 1):
  """One RGB mosaic in [0, 1]: row ``c`` holds cluster ``c``'s ``per_cluster`` most confident images,
  most confident first, each framed by ``pad`` white pixels; empty places stay white."""
  h, w = images.shape[1] + 2 * pad, images.shape[2] + 2 * pad
  grid = np.ones((k * h, per_cluster * w, 3), np.float32)
  for c in range(k):
    members = np.flatnonzero(labels == c)
    top = members[np.argsort(-confidence[members], kind="stable")][:per_cluster]
    for j, i in enumerate(top):  # only the shown images are converted: the dataset may be large
      grid[c * h + pad:(c + 1) * h - pad, j * w + pad:(j + 1) * w - pad] = np.clip(
          np.asarray(images[i], np.float32), 0.0, 1.0)  # one channel broadcasts to three
  return grid
