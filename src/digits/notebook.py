"""The Kaggle notebook's steps (`digits kernel build`): each of its cells calls one, which shows what it did."""

import dataclasses
import functools
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from . import __version__, budget, data, kernel, logs, manifest, report, runs, split, train
from .config import EMBEDDED_CONFIGS, Paths, TrainConfig, describe_schedule, kaggle_paths, load_config
from .errors import DigitsError


class Stop(Exception):
    """A step's DigitsError: the notebook shows its message alone, without a traceback, and stops there."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines in place of a traceback
        return [f"error: {self}"]


def step(func):
    """Raise the package's errors as Stop, so that a failed cell shows one clear line of advice."""

    @functools.wraps(func)
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DigitsError as err:
            raise Stop(str(err)) from None

    return run


@dataclasses.dataclass(frozen=True)
class Session:
    """What the later cells need: the config, where the data and outputs are, members at once, the start time."""

    cfg: TrainConfig
    paths: Paths
    jobs: int | str
    started: float


def _display():
    """IPython's `display` inside a notebook kernel; None in a plain Python process (the tests run cells so too)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    return display if get_ipython() is not None else None


def show_png(png: bytes, name: str) -> None:
    """Show a PNG as the cell's image output (a line naming it in plain Python)."""
    display = _display()
    if display is None:
        print(f"[figure: {name}]")
        return
    from IPython.display import Image

    display(Image(data=png, format="png"))


def show_table(frame) -> None:
    """Show a pandas table as the cell's HTML output (as text in plain Python)."""
    display = _display()
    if display is None:
        print(frame.to_string())
    else:
        display(frame)


@step
def start(config_name: str, configs: dict[str, str], accelerator: str | None, started: float | None = None) -> Session:
    """The GPUs this session has (it stops here if it was built for a GPU and got none), the image, the config."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    jobs = kernel.start_on_kaggle(accelerator)
    EMBEDDED_CONFIGS.update(configs)
    print(f"digits {__version__} from {Path(__file__).with_name('__init__.py')}, config {config_name}", flush=True)
    kernel.log_image_versions()
    logs.to_stdout()  # the package's log lines go to this notebook's output from here on
    return Session(load_config(config_name), kaggle_paths(), jobs, started or time.time())


@step
def check_data(session: Session) -> train.Inputs:
    """Read and check train.csv and test.csv as `train` does; show their sizes and the images per digit."""
    cfg, paths = session.cfg, session.paths
    inputs = train.load_inputs(paths, cfg.max_train_rows)
    data.check_learnable(data.find_csv(paths.data_dir, "train.csv").name, inputs.labels, cfg.holdout_fraction,
                         cfg.allow_missing_digits, cfg.holdout == "folds")
    counts = np.bincount(inputs.labels, minlength=10)
    print(f"{paths.data_dir}: train.csv {len(inputs.labels):,} labelled images, test.csv {len(inputs.test_pixels):,} "
          "images, 28x28 pixels of 0-255: checked")
    print(f"images per digit: {counts.min():,} (digit {counts.argmin()}) to {counts.max():,} (digit {counts.argmax()})")
    show_png(_balance_png(counts), "images per digit")
    return inputs


def _balance_png(counts: np.ndarray) -> bytes:
    """A small bar chart of the training images per digit, as PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.bar_label(ax.bar(range(10), counts), fontsize=8, padding=2)
    ax.set(xticks=range(10), xlabel="digit", ylabel="images",
           title=f"train.csv: {int(counts.sum()):,} images, per digit")
    ax.margins(y=0.12)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


@step
def holdout_split(session: Session, inputs: train.Inputs) -> None:
    """What each member holds out: its own stratified fold (folds), or one holdout for all (shared), as `train`
    splits the rows."""
    import pandas as pd

    cfg, labels = session.cfg, inputs.labels
    if cfg.holdout == "folds":
        fold = data.split_folds(labels, cfg.holdout_fraction, cfg.seed)
        print(f"folds: {fold.max() + 1} stratified folds of {len(labels):,} images (seed {cfg.seed}); member i holds "
              f"out fold i mod {fold.max() + 1} and trains on the rest; the members' out-of-fold predictions give a CV")
        counts = {f"fold {k}": np.bincount(labels[fold == k], minlength=10) for k in range(fold.max() + 1)}
    else:
        train_index, holdout_index = data.split_holdout(labels, cfg.holdout_fraction, cfg.seed)
        print(f"holdout: {len(holdout_index):,} of {len(labels):,} images ({cfg.holdout_fraction:.0%}, stratified by "
              f"digit, seed {cfg.seed}); the members train on the other {len(train_index):,}")
        counts = {"train": np.bincount(labels[train_index], minlength=10),
                  "holdout": np.bincount(labels[holdout_index], minlength=10)}
    show_table(pd.DataFrame(counts).T.rename_axis("digit", axis=1))


