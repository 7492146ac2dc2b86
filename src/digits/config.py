"""Project paths and the training config: defaults here, overrides from configs/*.toml and the CLI."""

import dataclasses
import json
import math
import tomllib
from pathlib import Path

from .errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = PROJECT_ROOT / "configs"
COMPETITION = "digit-recognizer"
# The names in digits.models.ARCHITECTURES (a test keeps them equal). Kept here so that checking a config
# does not import Keras: bad input must fail in a second, before TensorFlow loads.
ARCHITECTURE_NAMES = ("strong", "lite", "lenet", "lenet-tutorial", "ann-baseline", "cnn-baseline", "kaggle-rmsprop",
                      "tf-tutorial", "simple-cnn")


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a run reads its data and writes models and submissions."""

    data_dir: Path = PROJECT_ROOT / "data"
    models_dir: Path = PROJECT_ROOT / "models"
    submissions_dir: Path = PROJECT_ROOT / "submissions"
    cache_root: Path | None = None  # decoded-CSV cache; default data_dir/cache (Kaggle's input is read-only)

    @property
    def train_csv(self) -> Path:
        return self.data_dir / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.data_dir / "test.csv"

    @property
    def answers_csv(self) -> Path:
        return self.data_dir / "answers.csv"

    @property
    def cache_dir(self) -> Path:
        return self.cache_root or self.data_dir / "cache"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; a config file or `--set key=value` overrides any field.

    The defaults are the `quick` recipe (configs/quick.toml adds only its time budget).
    """

    name: str = "quick"
    seed: int = 42
    members: int = 2
    # cycled over members; ["auto"]: a budget chooses the net (budget.candidates), and without one it is "strong"
    architectures: tuple[str, ...] = ("auto",)
    epochs: int = 12
    epoch_rows: int = 0  # training images per epoch (one holdout check, one plateau step each); 0 = one pass
    batch_size: int = 128
    learning_rate: float = 3e-3
    holdout_fraction: float = 0.08
    # "folds": the labelled rows fall into int(1 / holdout_fraction) stratified folds and member i holds out fold
    # i mod K (members see different data; their out-of-fold predictions give a CV over every row). "shared": one
    # holdout for every member, as runs made before folds existed (src/digits/split.py)
    holdout: str = "folds"
    max_train_rows: int = 0  # 0 = all rows; smoke tests use a few thousand
    allow_missing_digits: bool = False  # train even if train.csv lacks some digits (refused by default)
    # wall-clock budget for the whole run, e.g. "10m", "90s", "1h"; "" = off. With a budget the trainer measures
    # this machine's speed and plans members and epochs to fit (members/epochs above are then ignored)
    budget: str = ""
    # pseudo-labels: the second half of the members also learns from the test images the first half's ensemble labels
    # with at least this probability (src/digits/pseudo.py)
    pseudo_label: bool = False
    pseudo_threshold: float = 0.99
    # augmentation (never flips: a flipped 2 is not a 2)
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    shift: float = 0.1
    # learning-rate schedule: "plateau" (ReduceLROnPlateau), "onecycle" or "constant"
    schedule: str = "plateau"
    plateau_monitor: str = "val_accuracy"
    plateau_factor: float = 0.5
    plateau_patience: int = 1  # epochs without a better holdout accuracy before the rate halves
    plateau_min_delta: float = 1e-4  # a holdout gain smaller than this counts as no gain
    plateau_cooldown: int = 0
    warmup_epochs: int = 1  # linear warm-up to learning_rate before ReduceLROnPlateau takes over; 0 = none
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 0  # 0 = off
    # optimizer and regularisation (tutorial recipes)
    optimizer: str = "adam"  # "adam", "sgd" or "rmsprop" (Keras defaults apart from the rate and momentum)
    momentum: float = 0.0  # sgd and rmsprop only
    l2: float = 0.0  # L2 weight decay on every Dense layer's kernel; 0 = off
    dropout: float = 0.0  # a Dropout layer of this rate before the first Dense layer; 0 = none
    # speed
    mixed_precision: bool = True  # bfloat16 compute where the CPU/GPU supports it
    jit_compile: bool = False  # XLA: measured slower on CPU, try it on a GPU
    steps_per_execution: int = 20  # training steps per call into TensorFlow; more cuts Python overhead
    deterministic: bool = True  # op determinism: same seed, same bytes (on a GPU it can cost speed)
    predict_batch_size: int = 1024
    tta: bool = False  # average predictions over small shifts at test time
    tensorboard: bool = True  # TensorBoard event files in each member's folder

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        """Stable text of every field, for run ids and manifests."""
        return json.dumps(self.to_dict(), sort_keys=True)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value, source: str, parse_text: bool):
    """Check `value` against the field's type; with `parse_text` (`--set` values) strings are parsed first."""
    kind = type(getattr(TrainConfig(), key))
    if parse_text and isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
        elif kind is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            try:
                return kind(text)
            except ValueError:
                pass
        raise InputError(f"{source}: key '{key}' expects {kind.__name__}, got {value!r}")
    if kind is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        expected = "list of strings" if kind is tuple else kind.__name__
        raise InputError(f"{source}: key '{key}' expects {expected}, got {value!r}")
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict, source: str, parse_text: bool = False) -> TrainConfig:
    """Return `cfg` with `overrides` applied; an unknown key or a wrong type names the key.

    Values must have the field's type (an int is taken for a float), except that with `parse_text`
    (`--set KEY=VALUE`) a string is parsed as the field's type.
    """
    changes = {}
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise InputError(f"{source}: unknown key '{key}' (known keys: {', '.join(_FIELDS)})")
        changes[key] = _coerce(key, value, source, parse_text)
    return validate(dataclasses.replace(cfg, **changes), source)


