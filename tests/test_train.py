"""fit: resumes after SIGKILL to the same result, never overwrites a finished or foreign run."""

import importlib
import json

import numpy as np
import pytest

from jaxclust import cli, configs, engine, parallel
from jaxclust import workdir as workdirs

ONE_DEVICE = parallel.make_mesh(1)  # the kill-and-resume tests run on one device

FAST = ["pretrain.epochs=4", "cluster.update_interval=10", "cluster.max_steps=80", "cluster.tol=0.0",
        "checkpoint_every=1", "hidden=(64, 64)", "cluster.kmeans_n_init=2", "vade.epochs=3",
        "vade.batch_size=64"]


def fast_config(method="dec"):
  config = configs.get_config(method, "digits")
  config.pretrain.epochs, config.cluster.update_interval, config.cluster.max_steps = 4, 10, 80
  config.cluster.tol, config.checkpoint_every, config.hidden, config.cluster.kmeans_n_init = 0.0, 1, (64, 64), 2
  config.vade.epochs, config.vade.batch_size = 3, 64  # batches split evenly over the 8 test devices
  return config


def two_process_settings(data_input: str) -> list[str]:
  """``--set`` values of :func:`fast_config` DEC for the 2-process tests, shorter: there every step and save
  synchronizes the processes. A save every 4 clustering intervals; the labels do not depend on when a run saves."""
  return FAST + [f"input={data_input}", "checkpoint_every=4", "pretrain.epochs=2", "cluster.max_steps=40", "report=False"]


def two_process_config(data_input: str, method: str = "dec"):
  """The configuration the command line makes of :func:`two_process_settings`."""
  return cli.make_config(method, "digits", settings=two_process_settings(data_input))


