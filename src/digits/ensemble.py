"""Average saved member probabilities into the ensemble, write the submission and the run's metrics."""

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import atomic, manifest, runs, submission
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
    """Ensemble `members` (default: all finished), write the submission and metrics; return the metrics."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.HOLDOUT_FILE).is_file():
        raise InputError(f"{run_dir}: not a run folder (no {runs.HOLDOUT_FILE})")
    available = runs.finished_members(run_dir)
    chosen = available if members is None else list(members)
    missing = sorted(set(chosen) - set(available))
    if missing or not chosen:
        raise InputError(f"{run_dir}: members {missing or chosen} not finished (finished: {available})")
    holdout_labels = np.load(run_dir / runs.HOLDOUT_FILE)["labels"]
    infos, holdout_probs, test_probs = zip(*(load_member(run_dir, i) for i in chosen), strict=False)
    ensemble_holdout, ensemble_test = average(list(holdout_probs)), average(list(test_probs))
    full = members is None or chosen == available
    tag = "" if full else "-m" + "_".join(str(i) for i in chosen)
    atomic.save_npy(runs.ensemble_probs_file(run_dir, "holdout", tag), ensemble_holdout)
    atomic.save_npy(runs.ensemble_probs_file(run_dir, "test", tag), ensemble_test)
    submission_path = submission.write(paths.submissions_dir / f"{run_dir.name}{tag}.csv", ensemble_test.argmax(1))
    metrics = _metrics(run_dir, list(infos), holdout_labels, list(holdout_probs), ensemble_holdout)
    metrics["submission"] = str(submission_path)
    metrics["test_rows"] = int(len(ensemble_test))
    atomic.write_text(runs.metrics_file(run_dir, tag), json.dumps(metrics, indent=2))
    log.info(f"ensemble of {len(chosen)} member(s): holdout accuracy {metrics['ensemble']['holdout_accuracy']:.4f}")
    return metrics


def _metrics(run_dir, infos, holdout_labels, holdout_probs, ensemble_holdout) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    predicted = ensemble_holdout.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(holdout_labels, predicted, labels=range(10),
                                                                     zero_division=0)
    curve = [
        float(np.mean(average(holdout_probs[: k + 1]).argmax(1) == holdout_labels)) for k in range(len(holdout_probs))
    ]
    info = manifest.read(run_dir)
    return {
        "run_id": run_dir.name,
        "config": info.get("config"),
        "members": infos,
        "ensemble": {
            "members": [i["index"] for i in infos],
            "holdout_accuracy": float(np.mean(predicted == holdout_labels)),
            "holdout_rows": int(len(holdout_labels)),
            "accuracy_by_size": curve,
            "per_class": [
                {"label": d, "precision": float(precision[d]), "recall": float(recall[d]), "f1": float(f1[d]),
                 "support": int(support[d])}
                for d in range(10)
            ],
        },
        "timings": {
            "started": info.get("started"),
            "finished": info.get("finished"),
            "train_seconds": round(sum(i["train_seconds"] for i in infos), 2),
            "predict_seconds": round(sum(i["predict_seconds"] for i in infos), 2),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
