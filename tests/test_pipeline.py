"""The whole path through the public CLI on real MNIST: download, train, ensemble, submission, evaluate."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import path_args, paths_under, run_cli


def test_download_train_ensemble_evaluate(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    run_cli("download", "--source", "mnist", "--mnist-dir", mnist_idx, "--train-rows", 2000, "--test-rows", 500,
            *path_args(paths), check=True)
    for name in ("train.csv", "test.csv", "answers.csv", "sample_submission.csv"):
        assert (paths.data_dir / name).is_file(), name

    result = run_cli("train", "--config", "tiny", *path_args(paths), check=True)
    submission_path = result.stdout.strip().splitlines()[-1]
    assert submission_path.endswith(".csv")
    submission = pd.read_csv(submission_path)
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == list(range(1, 501))
    assert submission["Label"].between(0, 9).all()

    run_dir = paths.models_dir / Path(submission_path).stem
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["members"]) == 2
    fold = np.load(run_dir / "holdout.npz")["fold"]
    cv = metrics["cv"]  # each member holds out its own fold: 12 at 8%, of 166-167 rows
    assert (cv["kind"], cv["folds"], cv["labelled_rows"], cv["members"]) == ("out-of-fold", 12, 2000, [0, 1])
    assert cv["rows"] == np.sum(fold <= 1) and 0 < cv["standard_error"] < 0.02

    evaluated = run_cli("evaluate", submission_path, "--answers", paths.answers_csv, *path_args(paths), check=True)
    accuracy = float(evaluated.stdout.split()[-1])
    assert accuracy >= 0.8, evaluated.stdout

    # Ensembling is its own step: one member alone, re-averaged without retraining.
    single = run_cli("ensemble", run_dir, "--members", "1", *path_args(paths), check=True)
    single_path = single.stdout.strip().splitlines()[-1]
    assert single_path.endswith("-m1.csv")
    member_probs = np.load(run_dir / "members" / "m01" / "test_probs.npy")
    assert pd.read_csv(single_path)["Label"].tolist() == member_probs.argmax(1).tolist()
    single_cv = json.loads((run_dir / "metrics-m1.json").read_text())["cv"]  # over member 1's fold only
    assert single_cv["rows"] == np.sum(fold == 1) and single_cv["members"] == [1]


def test_rerunning_a_finished_run_does_not_retrain(trained_run):
    paths, run_dir = trained_run
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("members/*/*")}
    result = run_cli("train", "--config", "tiny", "--epochs", "2", *path_args(paths), check=True)
    assert "already finished" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("members/*/*")} == before