def test_train_seconds_counts_an_epoch_redone_after_a_kill_once(tmp_path):
  records = [{"stage": "pretrain", "epoch": 1, "seconds": 1.0}, {"stage": "pretrain", "epoch": 2, "seconds": 2.0},
             {"stage": "pretrain", "epoch": 2, "seconds": 3.0},  # killed before its save: redone
             {"stage": "cluster", "step": 0, "changed": 1.0}, {"stage": "cluster", "step": 0, "seconds": 0.5},
             {"stage": "cluster", "epoch": 1, "seconds": 0.25}, {"stage": "mine", "neighbors": 5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert workdirs.train_seconds(tmp_path) == 1.0 + 3.0 + 0.5 + 0.25
  assert workdirs.train_seconds(tmp_path / "elsewhere") == 0.0


def test_finished_workdir_is_not_trained_again(tmp_path):
  lines = []
  summary = engine.fit(fast_config(), tmp_path, log=lines.append)
  # The run's last line is its summary, floats to 4 decimals.
  assert lines[-1].startswith("final: method=dec dataset=digits n=1797 d=64 shape=[8, 8, 1] k=10 ")
  assert f" acc={summary['acc']:.4f} nmi={summary['nmi']:.4f} " in lines[-1]
  stamp = (tmp_path / "labels.npy").stat().st_mtime_ns
  messages = []
  assert engine.fit(fast_config(), tmp_path, log=messages.append) == summary
  assert "finished run" in messages[0]
  assert (tmp_path / "labels.npy").stat().st_mtime_ns == stamp


def test_other_configuration_is_refused(tmp_path):
  config = fast_config()
  config.pretrain.epochs = 1
  config.cluster.max_steps = 10
  engine.fit(config, tmp_path, log=lambda _: None)
  (tmp_path / "summary.json").unlink()  # an unfinished run
  other = fast_config()
  with pytest.raises(ValueError, match=r"another configuration \(differs in cluster.max_steps: 10 -> 80, "
                                       r"pretrain.epochs: 1 -> 4\)"):
    engine.fit(other, tmp_path, log=lambda _: None)


def test_setting_added_since_the_run_started_resumes_at_its_default(tmp_path):
  """A config.json written before jaxclust had a setting lacks it: the run resumes while the setting
  keeps its default (the old behaviour), and is refused when the setting is changed."""
  config = fast_config()
  config.pretrain.epochs, config.cluster.max_steps = 1, 10
  summary = engine.fit(config, tmp_path, log=lambda _: None)
  path = tmp_path / "config.json"

  def as_an_older_version_wrote_it(**extra):
    (tmp_path / "summary.json").unlink(missing_ok=True)
    saved = json.loads(path.read_text())
    saved.pop("latent", None), saved["pretrain"].pop("init_from", None)
    path.write_text(json.dumps({**saved, **extra}))

  as_an_older_version_wrote_it()
  resumed = engine.fit(config, tmp_path, log=lambda _: None)
  assert {k: v for k, v in resumed.items() if k != "wall_seconds"} == {
      k: v for k, v in summary.items() if k != "wall_seconds"}
  saved = json.loads(path.read_text())
  assert (saved["latent"], saved["pretrain"]["init_from"]) == (10, ""), "the resumed settings are not recorded"

  as_an_older_version_wrote_it()
  changed = fast_config()
  changed.pretrain.epochs, changed.cluster.max_steps, changed.latent = 1, 10, 5
  with pytest.raises(ValueError, match=r"differs in latent: '\(absent\)' -> 5\)"):
    engine.fit(changed, tmp_path, log=lambda _: None)

  as_an_older_version_wrote_it(retired=1)  # a setting this version no longer has is not guessed at
  with pytest.raises(ValueError, match=r"differs in retired: 1 -> '\(absent\)'\)"):
    engine.fit(config, tmp_path, log=lambda _: None)


def test_corrupt_checkpoint_is_refused(tmp_path):
  config = fast_config()
  config.cluster.max_steps = 10
  engine.fit(config, tmp_path, log=lambda _: None)
  (tmp_path / "summary.json").unlink()
  latest = max((p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
  for f in latest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "meta" not in str(f):
      f.write_bytes(b"corrupt")
  with pytest.raises(ValueError, match=r"cannot be restored"):
    engine.fit(config, tmp_path, log=lambda _: None)


@pytest.mark.parametrize("method", ["idec", "vade"])
def test_other_methods_run_end_to_end(tmp_path, method):
  summary = engine.fit(fast_config(method), tmp_path, log=lambda _: None)
  assert summary["method"] == method and 0.0 < summary["acc"] <= 1.0
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines[0]["stage"] == "pretrain" and lines[-1]["stage"] == "cluster"
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_predict_and_eval_on_a_finished_run(tmp_path, capsys):
  from sklearn.datasets import load_digits

  from jaxclust import cli
  engine.fit(fast_config(), tmp_path, log=lambda _: None)
  x, y = load_digits(return_X_y=True)
  np.savez(tmp_path / "new.npz", x=(x[:100] / 16.0).astype(np.float32), y=y[:100])
  labels = engine.predict(tmp_path, (x[:100] / 16.0).astype(np.float32)).labels
  np.testing.assert_array_equal(labels, np.load(tmp_path / "labels.npy")[:100])  # same rows, same clusters
  assert cli.main(["predict", "--workdir", str(tmp_path), "--input", str(tmp_path / "new.npz"),
                   "--output", str(tmp_path / "pred.npy")]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / "pred.npy")["label"], labels)
  assert "ACC=" in capsys.readouterr().out
  assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  out = capsys.readouterr().out
  assert f"ACC={summary['acc']:.4f}" in out and f"train={summary['train_seconds']:.1f}s" in out
  with pytest.raises(ValueError, match=r"input has rows of shape \(10,\) but the run"):
    engine.predict(tmp_path, np.zeros((3, 10), np.float32)).labels
  assert cli.main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2


def test_cli_fit_with_a_config_file_and_overrides(tmp_path):
  from jaxclust import cli
  config_file = tmp_path / "small.py"
  config_file.write_text(
      "from jaxclust import configs\n\n\n"
      "def get_config():\n"
      "  c = configs.get_config('dec', 'digits')\n"
      "  c.pretrain.epochs, c.cluster.max_steps, c.hidden, c.cluster.kmeans_n_init = 2, 20, (32,), 1\n"
      "  return c\n")
  workdir = tmp_path / "run"
  assert cli.main(["fit", "dec", "--config", str(config_file), "--workdir", str(workdir),
                   "--set", "cluster.update_interval=10", "--set", "seed=3"]) == 0
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["pretrain"]["epochs"] == 2 and saved["cluster"]["update_interval"] == 10 and saved["seed"] == 3
  assert json.loads((workdir / "summary.json").read_text())["seed"] == 3


def test_a_run_that_failed_on_bad_data_does_not_claim_the_workdir(tmp_path):
  config = fast_config()
  config.dataset, config.data_dir = "mnist", str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match=r"not found|pass data_dir"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run" / "config.json").exists()
  good = fast_config()
  good.cluster.max_steps = 10
  good.data_dir = str(tmp_path / "elsewhere")  # digits ignores data_dir; a different path must not block resume
  engine.fit(good, tmp_path / "run", log=lambda _: None)
  (tmp_path / "run" / "summary.json").unlink()
  good.data_dir = ""
  engine.fit(good, tmp_path / "run", log=lambda _: None)


def test_init_from_starts_from_another_runs_autoencoder(tmp_path):
  engine.fit(fast_config("dec"), tmp_path / "dec", log=lambda _: None)
  config = fast_config("idec")
  config.pretrain.init_from = str(tmp_path / "dec")
  engine.fit(config, tmp_path / "idec", log=lambda _: None)
  records = {name: [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("dec", "idec")}
  assert not [r for r in records["idec"] if r["stage"] == "pretrain"]
  # Same encoder and same k-means key: the first cluster assignment is the same in both runs.
  first = {name: next(r for r in rs if r["stage"] == "cluster") for name, rs in records.items()}
  assert first["idec"]["acc"] == first["dec"]["acc"] and first["idec"]["nmi"] == first["dec"]["nmi"]


def test_init_from_without_a_pretrained_autoencoder_is_refused(tmp_path):
  config = fast_config("idec")
  config.pretrain.init_from = str(tmp_path / "nothing")
  with pytest.raises(ValueError, match="init_from=.*nothing.*no pretrained_autoencoder"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()
  engine.fit(fast_config("dec"), tmp_path / "small", log=lambda _: None)
  config.pretrain.init_from, config.hidden = str(tmp_path / "small"), (32, 32)
  with pytest.raises(ValueError, match="does not fit this configuration"):
    engine.fit(config, tmp_path / "other", log=lambda _: None)


def test_standardize_uses_training_statistics_and_refuses_constant_features(tmp_path):
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), 200)
  # Features 0 and 1 separate the clusters on a small scale; feature 2 is large-scale noise.
  x = np.stack([y + 0.05 * rng.normal(size=600), y + 0.05 * rng.normal(size=600), 1000.0 * rng.normal(size=600)], 1)
  np.savez(tmp_path / "table.npz", x=x.astype(np.float32), y=y)
  config = fast_config()
  config.dataset, config.standardize, config.hidden = str(tmp_path / "table.npz"), True, (32, 32)
  config.latent = 2
  summary = engine.fit(config, tmp_path / "run", log=lambda _: None)
  stats = np.load(tmp_path / "run" / "standardization.npz")
  np.testing.assert_allclose(stats["mean"], x.astype(np.float32).mean(0), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(stats["std"], x.astype(np.float32).std(0), rtol=1e-5)
  # k-means on the raw features finds the noise (ACC 0.38); on standardized ones, ACC 1.0. The
  # tiny 4-epoch run here reached 0.85 when this test was written.
  assert summary["acc"] > 0.7
  # predict applies the saved statistics to new rows: the training rows get their training labels.
  np.testing.assert_array_equal(engine.predict(tmp_path / "run", x[:50].astype(np.float32)).labels,
                                np.load(tmp_path / "run" / "labels.npy")[:50])
  x[:, 1] = 7.0
  np.savez(tmp_path / "constant.npz", x=x.astype(np.float32), y=y)
  config.dataset = str(tmp_path / "constant.npz")
  with pytest.raises(ValueError, match=r"1 feature\(s\) have zero variance \(columns 1\)"):
    engine.fit(config, tmp_path / "constant_run", log=lambda _: None)
  assert not (tmp_path / "constant_run").exists()


def test_conv_autoencoder_runs_dec_and_predicts(tmp_path):
  from sklearn.datasets import load_digits
  config = fast_config("idec")
  config.model, config.conv_channels = "conv", (8, 16)
  summary = engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert summary["shape"] == [8, 8, 1]
  # 4 pretraining epochs of a tiny conv net: ACC 0.395 when this test was written (chance: about 0.1).
  assert summary["acc"] > 0.3
  x = (load_digits().data[:40] / 16.0).astype(np.float32)
  np.testing.assert_array_equal(engine.predict(tmp_path / "run", x).labels, np.load(tmp_path / "run" / "labels.npy")[:40])


def test_conv_autoencoder_needs_images_and_an_ae_method(tmp_path):
  config = fast_config("vade")
  config.model = "conv"
  with pytest.raises(ValueError, match="model='conv' is offered for dec and idec"):
    engine.fit(config, tmp_path / "vade", log=lambda _: None)
  np.savez(tmp_path / "table.npz", x=np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
  config = fast_config("dec")
  config.model, config.dataset, config.n_clusters = "conv", str(tmp_path / "table.npz"), 3
  with pytest.raises(ValueError, match=r"model='conv' needs images \[H, W, C\].*\(4,\)"):
    engine.fit(config, tmp_path / "table", log=lambda _: None)
  config.model = "transformer"
  with pytest.raises(ValueError, match="model='transformer' must be 'mlp' or 'conv'"):
    engine.fit(config, tmp_path / "table", log=lambda _: None)
  assert not (tmp_path / "vade").exists() and not (tmp_path / "table").exists()


def test_an_unknown_input_is_refused_before_the_workdir_is_claimed(tmp_path):
  config = fast_config("dec")
  config.input = "hdf5"
  with pytest.raises(ValueError, match="input='hdf5' must be 'device' or 'tf.data'"):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, value, message", [
    ("pretrain.batch_size", 0, r"pretrain.batch_size=0 must be >= 1"),
    ("pretrain.epochs", -1, r"pretrain.epochs=-1 must be >= 0"),
    ("pretrain.learning_rate", -1.0, r"pretrain.learning_rate=-1.0 must be a finite number > 0"),
    ("cluster.batch_size", 0, r"cluster.batch_size=0 must be >= 1"),
    ("cluster.momentum", 1.5, r"cluster.momentum=1.5 must be a finite number in \[0, 1\]"),
    ("hidden", (500, 0, 2000), r"hidden\[1\]=0 must be >= 1")])
def test_out_of_range_settings_are_refused_before_any_work(tmp_path, setting, value, message):
  """Refused at once, not after pretraining (cluster.batch_size) or as a diverging loss (learning_rate)."""
  config = fast_config("dec")
  section, _, name = setting.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message):
    engine.fit(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("driver,method", [("engine", "dec"), ("engine", "scan"), ("engine", "swav")])
def test_every_driver_returns_a_finished_run_untouched(tmp_path, driver, method):
  # No data is loaded and nothing is written: the workdir's summary comes back as it is.
  (tmp_path / "summary.json").write_text('{"acc": 0.25}')
  messages = []
  fit = importlib.import_module(f"jaxclust.{driver}").fit
  assert fit(configs.get_config(method, "digits"), tmp_path, log=messages.append) == {"acc": 0.25}
  assert messages == [f"{tmp_path} holds a finished run; not training again (use another --workdir for a new run)"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_predict_finds_the_nearest_training_rows_in_the_embedding(tmp_path, capsys):
  from sklearn.datasets import load_digits

  from jaxclust import cli
  engine.fit(fast_config(), tmp_path, log=lambda _: None)
  x = (load_digits().data / 16.0).astype(np.float32)
  out = engine.predict(tmp_path, x[:40], neighbors=4)
  # brute force in the embedding of every training row
  z = engine.predict(tmp_path, x).embedding.astype(np.float64)
  d = np.sqrt(((out.embedding[:, None, :].astype(np.float64) - z[None]) ** 2).sum(-1))
  np.testing.assert_allclose(out.neighbor_distances, np.sort(d, axis=1)[:, :4], atol=1e-4)
  np.testing.assert_allclose(np.take_along_axis(d, out.neighbors, 1), out.neighbor_distances, atol=1e-4)
  assert (out.neighbors[:, 0] == np.arange(40)).mean() > 0.9  # a training row is its own nearest, up to duplicates
  np.testing.assert_array_equal(out.neighbor_labels, np.load(tmp_path / "labels.npy")[out.neighbors])
  np.save(tmp_path / "new.npy", x[:40])
  assert cli.main(["predict", "--workdir", str(tmp_path), "--input", str(tmp_path / "new.npy"), "--neighbors", "4",
                   "--output", str(tmp_path / "pred.npy")]) == 0
  table = np.load(tmp_path / "pred.npy")
  np.testing.assert_array_equal(table["neighbors"], out.neighbors)
  np.testing.assert_array_equal(table["neighbor_labels"], out.neighbor_labels)
  assert "4 nearest training rows each:" in capsys.readouterr().out
  assert cli.main(["predict", "--workdir", str(tmp_path), "--input", str(tmp_path / "new.npy"), "--neighbors", "4",
                   "--output", str(tmp_path / "pred.csv")]) == 0
  header = (tmp_path / "pred.csv").read_text().splitlines()[0].split(",")
  assert header[3:5] == ["neighbor_1", "neighbor_2"] and header[-1] == "neighbor_label_4"
  assert cli.main(["predict", "--workdir", str(tmp_path), "--input", str(tmp_path / "new.npy"), "--neighbors",
                   "5000"]) == 2
  assert "neighbors=5000 must be in [1, 1797]" in capsys.readouterr().err
