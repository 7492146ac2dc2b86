"""Blend runs: average the members of several runs trained on the same data and holdout split."""

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import atomic, data, ensemble, manifest, runs, submission
from .config import Paths
from .errors import InputError

log = logging.getLogger(__name__)


def blend(run_dirs: list[Path], paths: Paths, members: list[list[int]] | None = None) -> dict:
    """Average `members` of each run (default: every finished one); write the submission and metrics, return them."""
    run_dirs = [Path(r) for r in run_dirs]
    check_blendable(run_dirs)
    chosen = members or [runs.finished_members(r) for r in run_dirs]
    labels = np.load(run_dirs[0] / runs.HOLDOUT_FILE)["labels"]
    holdout_probs, test_probs, alone = [], [], []
    for run_dir, indices in zip(run_dirs, chosen, strict=True):
        if not indices:
            raise InputError(f"{run_dir}: no finished members to blend")
        loaded = [ensemble.load_member(run_dir, i) for i in indices]
        holdout_probs += [holdout for _, holdout, _ in loaded]
        test_probs += [test for _, _, test in loaded]
        alone_accuracy = _accuracy(ensemble.average([holdout for _, holdout, _ in loaded]), labels)
        alone.append({"run": run_dir.name, "members": list(indices), "holdout_accuracy": alone_accuracy})
    blend_holdout, blend_test = ensemble.average(holdout_probs), ensemble.average(test_probs)
    key = json.dumps([[r["run"], r["members"]] for r in alone])
    blend_id = f"blend-{data.sha256_bytes(key.encode())[:8]}"
    folder = runs.blend_dir(paths.models_dir, blend_id)
    atomic.save_npy(runs.ensemble_probs_file(folder, "holdout"), blend_holdout)
    atomic.save_npy(runs.ensemble_probs_file(folder, "test"), blend_test)
    submission_path = submission.write(paths.submissions_dir / f"{blend_id}.csv", blend_test.argmax(1))
    metrics = {
        "blend_id": blend_id,
        "runs": alone,
        "members": len(holdout_probs),
        "holdout_accuracy": _accuracy(blend_holdout, labels),
        "holdout_rows": int(len(labels)),
        "test_rows": int(len(blend_test)),
        "submission": str(submission_path),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_text(runs.metrics_file(folder), json.dumps(metrics, indent=2))
    each = ", ".join(f"{r['run']} {r['holdout_accuracy']:.4f}" for r in alone)
    log.info(f"{blend_id}: {len(holdout_probs)} members of {len(alone)} runs, holdout accuracy "
             f"{metrics['holdout_accuracy']:.4f} (alone: {each})")
    return metrics


def check_blendable(run_dirs: list[Path]):
    """Refuse runs that were not trained on the same data and holdout split, naming the difference."""
    first = run_dirs[0]
    names = [r.name for r in run_dirs]
    if len(set(names)) < len(names):
        raise InputError(f"runs {', '.join(names)}: a run is given twice")
    hashes = manifest.read(first).get("inputs_sha256", {})
    split = np.load(first / runs.HOLDOUT_FILE)
    for other in run_dirs[1:]:
        pair = f"cannot blend {first.name} and {other.name}"
        other_hashes = manifest.read(other).get("inputs_sha256", {})
        for name in sorted(set(hashes) | set(other_hashes)):
            a, b = hashes.get(name, "none"), other_hashes.get(name, "none")
            if a != b:
                raise InputError(f"{pair}: they were trained on different data ({name}: SHA-256 {a[:12]}... in "
                                 f"{first.name}, {b[:12]}... in {other.name})")
        other_split = np.load(other / runs.HOLDOUT_FILE)
        if not all(np.array_equal(split[k], other_split[k]) for k in ("train_index", "holdout_index")):
            raise InputError(f"{pair}: their holdout splits differ ({len(split['holdout_index'])} and "
                             f"{len(other_split['holdout_index'])} holdout rows{_split_settings(first, other)}); "
                             "a blend is scored on one shared holdout")


def _split_settings(first: Path, other: Path) -> str:
    """The settings that draw the holdout split and differ between two runs, as text ('' if none)."""
    a, b = runs.read_config(first), runs.read_config(other)
    differ = [f"{key} {a.get(key)!r} vs {b.get(key)!r}" for key in ("seed", "holdout_fraction", "max_train_rows")
              if a.get(key) != b.get(key)]
    return f"; {', '.join(differ)}" if differ else ""


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(1) == labels))
