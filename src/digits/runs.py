"""The run folder (models/<run>/): every file name in it, its members, and finding a run or the newest submission."""

import json
import re
from pathlib import Path

from .config import TrainConfig, apply_overrides
from .errors import InputError

CONFIG_FILE = "config.json"  # written last when a run starts: its presence makes a folder a run folder
MANIFEST_FILE = "manifest.json"
HOLDOUT_FILE = "holdout.npz"  # the split (src/digits/split.py), with the labels and pixels of the rows it scores
SAMPLES_FILE = "train_samples.npz"
PSEUDO_FILE = "pseudo.npz"  # with pseudo_label: the test images the second round learns from, and their labels
LOCK_FILE = "train.lock"
METRICS_FILE = "metrics.json"
OOF_FILE = "oof.npz"  # the members' out-of-fold (or shared-holdout) probabilities, averaged per row
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
MEMBERS_DIR = "members"
# in each member's folder
STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
HOLDOUT_PROBS_FILE = "holdout_probs.npy"  # on the rows the member held out
TEST_PROBS_FILE = "test_probs.npy"
DONE_FILE = "done.json"  # written last when a member finishes
TENSORBOARD_DIR = "tensorboard"
# what `digits submit` sent to Kaggle from the run and the scores that came back (in a run or blend folder; a file
# of no run is recorded in models/ itself)
KAGGLE_SUBMISSIONS_FILE = "kaggle_submissions.json"
# models/blends/<blend-id>/: metrics.json and ensemble_*_probs.npy of an average of several runs' members
# (no config.json, so never taken for a run)
BLENDS_DIR = "blends"


def member_dir(run_dir, index: int) -> Path:
    """The folder of member `index`: members/m00, members/m01, ..."""
    return Path(run_dir) / MEMBERS_DIR / f"m{index:02d}"


def finished_members(run_dir) -> list[int]:
    """Indices of the members whose training finished (their probabilities are saved)."""
    return sorted(int(p.parent.name[1:]) for p in Path(run_dir).glob(f"{MEMBERS_DIR}/m*/{DONE_FILE}"))


def member_info(run_dir, index: int) -> dict | None:
    """What member `index` recorded when it finished (its done.json), or None if it has not finished."""
    path = member_dir(run_dir, index) / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def unfinished_members(run_dir, planned: int) -> list[int]:
    """Indices below `planned` whose member has not finished."""
    finished = set(finished_members(run_dir))
    return [i for i in range(planned) if i not in finished]


def is_complete(run_dir, planned: int) -> bool:
    """Every one of the `planned` members finished, and the ensemble's metrics are written."""
    return metrics_file(run_dir).is_file() and not unfinished_members(run_dir, planned)


def metrics_file(run_dir, tag: str = "") -> Path:
    """metrics.json, or metrics<tag>.json for an ensemble of some of the members (`tag` such as '-m0_2')."""
    return Path(run_dir) / f"metrics{tag}.json"


def test_probs_file(run_dir, tag: str = "") -> Path:
    """The ensemble's test probabilities, tagged like `metrics_file`."""
    return Path(run_dir) / f"ensemble_test_probs{tag}.npy"


def oof_file(run_dir, tag: str = "") -> Path:
    """oof.npz, tagged like `metrics_file`."""
    return Path(run_dir) / OOF_FILE.replace(".npz", f"{tag}.npz")


def cv(metrics: dict) -> dict | None:
    """The validation score in a run's or blend's metrics (src/digits/split.py's `score`); from metrics written before
    CV existed, their shared holdout's; None if there is none."""
    if "cv" in metrics:
        return metrics["cv"]
    ensemble = metrics.get("ensemble", {})
    if "holdout_accuracy" in ensemble:
        return {"kind": "holdout", "accuracy": ensemble["holdout_accuracy"], "rows": ensemble.get("holdout_rows")}
    return None


def read_config(run_dir) -> dict:
    """The config a run folder was started with, as saved; InputError if it is not a run folder.

    A run saved before folds existed has no `holdout` field: it had one shared holdout, and reads as it was written.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    return {"holdout": "shared", **json.loads(path.read_text())}


def saved_config(run_dir) -> TrainConfig:
    """The config a run folder was started with (after any budget plan)."""
    return apply_overrides(TrainConfig(), read_config(run_dir), str(Path(run_dir) / CONFIG_FILE))


def resolve(run, models_dir) -> Path:
    """A run given by path, by id under `models_dir`, or 'latest' (the run started last)."""
    models_dir = Path(models_dir)
    if run == "latest":
        found = all_runs(models_dir)
        if not found:
            raise InputError(f"{models_dir}: no runs yet; train one with `make train`")
        return found[0]
    for candidate in (Path(run), models_dir / run):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise InputError(f"run {run!r}: no such run folder (looked in {models_dir})")


def all_runs(models_dir) -> list[Path]:
    """Every run folder under `models_dir`, the one started (or grown) last first."""
    found = sorted(Path(models_dir).glob(f"*/{CONFIG_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.parent for p in found]


def blend_dir(models_dir, blend_id: str) -> Path:
    """The folder of a blend of several runs: models/blends/<blend-id>."""
    return Path(models_dir) / BLENDS_DIR / blend_id


def latest_submission(submissions_dir) -> Path:
    """The newest CSV in the submissions folder."""
    files = sorted(Path(submissions_dir).glob("*.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise InputError(f"{submissions_dir}: no submissions yet; run `make train` first")
    return files[-1]


def split_subset(stem: str) -> tuple[str, str]:
    """A submission's name as (run id, tag): `make ensemble MEMBERS=...` writes <run>-m0_2.csv, tag '-m0_2'."""
    found = re.fullmatch(r"(.+)(-m\d+(?:_\d+)*)", stem)
    return (found[1], found[2]) if found else (stem, "")


def submission_owner(submission_file, models_dir) -> Path:
    """The folder that records `submission_file`'s Kaggle scores: its run's or blend's, else `models_dir`."""
    models_dir = Path(models_dir)
    stem = Path(submission_file).stem
    for candidate in (models_dir / stem, models_dir / split_subset(stem)[0], blend_dir(models_dir, stem)):
        if candidate.is_dir():
            return candidate
    return models_dir


def kaggle_submissions(folder) -> list[dict]:
    """The Kaggle submissions recorded in `folder`, oldest first."""
    path = Path(folder) / KAGGLE_SUBMISSIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def save_kaggle_submissions(folder, records: list[dict]) -> Path:
    """Write `folder`'s record of Kaggle submissions atomically; return its path."""
    from . import atomic  # it imports numpy, which `digits` does not need to start

    path = Path(folder) / KAGGLE_SUBMISSIONS_FILE
    atomic.write_text(path, json.dumps(records, indent=2) + "\n")
    return path


def kaggle_submission_folders(models_dir) -> list[Path]:
    """Every folder under `models_dir` (itself included) that records Kaggle submissions."""
    models_dir = Path(models_dir)
    found = [*models_dir.glob(KAGGLE_SUBMISSIONS_FILE), *models_dir.glob(f"*/{KAGGLE_SUBMISSIONS_FILE}"),
             *models_dir.glob(f"{BLENDS_DIR}/*/{KAGGLE_SUBMISSIONS_FILE}")]
    return [path.parent for path in found]


def public_score(run_dir) -> float | None:
    """The public score of the run's newest scored Kaggle submission, if any."""
    scored = [r for r in kaggle_submissions(run_dir) if r.get("public_score") is not None]
    return scored[-1]["public_score"] if scored else None
