"""Interruption for real: SIGKILL a training run at several moments, rerun, and get the uninterrupted run's bytes."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli

EPOCHS = 3
ARGS = ["train", "--config", "tiny", "--set", f"epochs={EPOCHS}", "--set", "batch_size=128"]


def _start(paths, data, args=ARGS):
    command = [sys.executable, "-m", "digits", *args, *map(str, path_args(paths)), "--data-dir", str(data)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _epochs_done(paths, member: str) -> int:
    states = list(paths.models_dir.glob(f"*/members/{member}/state.json"))
    try:
        return json.loads(states[0].read_text())["epochs_done"] if states else 0
    except (OSError, ValueError):
        return 0  # caught between the write and the rename of another file: read again next time


def kill_when(paths, data, member: str, epochs: int, extra_delay: float, args=ARGS) -> bool:
    """Start the run, SIGKILL it once `member` has finished `epochs` epochs (plus a delay); False if it ended first."""
    process = _start(paths, data, args)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and _epochs_done(paths, member) < epochs:
        time.sleep(0.02)
    time.sleep(extra_delay)
    alive = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return alive


def member_bytes(paths) -> dict:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in paths.models_dir.glob("*/members/*/*_probs.npy")}


def test_killed_at_several_moments_resumes_to_the_same_bytes(small_data, tmp_path):
    reference = paths_under(tmp_path / "reference")
    result = run_cli(*ARGS, *path_args(reference), "--data-dir", small_data, check=True)
    reference_csv = open(result.stdout.strip().splitlines()[-1], "rb").read()

    paths = paths_under(tmp_path / "killed")
    kills = kill_when(paths, small_data, "m00", 1, 0.35) + kill_when(paths, small_data, "m01", 1, 0.15)
    first = next(paths.models_dir.glob("*/members/m00"))
    first_files = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    assert "done.json" in first_files
    kills += kill_when(paths, small_data, "m01", 2, 0.0)
    assert kills >= 2, "the run kept finishing before it could be interrupted"

    result = run_cli(*ARGS, *path_args(paths), "--data-dir", small_data, check=True)
    assert "member 2/2: resuming after epoch" in result.stdout
    assert "member 1/2 epoch" not in result.stdout  # the finished member was not retrained
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == first_files
    history = json.loads(next(paths.models_dir.glob("*/members/m01/state.json")).read_text())["history"]
    assert len(history) == EPOCHS
    assert member_bytes(paths) == member_bytes(reference)
    submission = result.stdout.strip().splitlines()[-1]
    assert open(submission, "rb").read() == reference_csv
    assert pd.read_csv(submission)["ImageId"].tolist() == list(range(1, 501))
    assert not list(paths.models_dir.rglob("*.tmp*")), "a temporary file was left behind"
    assert not list(paths.models_dir.rglob("backup-e*")), "a finished member kept its resume backup"