def validate(cfg: TrainConfig, source: str) -> TrainConfig:
    """Reject values that would fail later in training."""
    checks = [
        (cfg.members >= 1, "members", "at least 1"),
        (cfg.epochs >= 1, "epochs", "at least 1"),
        (cfg.epoch_rows >= 0, "epoch_rows", "0 (one pass over the train rows) or more"),
        (cfg.batch_size >= 1, "batch_size", "at least 1"),
        (cfg.steps_per_execution >= 1, "steps_per_execution", "at least 1"),
        (0.0 < cfg.holdout_fraction < 0.5, "holdout_fraction", "between 0 and 0.5"),
        (cfg.holdout in ("folds", "shared"), "holdout", "'folds' or 'shared'"),
        (cfg.holdout != "folds" or cfg.holdout_fraction <= 1 / 3, "holdout_fraction",
         "at most 1/3 with holdout 'folds' (at least 3 folds), or use holdout 'shared'"),
        (cfg.learning_rate > 0, "learning_rate", "positive"),
        (cfg.schedule in ("plateau", "onecycle", "constant"), "schedule", "'plateau', 'onecycle' or 'constant'"),
        (0 < cfg.plateau_factor < 1, "plateau_factor", "between 0 and 1"),
        (cfg.max_train_rows >= 0, "max_train_rows", "0 (all) or more"),
        (bool(cfg.architectures), "architectures", "at least one name"),
        (budget_seconds(cfg.budget) is not None, "budget", "a duration such as '10m', '90s', '1.5h' or ''"),
        (cfg.plateau_cooldown >= 0, "plateau_cooldown", "0 or more"),
        (cfg.warmup_epochs >= 0, "warmup_epochs", "0 or more"),
        (cfg.optimizer in ("adam", "sgd", "rmsprop"), "optimizer", "'adam', 'sgd' or 'rmsprop'"),
        (0.0 <= cfg.momentum < 1.0, "momentum", "at least 0 and below 1"),
        (cfg.optimizer != "adam" or cfg.momentum == 0.0, "momentum", "0 with optimizer 'adam'"),
        (cfg.l2 >= 0.0, "l2", "0 (off) or more"),
        (0.0 < cfg.pseudo_threshold <= 1.0, "pseudo_threshold", "above 0 and at most 1"),
        (not cfg.pseudo_label or cfg.members >= 2, "members", "at least 2 with pseudo_label (one per round)"),
        (0.0 <= cfg.dropout < 1.0, "dropout", "at least 0 and below 1"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise InputError(f"{source}: key '{key}' must be {expected}, got {getattr(cfg, key)!r}")
    for arch in () if cfg.architectures == ("auto",) else cfg.architectures:
        if arch not in ARCHITECTURE_NAMES:
            raise InputError(f"{source}: key 'architectures' has unknown {arch!r} "
                             f"(known: {', '.join(ARCHITECTURE_NAMES)})")
    return cfg


def epoch_steps(cfg: TrainConfig, rows: int) -> int:
    """Batches per epoch: enough for `epoch_rows` images (every row if 0), rounded up to whole calls.

    Keras runs whole `steps_per_execution` calls and its iterator runs on across epochs, so an epoch must be a
    multiple of a call.
    """
    calls = math.ceil(math.ceil((cfg.epoch_rows or rows) / cfg.batch_size) / cfg.steps_per_execution)
    return calls * cfg.steps_per_execution


def epoch_images(cfg: TrainConfig, rows: int) -> int:
    """Training images in one epoch over `rows` train rows."""
    return epoch_steps(cfg, rows) * cfg.batch_size


def budget_seconds(text: str) -> float | None:
    """'10m' -> 600.0, '90s' or '90' -> 90.0, '1.5h' -> 5400.0, '' -> 0.0 (no budget); None if not a duration."""
    text = text.strip().lower()
    if not text:
        return 0.0
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1])
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        return None
    return value if value > 0 else None


