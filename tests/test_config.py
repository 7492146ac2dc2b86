"""Config files and `--set`: an unknown key or a wrong type is an error naming the key; `extends`; shipped configs."""

import ast
import dataclasses

import pytest

from conftest import path_args, paths_under, run_cli
from digits import config
from digits.config import CONFIGS_DIR, TrainConfig, load_config, parse_set_options
from digits.errors import InputError

# TOML body -> the message's start after "<file>: "
BAD_FILES = {
    "unknown key": ('epohcs = 3\n', "unknown key 'epohcs' (known keys: name, seed, members"),
    "string for int": ('epochs = "3"\n', "key 'epochs' expects int, got '3'"),
    "float for int": ("members = 2.0\n", "key 'members' expects int, got 2.0"),
    "int for bool": ("mixed_precision = 1\n", "key 'mixed_precision' expects bool, got 1"),
    "string for float": ('learning_rate = "fast"\n', "key 'learning_rate' expects float, got 'fast'"),
    "string for list": ('architectures = "lenet"\n', "key 'architectures' expects list of strings, got 'lenet'"),
    "number in list": ('architectures = ["lenet", 3]\n', "key 'architectures' expects list of strings"),
    "table": ('[training]\nepochs = 3\n', "unknown key 'training'"),
    "unknown architecture": ('architectures = ["resnet"]\n', "key 'architectures' has unknown 'resnet'"),
    "value out of range": ("holdout_fraction = 0.9\n", "key 'holdout_fraction' must be between 0 and 0.5, got 0.9"),
    "extends not a string": ("extends = 3\n", "key 'extends' expects str"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=BAD_FILES)
def test_bad_config_file_names_the_key(case, tmp_path):
    body, expected = BAD_FILES[case]
    path = tmp_path / "mine.toml"
    path.write_text('extends = "tiny"\n' + body if "extends" not in body else body)
    with pytest.raises(InputError) as caught:
        load_config(str(path))
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


# --set items -> the message's start after "command line: "
BAD_SETS = {
    "unknown key": (["epohcs=3"], "unknown key 'epohcs'"),
    "not an int": (["epochs=three"], "key 'epochs' expects int, got 'three'"),
    "fraction for int": (["members=2.5"], "key 'members' expects int, got '2.5'"),
    "not a bool": (["tta=maybe"], "key 'tta' expects bool, got 'maybe'"),
    "not a float": (["zoom=much"], "key 'zoom' expects float, got 'much'"),
    "below minimum": (["members=0"], "key 'members' must be at least 1, got 0"),
    "negative epoch_rows": (["epoch_rows=-5"], "key 'epoch_rows' must be 0 (one pass over the train rows) or more"),
    "pseudo threshold": (["pseudo_threshold=1.5"], "key 'pseudo_threshold' must be above 0 and at most 1, got 1.5"),
    "pseudo one member": (["pseudo_label=true", "members=1"],
                          "key 'members' must be at least 2 with pseudo_label (one per round), got 1"),
}


@pytest.mark.parametrize("case", BAD_SETS, ids=BAD_SETS)
def test_bad_set_option_names_the_key(case):
    items, expected = BAD_SETS[case]
    with pytest.raises(InputError) as caught:
        load_config("tiny", parse_set_options(items))
    assert str(caught.value).startswith(f"command line: {expected}"), str(caught.value)


def test_set_without_equals_sign():
    with pytest.raises(InputError, match=r"--set 'epochs': expected KEY=VALUE"):
        parse_set_options(["epochs"])


def test_set_parses_text_as_the_field_type():
    cfg = load_config("tiny", parse_set_options(
        ["epochs=3", "learning_rate=1e-3", "mixed_precision=false", "tta=yes", "architectures=lenet, lite",
         "name=mine", "rotation_degrees=5"]))
    assert (cfg.epochs, cfg.learning_rate, cfg.mixed_precision, cfg.tta) == (3, 1e-3, False, True)
    assert cfg.architectures == ("lenet", "lite") and cfg.name == "mine" and cfg.rotation_degrees == 5.0
    assert isinstance(cfg.rotation_degrees, float)
    assert load_config("tiny", {"epochs": 4}).epochs == 4  # --epochs N arrives as an int


def test_cli_rejects_bad_config_before_reading_data(tmp_path):
    """A bad --set or config file stops `digits train` with exit 2 naming the key, and writes nothing."""
    paths = paths_under(tmp_path)  # no data there: the config is checked first
    bad_file = tmp_path / "typo.toml"
    bad_file.write_text('extends = "tiny"\nbatch_sise = 32\n')
    for args, expected in [
        (["--config", "tiny", "--set", "epohcs=3"], "error: command line: unknown key 'epohcs'"),
        (["--config", "tiny", "--set", "epochs=x"], "error: command line: key 'epochs' expects int, got 'x'"),
        (["--config", bad_file], f"error: {bad_file}: unknown key 'batch_sise'"),
    ]:
        result = run_cli("train", *args, *path_args(paths), timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["typo.toml"]


def test_extends_layers_files(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('extends = "tiny"\nepochs = 4\nbatch_size = 32\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\nepochs = 6\n')  # a relative path: beside the file, not the cwd
    cfg = load_config(str(child))
    tiny = load_config("tiny")
    assert cfg.name == "child"
    assert (cfg.epochs, cfg.batch_size) == (6, 32)
    assert (cfg.members, cfg.architectures, cfg.mixed_precision) == (tiny.members, tiny.architectures,
                                                                     tiny.mixed_precision)
    assert load_config(str(child), {"epochs": "9"}).epochs == 9  # the command line comes last


def test_extends_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(InputError, match=r"key 'extends' makes a loop"):
        load_config(str(tmp_path / "a.toml"))


def test_missing_and_unparsable_configs(tmp_path):
    with pytest.raises(InputError, match=r"config 'nosuch': no file .*nosuch\.toml \(known configs: .*tiny"):
        load_config("nosuch")
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    with pytest.raises(InputError, match=r"broken\.toml: not valid TOML"):
        load_config(str(broken))


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path.stem)
    assert cfg.name == path.stem
    assert isinstance(cfg, TrainConfig)
    config.validate(cfg, path.name)  # raises InputError naming the key if a shipped value is out of range
    assert load_config(str(path)) == cfg


def test_every_field_can_be_set_from_text():
    """Each field's default, written as `--set` text, parses back to itself."""
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        value = getattr(defaults, field.name)
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        assert getattr(load_config("quick", {field.name: text}), field.name) == value, field.name


def test_architecture_names_match_the_model_factory():
    """config keeps the names so checking a config never imports Keras; read models.py's dict without importing it."""
    tree = ast.parse((config.PROJECT_ROOT / "src" / "digits" / "models.py").read_text())
    (keys,) = [node.value.keys for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(getattr(t, "id", None) == "ARCHITECTURES" for t in node.targets)]
    assert tuple(key.value for key in keys) == config.ARCHITECTURE_NAMES
