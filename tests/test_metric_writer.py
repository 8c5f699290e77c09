"""Scalars written without TensorFlow are read back by TensorBoard's event loader (raw events)."""

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from jaxclust.metric_writer import ScalarWriter


def test_scalars_round_trip(tmp_path):
  writer = ScalarWriter(tmp_path)
  writer.write(1, {"pretrain/loss": 0.5})
  writer.write(2, {"pretrain/loss": 0.25, "cluster/acc": 0.75})
  writer.close()
  (path,) = tmp_path.glob("events.out.tfevents.*")
  seen = [(e.step, v.tag, v.simple_value) for e in LegacyEventFileLoader(str(path)).Load() for v in e.summary.value]
  assert seen == [(1, "pretrain/loss", 0.5), (2, "pretrain/loss", 0.25), (2, "cluster/acc", 0.75)]