def describe_schedule(cfg: TrainConfig) -> str:
    """The learning-rate schedule in words, for logs and manifests."""
    if cfg.schedule == "plateau":
        return (f"ReduceLROnPlateau(monitor={cfg.plateau_monitor}, factor={cfg.plateau_factor}, "
                f"patience={cfg.plateau_patience}, min_delta={cfg.plateau_min_delta:g}, "
                f"cooldown={cfg.plateau_cooldown}, min_lr={cfg.min_learning_rate:g}) "
                f"from {cfg.learning_rate:g}" + (f", {cfg.warmup_epochs}-epoch warm-up" if cfg.warmup_epochs else ""))
    return f"{cfg.schedule} at {cfg.learning_rate:g}"


def config_path(name_or_path, relative_to: Path | None = None) -> Path:
    """A config given by name (`quick`) lives in configs/; anything ending .toml is a path.

    A relative path is taken from `relative_to` (the folder of the file that `extends` it), else the current one.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = CONFIGS_DIR / f"{name_or_path}.toml"
    elif relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        known = ", ".join(sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix()
                                 for p in CONFIGS_DIR.glob("**/*.toml")))
        raise InputError(f"config '{name_or_path}': no file {path} (known configs: {known})")
    return path


# Config name -> TOML text, filled by the Kaggle notebook's first cell (kernel.py), which has no configs/ folder.
EMBEDDED_CONFIGS: dict[str, str] = {}


def load_config(name_or_path="quick", overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the config file (and any file it `extends`), then `overrides` (`--set` strings or values)."""
    cfg = _load_file(name_or_path, None, ())
    return apply_overrides(cfg, overrides or {}, "command line", parse_text=True)


def _load_file(name_or_path, relative_to: Path | None, seen: tuple) -> TrainConfig:
    """One config file (embedded or on disk) over the one it `extends`; `seen` catches a loop of extends."""
    if str(name_or_path) in EMBEDDED_CONFIGS:
        name = str(name_or_path)
        source, stem, text, folder = f"{name} (embedded)", Path(name).stem, EMBEDDED_CONFIGS[name], None
        key = source
    else:
        path = config_path(name_or_path, relative_to)
        source, stem, folder = str(path), path.stem, path.parent
        key = str(path.resolve())
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{source}: expected UTF-8 TOML text: {err}") from None
    if key in seen:
        raise InputError(f"{source}: key 'extends' makes a loop: {' -> '.join((*seen, key))}")
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{source}: not valid TOML: {err}") from None
    parent = values.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise InputError(f"{source}: key 'extends' expects str (a config name or .toml path), got {parent!r}")
    cfg = _load_file(parent, folder, (*seen, key)) if parent else TrainConfig()
    values.setdefault("name", stem)
    return apply_overrides(cfg, values, source)


def parse_set_options(items) -> dict:
    """Turn `["epochs=3", "members=2"]` into a dict for `apply_overrides`."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")


def running_on_kaggle(environ=None) -> bool:
    """True inside a Kaggle kernel (Kaggle sets KAGGLE_KERNEL_RUN_TYPE; tests set DIGITS_KAGGLE_INPUT)."""
    import os

    environ = os.environ if environ is None else environ
    return bool(environ.get("KAGGLE_KERNEL_RUN_TYPE") or environ.get("DIGITS_KAGGLE_INPUT"))


def kaggle_paths(input_root=None, working_root=None, environ=None) -> Paths:
    """Paths inside a Kaggle kernel: competition files found under the input root, outputs in working."""
    import os
    import tempfile

    environ = os.environ if environ is None else environ
    input_root = Path(input_root or environ.get("DIGITS_KAGGLE_INPUT") or KAGGLE_INPUT)
    working_root = Path(working_root or environ.get("DIGITS_KAGGLE_WORKING") or KAGGLE_WORKING)
    return Paths(data_dir=find_competition_dir(input_root), models_dir=working_root / "runs",
                 submissions_dir=working_root / "submissions", cache_root=Path(tempfile.gettempdir()) / "digits-cache")


def find_competition_dir(input_root: Path) -> Path:
    """The folder under `input_root` holding the competition's train.csv (Kaggle has used several layouts)."""
    for candidate in (input_root / COMPETITION, input_root / "competitions" / COMPETITION):
        if (candidate / "train.csv").is_file():
            return candidate
    found = sorted(input_root.glob("**/train.csv"), key=lambda p: len(p.parts))
    if not found:
        raise InputError(f"{input_root}: no train.csv found under it; add the '{COMPETITION}' competition data")
    return found[0].parent
