"""`digits runs`: one row per run folder, newest first: members, nets, CV and test accuracy, minutes, state and
submission."""

import json
from pathlib import Path

from . import describe, runs, submission, train
from .config import Paths
from .errors import InputError

COLUMNS = [("run", "RUN"), ("config", "CONFIG"), ("members", "MEMBERS"), ("nets", "NETS"),
           ("cv", "CV"), ("test_accuracy", "TEST"), ("train_minutes", "MINUTES"),
           ("state", "STATE"), ("submission", "SUBMISSION"), ("public_score", "PUBLIC")]


def rows(paths: Paths) -> list[dict]:
    """Every run under `paths.models_dir`, newest first; test accuracy only where data/answers.csv exists."""
    answers = paths.answers_csv if paths.answers_csv.is_file() else None
    return [_row(run_dir, answers) for run_dir in runs.all_runs(paths.models_dir)]


def _row(run_dir: Path, answers: Path | None) -> dict:
    cfg = runs.saved_config(run_dir)
    done = [i for i in runs.finished_members(run_dir) if i < cfg.members]
    metrics_path = runs.metrics_file(run_dir)
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    path = metrics.get("submission")
    path = path if path and Path(path).is_file() else None
    return {
        "run": run_dir.name,
        "config": cfg.name,
        "members_done": len(done),
        "members_planned": cfg.members,
        "nets": sorted(set(describe.member_architectures(cfg))),
        "cv": runs.cv(metrics),  # out-of-fold (a member's estimate), or a shared holdout's (the ensemble's)
        "test_accuracy": _test_accuracy(path, answers),
        "train_minutes": round(sum(_train_seconds(run_dir, i) for i in range(cfg.members)) / 60, 2),
        "state": state(run_dir, cfg.members),
        "submission": path,
        "public_score": runs.public_score(run_dir),  # the newest score Kaggle gave a submission of the run
    }


def state(run_dir: Path, planned: int) -> str:
    """training (its lock is held), finished, interrupted (a command stopped before its end) or incomplete
    (it ended with members left untrained, or without its ensemble: rerun it)."""
    if train.lock_holder(run_dir):
        return "training"
    if runs.is_complete(run_dir, planned):
        return "finished"
    started = [i for i in runs.unfinished_members(run_dir, planned)
               if (runs.member_dir(run_dir, i) / runs.STATE_FILE).is_file()]
    if started or not _manifest_finished(run_dir):
        return "interrupted"
    return "incomplete"


def _manifest_finished(run_dir: Path) -> bool:
    path = Path(run_dir) / runs.MANIFEST_FILE
    return path.is_file() and bool(json.loads(path.read_text()).get("finished"))


def _train_seconds(run_dir: Path, index: int) -> float:
    """Seconds member `index` trained: from its done.json, else its resume state, else 0."""
    info = runs.member_info(run_dir, index)
    if info:
        return float(info["train_seconds"])
    path = runs.member_dir(run_dir, index) / runs.STATE_FILE
    return float(json.loads(path.read_text()).get("train_seconds", 0.0)) if path.is_file() else 0.0


def _test_accuracy(path: str | None, answers: Path | None) -> float | None:
    if not (path and answers):
        return None
    try:
        return submission.accuracy(path, answers)
    except InputError:  # answers.csv of other test data (rows that do not match)
        return None


def table(found: list[dict]) -> str:
    """The rows as an aligned text table."""
    if not found:
        return "no runs yet; train one with `make train`"
    cells = [[title for _, title in COLUMNS]] + [[_cell(key, row) for key, _ in COLUMNS] for row in found]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def _cell(key: str, row: dict) -> str:
    if key == "members":
        return f"{row['members_done']}/{row['members_planned']}"
    value = row[key]
    if value is None or key == "cv" and value["accuracy"] is None:
        return "-"
    if key == "cv":  # a shared holdout's score is the ensemble's, not a CV: say so
        return f"{value['accuracy']:.4f}" + (" (holdout)" if value["kind"] == "holdout" else "")
    if key == "nets":
        return ",".join(value)
    if key.endswith("accuracy"):
        return f"{value:.4f}"
    return str(value)


def command(paths: Paths, as_json: bool = False):
    found = rows(paths)
    print(json.dumps(found, indent=2) if as_json else table(found))
