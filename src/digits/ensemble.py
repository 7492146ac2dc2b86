"""Average saved member probabilities into the ensemble, write the submission, the out-of-fold scores and metrics."""

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from . import atomic, manifest, pseudo, runs, split, submission
from .config import Paths
from .errors import InputError

log = logging.getLogger(__name__)


def average(probabilities: list[np.ndarray]) -> np.ndarray:
    """Mean of the members' softmax outputs (the ensemble's probabilities)."""
    if not probabilities:
        raise ValueError("no member probabilities to average")
    return np.mean(np.stack(probabilities), axis=0, dtype=np.float64).astype(np.float32)


def load_member(run_dir: Path, index: int) -> tuple[dict, np.ndarray, np.ndarray]:
    folder = runs.member_dir(run_dir, index)
    if not (folder / runs.DONE_FILE).is_file():
        raise InputError(f"{run_dir}: member {index} has not finished training")
    info = json.loads((folder / runs.DONE_FILE).read_text())
    return info, np.load(folder / runs.HOLDOUT_PROBS_FILE), np.load(folder / runs.TEST_PROBS_FILE)


def finish(run_dir: Path, paths: Paths, members: list[int] | None = None) -> dict:
    """Ensemble `members` (default: all finished), write the submission, the OOF probabilities (oof.npz) and metrics;
    return the metrics."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.HOLDOUT_FILE).is_file():
        raise InputError(f"{run_dir}: not a run folder (no {runs.HOLDOUT_FILE})")
    available = runs.finished_members(run_dir)
    chosen = available if members is None else list(members)
    missing = sorted(set(chosen) - set(available))
    if missing or not chosen:
        raise InputError(f"{run_dir}: members {missing or chosen} not finished (finished: {available})")
    the_split = split.load(run_dir)
    infos, held_probs, test_probs = zip(*(load_member(run_dir, i) for i in chosen), strict=False)
    ensemble_test = average(list(test_probs))
    scored = scored_members(run_dir, the_split, chosen, held_probs)
    oof = split.out_of_fold(the_split, scored)
    full = members is None or chosen == available
    tag = "" if full else "-m" + "_".join(str(i) for i in chosen)
    split.save_oof(runs.oof_file(run_dir, tag), the_split, oof)
    atomic.save_npy(runs.test_probs_file(run_dir, tag), ensemble_test)
    submission_path = submission.write(paths.submissions_dir / f"{run_dir.name}{tag}.csv", ensemble_test.argmax(1))
    metrics = _metrics(run_dir, list(infos), the_split, oof, [i for i, _ in scored], list(held_probs))
    metrics["submission"] = str(submission_path)
    metrics["test_rows"] = int(len(ensemble_test))
    atomic.write_text(runs.metrics_file(run_dir, tag), json.dumps(metrics, indent=2))
    log.info(f"ensemble of {len(chosen)} member(s): {split.describe(metrics['cv'])}")
    return metrics


def scored_members(run_dir: Path, the_split, chosen: list[int], held_probs) -> list[tuple[int, np.ndarray]]:
    """(index, held-out probabilities) of the `chosen` members that count in the run's CV: all, but with folds not a
    second pseudo-label round (it learned from labels made by members that trained on its fold)."""
    first = pseudo.first_round(run_dir, runs.saved_config(run_dir)) if the_split.folds else math.inf
    return [(i, probs) for i, probs in zip(chosen, held_probs, strict=True) if i < first]


def rebuild_oof(run_dir: Path, members: list[int]) -> Path:
    """oof.npz again, from `members`' saved held-out probabilities: for a run that finished before the file existed."""
    the_split = split.load(run_dir)
    held = [load_member(run_dir, i)[1] for i in members]
    target = runs.oof_file(run_dir)
    split.save_oof(target, the_split, split.out_of_fold(the_split, scored_members(run_dir, the_split, members, held)))
    return target


def _metrics(run_dir, infos, the_split, oof, scored, held_probs) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    labels = the_split.labels[oof["position"]]
    precision, recall, f1, support = precision_recall_fscore_support(labels, oof["probs"].argmax(1),
                                                                     labels=range(10), zero_division=0)
    ensemble = {"members": [i["index"] for i in infos]}
    if not the_split.folds:  # one holdout for all: the ensemble's accuracy as members are averaged in
        ensemble["accuracy_by_size"] = [float(np.mean(average(held_probs[: k + 1]).argmax(1) == labels))
                                        for k in range(len(held_probs))]
    ensemble["per_class"] = [{"label": d, "precision": float(precision[d]), "recall": float(recall[d]),
                              "f1": float(f1[d]), "support": int(support[d])} for d in range(10)]
    info = manifest.read(run_dir)
    return {
        "run_id": run_dir.name,
        "config": info.get("config"),
        "members": infos,
        "cv": split.score(the_split, oof, scored),
        "ensemble": ensemble,
        "timings": {
            "started": info.get("started"),
            "finished": info.get("finished"),
            "train_seconds": round(sum(i["train_seconds"] for i in infos), 2),
            "predict_seconds": round(sum(i["predict_seconds"] for i in infos), 2),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
