"""Recipes by the kind and size of the data (jaxclust/configs.py and each method's RECIPES)."""

import json
import pathlib

import pytest

from jaxclust import cli, configs

MEASURED_CONFIGS = pathlib.Path(__file__).with_name("measured_configs.json")


def test_the_measured_datasets_keep_the_settings_they_were_measured_with():
  """Every method's settings for every named dataset, recorded before recipes were chosen by the data
  (2026-12-05, from the dataset-name branches of configs.py): unchanged but for SwAV's and DeepCluster-v2's
  ImageNet crops on CIFAR and STL-10, now scaled to the images (32 and 14 pixels, not 224 and 96), and IDEC's
  clustering optimizer, now the paper's MNIST one."""
  recorded = json.loads(MEASURED_CONFIGS.read_text())
  for key, settings in recorded.items():
    method, dataset = key.split("|")
    config = json.loads(configs.get_config(method, dataset).to_json())
    assert config.pop("recipe") == configs.MEASURED[dataset][0]
    if "crops" in config and "crops" not in settings:
      assert config.pop("crops")[0][1] == (96 if "stl10" in dataset else 32), key
    # How data is read, whether a report is drawn and seed labels (none by default), added after the record: at
    # their defaults none changes training.
    assert {name: config.pop(name) for name in ("labels", "image_size", "skip_bad_files", "report", "seed_labels")} == {
        "labels": "", "image_size": 0, "skip_bad_files": False, "report": True, "seed_labels": ""}, key
    if method == "vade":  # the likelihood, added later, chosen by the data: Bernoulli for these images in [0, 1]
      assert config["vade"].pop("likelihood") == "auto" and config["pretrain"]["loss"] == "auto", key
      config["pretrain"]["loss"] = "bce"
      assert config["vade"].pop("gmm_restarts") == 1, key  # added later; one fit, as measured
    if "cluster" in config:  # the optimizer setting, added later: SGD as measured, but IDEC's
      optimizer = config["cluster"].pop("optimizer")
      if method == "idec":  # the IDEC paper's MNIST optimizer since 2026-12-05, not the SGD 0.1 of the record
        assert (optimizer, config["cluster"]["learning_rate"]) == ("adam", 1e-3), key
        config["cluster"]["learning_rate"] = 0.1
      else:
        assert optimizer == "sgd", key
    assert config == settings, key


@pytest.mark.parametrize("shape, kind", [((20,), "vectors"), ((100, 3), "vectors"), ((28, 28, 1), "small_images"),
                                         ((64, 64, 3), "small_images"), ((96, 96, 3), "images")])
def test_the_kind_of_data_chooses_the_recipe(shape, kind):
  assert configs.data_kind(shape) == kind
  for method in configs.METHODS:
    if kind in configs.recipes(method):
      assert configs.get_config(method, "own.npy", n=5000, shape=shape).recipe == kind


def test_recipe_lengths_are_images_seen_at_the_reference_size():
  """The small-image recipes were chosen on MNIST's 70,000 images: the same number of images seen on other
  sizes, at most 10 times the epochs (a few hundred rows would otherwise loop for thousands)."""
  mnist = configs.get_config("scan", "mnist")
  assert (mnist.pretext.epochs, mnist.scan.epochs, mnist.pretext.warmup_epochs) == (50, 150, 5)
  tenth = configs.get_config("scan", "own", n=7000, shape=(28, 28, 1))
  assert (tenth.pretext.epochs, tenth.scan.epochs, tenth.pretext.warmup_epochs) == (500, 1500, 50)
  assert configs.get_config("scan", "own", n=700, shape=(28, 28, 1)).pretext.epochs == 500  # capped at 10x
  assert configs.get_config("scan", "own", n=140_000, shape=(28, 28, 1)).pretext.epochs == 25
  assert configs.get_config("swav", "own", n=35_000, shape=(28, 28, 1)).epochs == 60
  dec = configs.get_config("dec", "own", n=35_000, shape=(28, 28, 1))
  assert (dec.pretrain.epochs, dec.vade.epochs, dec.cluster.max_steps) == (400, 600, 20_000)  # steps stay steps
  assert configs.epochs_for(0, 70_000, 10) == 0  # a stage turned off stays off


def test_crops_follow_the_image_size():
  own = configs.get_config("swav", "own", n=70_000, shape=(32, 32, 3))
  assert own.recipe == "small_images" and [c[1] for c in own.crops] == [32, 18]
  large = configs.get_config("deepcluster", "own", n=10_000, shape=(96, 96, 3))
  assert large.recipe == "images" and [c[1] for c in large.crops] == [96, 41]
  stl = configs.get_config("scan", "own", n=10_000, shape=(96, 96, 3))
  assert (stl.stem, stl.backbone) == ("imagenet", "resnet18")


def test_vectors_get_standardized_features():
  c = configs.get_config("dec", "table.csv", n=500, shape=(13,))
  assert c.recipe == "vectors" and c.standardize


def test_recipe_chosen_by_name_and_refused_when_unknown(tmp_path, capsys):
  c = cli.make_config("dec", "digits", recipe="small_images")
  assert c.recipe == "small_images" and c.pretrain.epochs == 2000  # 14M images seen of 1,797, capped at 10x
  assert cli.main(["fit", "dec", "--recipe", "large", "--workdir", str(tmp_path / "r")]) == 2
  assert "recipe 'large' is not one of dec's: vectors, small_images, images, digits" in capsys.readouterr().err
  assert cli.main(["fit", "dec", "--set", "recipe=digits", "--workdir", str(tmp_path / "r")]) == 2
  assert "choose it with --recipe digits" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()


def test_recipes_command_lists_each_recipe_and_what_it_sets(capsys):
  assert cli.main(["recipes"]) == 0
  out = capsys.readouterr().out
  for method in configs.METHODS:
    assert f"\n{method}:\n" in "\n" + out
    for name in configs.recipes(method):
      assert f"  {name}: " in out
  assert cli.main(["recipes", "scan"]) == 0
  out = capsys.readouterr().out
  assert "backbone='small_cnn'" in out and "pretext.epochs=50" in out and "dec:" not in out
