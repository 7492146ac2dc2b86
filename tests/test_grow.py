"""Grow a finished run with more members: only the new ones train, and it ends with the bytes of a run trained
with that many members at once. Flags that cannot apply to a run are refused, saying why."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import path_args, paths_under, run_cli

ONE = ["train", "--config", "tiny", "--set", "members=1"]


def _train(paths, data, *args):
    result = run_cli(*args, *path_args(paths), "--data-dir", data, check=True)
    submission = Path(result.stdout.strip().splitlines()[-1])
    return result, paths.models_dir / submission.stem.removesuffix(".csv"), submission


def _files(folder: Path) -> dict:
    """Bytes and modification time of each file in `folder` but the lock (each command on the run takes it)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and p.name != "train.lock"}


@pytest.fixture(scope="module")
def grown(small_data, tmp_path_factory):
    """A tiny 1-member run grown to 2 members: (paths, run folder, the growth's output, m00's files before)."""
    paths = paths_under(tmp_path_factory.mktemp("grown"))
    _, run_dir, _ = _train(paths, small_data, *ONE)
    first = _files(run_dir / "members" / "m00")
    result, _, _ = _train(paths, small_data, "train", "--resume", run_dir.name, "--members", "2")
    return paths, run_dir, result, first


def test_a_grown_run_has_the_bytes_of_one_trained_at_once(grown, small_data, tmp_path):
    paths, run_dir, result, first = grown
    assert "growing from 1 to 2 members" in result.stdout, result.stdout
    assert "member 1/2 epoch" not in result.stdout  # the finished member was not retrained
    assert _files(run_dir / "members" / "m00") == first

    once = paths_under(tmp_path)
    _, once_dir, once_submission = _train(once, small_data, "train", "--config", "tiny", "--set", "members=2")
    for name in ("m00/holdout_probs.npy", "m00/test_probs.npy", "m01/holdout_probs.npy", "m01/test_probs.npy"):
        assert (run_dir / "members" / name).read_bytes() == (once_dir / "members" / name).read_bytes(), name
    assert (run_dir / "ensemble_test_probs.npy").read_bytes() == (once_dir / "ensemble_test_probs.npy").read_bytes()
    grown_oof, once_oof = np.load(run_dir / "oof.npz"), np.load(once_dir / "oof.npz")
    assert all(np.array_equal(grown_oof[key], once_oof[key]) for key in ("row", "label", "probs", "members"))
    assert (paths.submissions_dir / f"{run_dir.name}.csv").read_bytes() == once_submission.read_bytes()
    assert json.loads((run_dir / "config.json").read_text()) == json.loads((once_dir / "config.json").read_text())

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ensemble"]["members"] == [0, 1]
    assert metrics["cv"] == json.loads((once_dir / "metrics.json").read_text())["cv"]
    assert metrics["cv"]["members"] == [0, 1] and metrics["cv"]["folds"] == 12  # the grown member took fold 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["members"] == 2 and manifest["seeds"] == [42000, 42001]
    [growth] = manifest["growths"]
    assert growth["members_before"] == 1 and growth["members"] == 2
    assert growth["finished"] and growth["train_seconds"] > 0
    assert (run_dir / "report.html").stat().st_mtime_ns > first["done.json"][1]


def test_a_plain_rerun_of_a_grown_run_changes_nothing(grown, small_data):
    paths, run_dir, _, _ = grown
    before = _files(run_dir / "members")
    submission = paths.submissions_dir / f"{run_dir.name}.csv"
    csv_bytes = submission.read_bytes()
    for args in (ONE, ["train", "--resume", run_dir.name], ["train", "--resume", run_dir.name, "--members", "2"]):
        result = run_cli(*args, *path_args(paths), "--data-dir", small_data, check=True)
        assert "already finished" in result.stdout, result.stdout
    assert _files(run_dir / "members") == before
    assert submission.read_bytes() == csv_bytes
    assert len(json.loads((run_dir / "manifest.json").read_text())["growths"]) == 1


@pytest.mark.parametrize("args, expected", [
    (["--members", "1"], "--members 1 is fewer than the 2 the run has; a run only grows"),
    (["--members", "3", "--set", "architectures=strong"],
     "architectures strong would make member 0 a 'strong', but it is a 'lenet'"),
    (["--members", "3", "--epochs", "2"], "epochs 2 differs from the 1 its members were trained with"),
    (["--members", "3", "--seed", "7"], "seed 7 differs from the 42 its members were trained with"),
    (["--members", "3", "--budget", "5m"], "give --members or --budget, not both"),
    (["--budget", "soon"], "--budget 'soon': expected a duration"),
    (["--members", "3", "--set", "architectures=lenet,strong"],
     "architectures lenet,strong would make member 1 a 'strong', but it is a 'lenet'"),
    (["--config", "quick", "--members", "3"], "--config quick with --resume"),
])
def test_a_flag_that_cannot_apply_is_refused(grown, small_data, args, expected):
    paths, run_dir, _, _ = grown
    before = _files(run_dir)
    result = run_cli("train", "--resume", run_dir.name, *args, *path_args(paths), "--data-dir", small_data,
                     timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert expected in result.stderr, result.stderr
    assert _files(run_dir) == before