@step
def show_config(session: Session) -> None:
    """The config's settings; with a budget, training plans net, members and epochs first."""
    cfg = session.cfg
    if cfg.budget:
        print(f"config {cfg.name}: a budget of {cfg.budget}: training starts by timing the nets on this machine, then "
              "plans the net, members and epochs that fit (they replace those below)")
    else:
        print(f"config {cfg.name}: {cfg.members} member(s) of {', '.join(cfg.architectures)}, {cfg.epochs} epochs, "
              f"batch {cfg.batch_size}, schedule {describe_schedule(cfg)}")
    print("\n".join(f"  {key} = {json.dumps(value)}" for key, value in cfg.to_dict().items()))


@step
def train_members(session: Session) -> Path:
    """Train every member and average them, as `digits train --kaggle` does; return the run folder."""
    metrics = train.train(session.cfg, session.paths, jobs=session.jobs, started=session.started)
    return session.paths.models_dir / metrics["run_id"]


@step
def show_plan(run_dir: Path) -> None:
    """What the budget planner timed, the plan it chose and the runners-up, as saved in the run's manifest."""
    plan = manifest.read(run_dir).get("budget_plan")
    print(budget.plan_table_text(plan) if plan else f"{run_dir.name}: no budget plan (the config has no budget)")


def _figures(run_dir: Path, *prefixes: str) -> list[Path]:
    """The run's report figures whose names start with one of `prefixes` (drawn by report.py; redrawn if missing)."""
    paths = report.outputs(run_dir)
    if not all(path.is_file() for path in paths):
        report.build(run_dir)
    return [path for path in paths if path.suffix == ".png" and path.name.startswith(prefixes)]


def _metrics(run_dir: Path) -> dict:
    return json.loads(runs.metrics_file(run_dir).read_text(encoding="utf-8"))


@step
def member_curves(run_dir: Path) -> None:
    """Each member's accuracy on what it held out and its time, then its loss, accuracy and learning rate per
    epoch."""
    import pandas as pd

    members = _metrics(run_dir)["members"]
    show_table(pd.DataFrame([{"member": m["index"], "net": m["architecture"], "epochs": m.get("epochs_run"),
                              "holdout accuracy": round(m["holdout_accuracy"], 4),
                              "seconds": m.get("train_seconds")} for m in members]).set_index("member"))
    for path in _figures(run_dir, "member_"):
        show_png(path.read_bytes(), path.name)


@step
def ensemble_figures(run_dir: Path) -> None:
    """The run's CV (out-of-fold, or its shared holdout), its confusion matrix, and with a shared holdout the
    ensemble's accuracy as members are averaged in."""
    metrics = _metrics(run_dir)
    print(f"ensemble of {len(metrics['ensemble']['members'])} member(s): {split.describe(metrics['cv'])}")
    for path in _figures(run_dir, "confusion_matrix", "accuracy_by_size"):
        show_png(path.read_bytes(), path.name)


@step
def worst_mistakes(run_dir: Path) -> None:
    """The out-of-fold (or holdout) images got wrong with the most confidence."""
    for path in _figures(run_dir, "worst_mistakes"):
        show_png(path.read_bytes(), path.name)


@step
def write_submission(run_dir: Path) -> None:
    """Copy the run's submission to /kaggle/working/submission.csv (what Kaggle's Submit takes) and show its head."""
    import pandas as pd

    target = kernel.publish_on_kaggle(_metrics(run_dir))
    frame = pd.read_csv(target)
    print(f"{target}: {len(frame):,} rows; labels per digit: {np.bincount(frame['Label'], minlength=10).tolist()}")
    show_table(frame.head())
