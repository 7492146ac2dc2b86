"""The tutorial recipes (configs/recipes/, from seed-recipes.md): configs, networks, optimizers, one-epoch runs."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from conftest import make_small_data, path_args, paths_under, run_cli
from digits import config
from digits.cli import main
from digits.config import CONFIGS_DIR, apply_overrides, load_config
from digits.errors import InputError
from digits.models import OneCycle, load_model, make_model, make_optimizer

RECIPES = ("lenet-tutorial", "ann-baseline", "cnn-baseline", "kaggle-rmsprop", "tf-tutorial", "simple-cnn")
# Parameter counts that seed-recipes.md gives.
PARAMS = {"lenet-tutorial": 197_855, "ann-baseline": 79_510, "cnn-baseline": 80_662}
OPTIMIZERS = {"lenet-tutorial": keras.optimizers.Adam, "ann-baseline": keras.optimizers.SGD,
              "cnn-baseline": keras.optimizers.SGD, "kaggle-rmsprop": keras.optimizers.RMSprop,
              "tf-tutorial": keras.optimizers.Adam, "simple-cnn": keras.optimizers.Adam}


def recipe_model(cfg):
    return make_model(cfg.architectures[0], l2=cfg.l2, dropout=cfg.dropout)


def test_the_six_recipes_are_shipped():
    assert sorted(p.stem for p in (CONFIGS_DIR / "recipes").glob("*.toml")) == sorted(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_config_loads(recipe):
    cfg = load_config(f"recipes/{recipe}")
    assert (cfg.name, cfg.members, cfg.architectures) == (recipe, 1, (recipe,))
    assert load_config(str(CONFIGS_DIR / "recipes" / f"{recipe}.toml")) == cfg
    first_line = (CONFIGS_DIR / "recipes" / f"{recipe}.toml").read_text().splitlines()[0]
    assert first_line.startswith("# ") and "reported" in first_line
    if recipe == "kaggle-rmsprop":
        assert (cfg.schedule, cfg.rotation_degrees, cfg.zoom, cfg.shift) == ("plateau", 10.0, 0.1, 0.1)
    else:
        assert (cfg.schedule, cfg.rotation_degrees, cfg.zoom, cfg.shift) == ("constant", 0.0, 0.0, 0.0)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_network_builds(recipe):
    model = recipe_model(load_config(f"recipes/{recipe}"))
    if recipe in PARAMS:
        assert model.count_params() == PARAMS[recipe]
    probs = keras.ops.convert_to_numpy(model(np.random.default_rng(0).random((2, 28, 28, 1), np.float32)))
    assert probs.shape == (2, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_optimizer(recipe):
    cfg = load_config(f"recipes/{recipe}")
    model = recipe_model(cfg)
    model.compile(optimizer=make_optimizer(cfg, cfg.learning_rate), loss="sparse_categorical_crossentropy")
    assert type(model.optimizer) is OPTIMIZERS[recipe]
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(cfg.learning_rate)
    if cfg.optimizer == "sgd":
        assert model.optimizer.momentum == pytest.approx(0.9)


def test_make_optimizer_takes_a_schedule():
    cfg = load_config("recipes/ann-baseline")
    optimizer = make_optimizer(cfg, OneCycle(0.01, 100))
    assert isinstance(optimizer, keras.optimizers.SGD) and isinstance(optimizer._learning_rate, OneCycle)


def test_tf_tutorial_variant_adds_l2_and_dropout(tmp_path):
    """L2 on both Dense layers and Dropout 0.2 before the first: config fields, no extra parameters."""
    cfg = load_config("recipes/tf-tutorial", {"l2": "1e-4", "dropout": "0.2"})
    base, model = recipe_model(load_config("recipes/tf-tutorial")), recipe_model(cfg)
    names = [type(layer).__name__ for layer in model.layers]
    assert names[names.index("Flatten") + 1:] == ["Dropout", "Dense", "Dense", "Activation"]
    assert model.layers[names.index("Dropout")].rate == 0.2
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.kernel_regularizer.l2 for layer in dense] == pytest.approx([1e-4, 1e-4])
    assert "Dropout" not in [type(layer).__name__ for layer in base.layers]
    assert model.count_params() == base.count_params()
    x = np.random.default_rng(1).random((4, 28, 28, 1), np.float32)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    assert len(restored.losses) == 2  # the two L2 penalties survive saving


BAD = {
    "optimizer": ({"optimizer": "adagrad"}, "key 'optimizer' must be 'adam', 'sgd' or 'rmsprop'"),
    "momentum": ({"optimizer": "sgd", "momentum": 1.0}, "key 'momentum' must be at least 0 and below 1"),
    "adam momentum": ({"momentum": 0.9}, "key 'momentum' must be 0 with optimizer 'adam'"),
    "l2": ({"l2": -1e-4}, "key 'l2' must be 0 (off) or more"),
    "dropout": ({"dropout": 1.0}, "key 'dropout' must be at least 0 and below 1"),
    "schedule": ({"schedule": "cosine"}, "key 'schedule' must be 'plateau', 'onecycle' or 'constant'"),
}


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_optimizer_settings_name_the_key(case):
    overrides, expected = BAD[case]
    with pytest.raises(InputError) as caught:
        apply_overrides(load_config("tiny"), overrides, "test")
    assert str(caught.value).startswith(f"test: {expected}"), str(caught.value)


def test_unknown_config_lists_the_recipes():
    with pytest.raises(InputError, match=r"known configs: .*recipes/lenet-tutorial"):
        load_config("recipes/nosuch")


@pytest.mark.parametrize("recipe", RECIPES)
def test_describe_recipe(recipe, capsys):
    assert main(["describe", "--config", f"recipes/{recipe}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config {recipe}: 1 member(s)")
    params = recipe_model(load_config(f"recipes/{recipe}")).count_params()
    assert f"params: {params:,} (trainable {params:,}, non-trainable 0)" in out
    if recipe in PARAMS:
        assert f"total: {PARAMS[recipe]:,} params in 1 member(s) (1 x {recipe})" in out


@pytest.fixture(scope="module")
def recipe_data(mnist_idx, tmp_path_factory):
    return make_small_data(mnist_idx, tmp_path_factory.mktemp("recipes") / "data", 3000, 300)


@pytest.mark.parametrize("recipe", RECIPES)
def test_one_epoch_of_each_recipe_through_the_pipeline(recipe, recipe_data, tmp_path):
    paths = dataclasses.replace(paths_under(tmp_path), data_dir=recipe_data)
    result = run_cli("train", "--config", f"recipes/{recipe}", "--epochs", 1, *path_args(paths), check=True)
    submission = result.stdout.strip().splitlines()[-1]
    assert submission.endswith(".csv")
    (run_dir,) = [p for p in paths.models_dir.iterdir() if p.is_dir()]
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["name"], saved["architectures"], saved["optimizer"]) == (
        recipe, [recipe], load_config(f"recipes/{recipe}").optimizer)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (member,) = metrics["members"]
    assert member["architecture"] == recipe and member["epochs_run"] == 1
    assert member["holdout_accuracy"] > 0.2, member  # one epoch on 3,000 rows (SGD: ~0.25-0.6): above chance
    (saved_model,) = run_dir.glob("members/*/model.keras")
    optimizer = load_model(saved_model, for_training=True).optimizer
    assert type(getattr(optimizer, "inner_optimizer", optimizer)) is OPTIMIZERS[recipe]  # loss scaling wraps it


def test_architecture_names_cover_the_recipes():
    assert set(RECIPES) <= set(config.ARCHITECTURE_NAMES)
