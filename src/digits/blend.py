"""Blend runs: average the members of several runs trained on the same data; scored where they share a split."""

import json
import logging
import time
from pathlib import Path

from . import atomic, data, ensemble, manifest, runs, split, submission
from .config import Paths
from .errors import InputError

log = logging.getLogger(__name__)


def blend(run_dirs: list[Path], paths: Paths, members: list[list[int]] | None = None) -> dict:
    """Average `members` of each run (default: every finished one); write the submission and metrics, return them.

    The blend has a CV only where its runs split the labelled rows the same way (same data, seed and holdout).
    """
    run_dirs = [Path(r) for r in run_dirs]
    check_blendable(run_dirs)
    chosen = members or [runs.finished_members(r) for r in run_dirs]
    splits = [split.load(r) for r in run_dirs]
    test_probs, scored, alone = [], [], []
    for run_dir, indices, the_split in zip(run_dirs, chosen, splits, strict=True):
        if not indices:
            raise InputError(f"{run_dir}: no finished members to blend")
        loaded = [ensemble.load_member(run_dir, i) for i in indices]
        test_probs += [test for _, _, test in loaded]
        own = ensemble.scored_members(run_dir, the_split, indices, [held for _, held, _ in loaded])
        scored += own
        alone.append({"run": run_dir.name, "members": list(indices),
                      "cv": split.score(the_split, split.out_of_fold(the_split, own), [i for i, _ in own])})
    blend_test = ensemble.average(test_probs)
    key = json.dumps([[r["run"], r["members"]] for r in alone])
    blend_id = f"blend-{data.sha256_bytes(key.encode())[:8]}"
    folder = runs.blend_dir(paths.models_dir, blend_id)
    no_cv = _why_no_cv(run_dirs, splits)
    cv = None
    if not no_cv:
        oof = split.out_of_fold(splits[0], scored)
        split.save_oof(runs.oof_file(folder), splits[0], oof)
        cv = split.score(splits[0], oof, list(range(len(scored))))
    atomic.save_npy(runs.test_probs_file(folder), blend_test)
    submission_path = submission.write(paths.submissions_dir / f"{blend_id}.csv", blend_test.argmax(1))
    metrics = {
        "blend_id": blend_id,
        "runs": alone,
        "members": len(test_probs),
        "cv": cv,
        **({"no_cv": no_cv} if no_cv else {}),
        "test_rows": int(len(blend_test)),
        "submission": str(submission_path),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_text(runs.metrics_file(folder), json.dumps(metrics, indent=2))
    each = ", ".join(f"{r['run']} {r['cv']['accuracy']:.4f}" for r in alone if r["cv"]["rows"])
    log.info(f"{blend_id}: {len(test_probs)} members of {len(alone)} runs, {split.describe(cv) if cv else no_cv}"
             f" (alone: {each})")
    return metrics


def check_blendable(run_dirs: list[Path]):
    """Refuse runs that were not trained on the same data, naming the difference."""
    first = run_dirs[0]
    names = [r.name for r in run_dirs]
    if len(set(names)) < len(names):
        raise InputError(f"runs {', '.join(names)}: a run is given twice")
    hashes = manifest.read(first).get("inputs_sha256", {})
    for other in run_dirs[1:]:
        pair = f"cannot blend {first.name} and {other.name}"
        other_hashes = manifest.read(other).get("inputs_sha256", {})
        for name in sorted(set(hashes) | set(other_hashes)):
            a, b = hashes.get(name, "none"), other_hashes.get(name, "none")
            if a != b:
                raise InputError(f"{pair}: they were trained on different data ({name}: SHA-256 {a[:12]}... in "
                                 f"{first.name}, {b[:12]}... in {other.name})")


def _why_no_cv(run_dirs: list[Path], splits: list) -> str:
    """'' if every run split the labelled rows as the first did; else why the blend has no CV."""
    for other, other_split in zip(run_dirs[1:], splits[1:], strict=True):
        if not splits[0].same_as(other_split):
            return (f"no CV: {run_dirs[0].name} and {other.name} split the labelled rows differently"
                    f"{_split_settings(run_dirs[0], other)}, so no row was held out by all their members (the test "
                    "probabilities are averaged all the same)")
    return ""


def _split_settings(first: Path, other: Path) -> str:
    """The settings that draw the holdout split and differ between two runs, as text ('' if none)."""
    a, b = runs.read_config(first), runs.read_config(other)
    differ = [f"{key} {a.get(key)!r} vs {b.get(key)!r}" for key in ("seed", "holdout", "holdout_fraction",
                                                                    "max_train_rows")
              if a.get(key) != b.get(key)]
    return f" ({', '.join(differ)})" if differ else ""
