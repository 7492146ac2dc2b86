"""Interruption for real: SIGKILL a training run mid-member, rerun, and lose at most one epoch."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli

ARGS = ["train", "--config", "tiny", "--set", "epochs=4", "--set", "batch_size=128"]


def test_kill_and_resume(small_data, tmp_path):
    paths = paths_under(tmp_path)
    command = [sys.executable, "-m", "digits", *ARGS, *map(str, path_args(paths)), "--data-dir", str(small_data)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 300
    second = None
    while time.time() < deadline and process.poll() is None:
        states = list(paths.models_dir.glob("*/members/m01/state.json"))
        if states and json.loads(states[0].read_text())["epochs_done"] >= 1:
            second = states[0].parent
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert second is not None, "the second member never finished an epoch before the run ended"
    epochs_before_kill = json.loads((second / "state.json").read_text())["epochs_done"]
    assert epochs_before_kill < 4, "the run finished before it could be interrupted"
    first = second.parent / "m00"
    first_files = {p.name: p.read_bytes() for p in first.iterdir()}
    assert "done.json" in first_files

    result = run_cli(*ARGS, *path_args(paths), "--data-dir", small_data, check=True)
    assert f"member 1: resuming after epoch {epochs_before_kill}" in result.stdout
    assert "member 0: epoch" not in result.stdout  # the finished member was not retrained
    assert {p.name: p.read_bytes() for p in first.iterdir()} == first_files
    history = json.loads((second / "state.json").read_text())["history"]
    assert len(history) == 4
    submission = pd.read_csv(result.stdout.strip().splitlines()[-1])
    assert submission["ImageId"].tolist() == list(range(1, 501))
    assert not list(paths.models_dir.rglob("*.tmp*")), "a temporary file was left behind"
