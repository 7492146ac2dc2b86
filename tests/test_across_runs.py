"""Across runs: blending runs trained on the same data (scored where they share a split, refusing other data), and
`digits runs` listing finished, interrupted, incomplete and training runs."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_small_data, path_args, paths_under, run_cli
from digits import runs, split, submission, train

ONE = ["train", "--config", "tiny", "--set", "members=1"]


def _train(paths, *args) -> Path:
    result = run_cli(*ONE, *args, *path_args(paths), check=True)
    return paths.models_dir / Path(result.stdout.strip().splitlines()[-1]).stem


@pytest.fixture(scope="module")
def two_runs(small_data, tmp_path_factory):
    """Two finished runs on the same data and seed (so the same folds): 1 epoch, and 2 epochs."""
    root = tmp_path_factory.mktemp("two")
    paths = paths_under(root)
    shutil.copytree(small_data, paths.data_dir)
    return paths, _train(paths), _train(paths, "--epochs", "2")


def _probs(run_dir: Path, split: str) -> list[np.ndarray]:
    return [np.load(runs.member_dir(run_dir, i) / f"{split}_probs.npy") for i in runs.finished_members(run_dir)]


def test_two_runs_blend_into_one_submission(two_runs):
    paths, first, second = two_runs
    result = run_cli("ensemble", first.name, second.name, *path_args(paths), check=True)
    blend_csv = Path(result.stdout.strip().splitlines()[-1])
    assert blend_csv.parent == paths.submissions_dir and blend_csv.stem.startswith("blend-")
    metrics = json.loads((paths.models_dir / "blends" / blend_csv.stem / "metrics.json").read_text())
    saved = np.load(first / "holdout.npz")
    labels = saved["labels"][saved["fold"] == 0]  # both runs' member 0 held out fold 0
    held = np.mean(np.stack(_probs(first, "holdout") + _probs(second, "holdout")), axis=0)
    test = np.mean(np.stack(_probs(first, "test") + _probs(second, "test")), axis=0)
    assert metrics["members"] == 2 and metrics["submission"] == str(blend_csv)
    assert metrics["cv"]["rows"] == len(labels) and metrics["cv"]["kind"] == "out-of-fold"
    assert metrics["cv"]["accuracy"] == pytest.approx(float(np.mean(held.argmax(1) == labels)))
    for alone, run_dir in zip(metrics["runs"], (first, second), strict=True):
        run_metrics = json.loads((run_dir / "metrics.json").read_text())
        assert alone["run"] == run_dir.name and alone["members"] == [0]
        assert alone["cv"] == run_metrics["cv"]
    assert pd.read_csv(blend_csv)["Label"].tolist() == test.argmax(1).tolist()
    assert submission.accuracy(blend_csv, paths.answers_csv) > 0.5

    again = run_cli("ensemble", first.name, second.name, "--members", "0/0", *path_args(paths), check=True)
    assert again.stdout.strip().splitlines()[-1] == str(blend_csv)  # the same members: the same blend id


def test_runs_on_other_data_are_refused_and_other_splits_give_no_cv(two_runs, mnist_idx, tmp_path):
    paths, first, _ = two_runs
    other = paths_under(tmp_path)
    make_small_data(mnist_idx, other.data_dir, 1200, 500)
    other_run = _train(other)
    result = run_cli("ensemble", first, other_run, *path_args(paths))
    assert result.returncode == 2, result.stderr
    assert (f"cannot blend {first.name} and {other_run.name}: they were trained on different data (train.csv: "
            "SHA-256") in result.stderr, result.stderr

    reseeded = _with_seed(first, paths, 7)
    result = run_cli("ensemble", first.name, reseeded.name, *path_args(paths), check=True)
    blend_csv = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((paths.models_dir / "blends" / blend_csv.stem / "metrics.json").read_text())
    assert metrics["cv"] is None and metrics["members"] == 2
    assert metrics["no_cv"] == (f"no CV: {first.name} and {reseeded.name} split the labelled rows differently (seed "
                                "42 vs 7), so no row was held out by all their members (the test probabilities are "
                                "averaged all the same)")
    assert metrics["no_cv"] in result.stdout
    assert not (paths.models_dir / "blends" / blend_csv.stem / "oof.npz").exists()


def _with_seed(run_dir: Path, paths, seed: int) -> Path:
    """A copy of `run_dir` with the config and folds a run of another `seed` has on the same data."""
    copy = _copy_run(run_dir, paths.models_dir, f"{run_dir.name}-seed{seed}")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "seed": seed}))
    inputs = train.load_inputs(paths)
    split.create(copy, runs.saved_config(copy), inputs.pixels, inputs.labels)
    return copy


def _copy_run(run_dir: Path, models_dir: Path, name: str) -> Path:
    copy = models_dir / name
    shutil.copytree(run_dir, copy)
    return copy


def test_runs_lists_finished_interrupted_incomplete_and_training_runs(two_runs, tmp_path):
    paths, first, second = two_runs
    listed = paths_under(tmp_path)
    shutil.copytree(paths.data_dir, listed.data_dir)
    finished = _copy_run(first, listed.models_dir, first.name)
    interrupted = _copy_run(second, listed.models_dir, "tiny-interrupted")
    (runs.member_dir(interrupted, 0) / "done.json").unlink()  # killed mid-member: its state, no done.json
    incomplete = _copy_run(first, listed.models_dir, "tiny-incomplete")
    config = json.loads((incomplete / "config.json").read_text())
    (incomplete / "config.json").write_text(json.dumps({**config, "members": 3}))  # a budget left 2 untrained
    training = _copy_run(second, listed.models_dir, "tiny-training")
    for age, run_dir in enumerate((training, incomplete, interrupted, finished)):
        os.utime(run_dir / "config.json", (1e9 - age * 1000, 1e9 - age * 1000))

    with train.run_lock(training):
        result = run_cli("runs", *path_args(listed), check=True)
        as_json = json.loads(run_cli("runs", "--json", *path_args(listed), check=True).stdout)
    assert [row["run"] for row in as_json] == [training.name, incomplete.name, interrupted.name, finished.name]
    rows = {row["run"]: row for row in as_json}
    assert {name: row["state"] for name, row in rows.items()} == {
        finished.name: "finished", interrupted.name: "interrupted", incomplete.name: "incomplete",
        training.name: "training"}
    first_metrics = json.loads((first / "metrics.json").read_text())
    row = rows[finished.name]
    assert row["config"] == "tiny" and row["nets"] == ["lenet"]
    assert (row["members_done"], row["members_planned"]) == (1, 1)
    assert (rows[incomplete.name]["members_done"], rows[incomplete.name]["members_planned"]) == (1, 3)
    assert (rows[interrupted.name]["members_done"], rows[interrupted.name]["members_planned"]) == (0, 1)
    assert row["cv"] == first_metrics["cv"]
    assert row["submission"] == first_metrics["submission"]
    assert row["test_accuracy"] == submission.accuracy(first_metrics["submission"], listed.answers_csv)
    assert row["train_minutes"] == round(first_metrics["timings"]["train_seconds"] / 60, 2)
    assert rows[interrupted.name]["train_minutes"] > 0  # from the member's resume state

    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["RUN", "CONFIG", "MEMBERS", "NETS", "CV", "TEST", "MINUTES", "STATE",
                                "SUBMISSION", "PUBLIC"]
    assert [line.split()[0] for line in lines[1:]] == [r["run"] for r in as_json]
    assert lines[4].split()[:8] == [finished.name, "tiny", "1/1", "lenet", f"{row['cv']['accuracy']:.4f}",
                                    f"{row['test_accuracy']:.4f}", str(row["train_minutes"]), "finished"]
    after = run_cli("runs", *path_args(listed), check=True).stdout.splitlines()
    assert after[1].split()[:1] + after[1].split()[7:8] == [training.name, "finished"]  # the lock went with its holder
