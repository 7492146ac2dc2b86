"""One trainer per run: a second command on a run being trained stops at once naming the process that holds it.

The lock is an OS file lock (flock) on models/<run>/train.lock: the kernel drops it when its holder dies, even by
kill -9, so a lock left behind never blocks anyone. Only the parent process takes it, so `--jobs` keeps working.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROJECT_ROOT, make_small_data, path_args, paths_under, run_cli
from digits import runs, train
from digits.errors import DigitsError

TINY = ["train", "--config", "tiny"]


def _start(paths, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "digits", *TINY, *map(str, path_args(paths)), *extra]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(condition, process, what: str, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"never saw {what}; the first command said:\n{process.communicate()[0][-3000:]}")


def _lock_held_by(paths, pid: int):
    """The run folder whose lock file names `pid`, once the process has written it."""
    for lock in paths.models_dir.glob(f"*/{runs.LOCK_FILE}"):
        if lock.read_text().strip() == str(pid):
            return lock.parent
    return None


def test_a_second_command_stops_at_once_naming_the_holder(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 600, 100)
    first = _start(paths, "--jobs", "2")  # the parent holds the lock; its joblib workers train the members
    try:
        run_dir = _wait_for(lambda: _lock_held_by(paths, first.pid), first, "the first command take the lock")
        started = time.perf_counter()
        second = run_cli(*TINY, *path_args(paths), "--jobs", "2", timeout=120)
        seconds = time.perf_counter() - started
        assert first.poll() is None, "the first command ended before the second one ran; use more rows"
    finally:
        output = first.communicate(timeout=600)[0]
    assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stderr.strip() == (f"error: {run_dir}: this run is being trained by process {first.pid} "
                                     f"(it holds {run_dir / runs.LOCK_FILE}); wait for it to finish or stop it, "
                                     "then run this command again")
    assert seconds < 30, f"the second command took {seconds:.1f} s to give up"
    assert "member" not in second.stdout, second.stdout
    assert first.returncode == 0, output[-3000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.html").is_file()

    again = run_cli(*TINY, *path_args(paths), check=True)  # the lock went with the first command
    assert "already finished" in again.stdout


def test_a_lock_left_by_a_killed_trainer_does_not_block(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 600, 100)
    first = _start(paths)
    run_dir = _wait_for(lambda: _lock_held_by(paths, first.pid), first, "the first command take the lock")
    _wait_for(lambda: (run_dir / runs.CONFIG_FILE).is_file(), first, "the run folder prepared")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert (run_dir / runs.LOCK_FILE).read_text().strip() == str(first.pid)  # the file stays, the lock does not
    assert not (run_dir / "metrics.json").is_file()

    result = run_cli(*TINY, *path_args(paths), check=True)
    assert (run_dir / "metrics.json").is_file()
    assert "being trained by process" not in result.stdout + result.stderr


def test_the_lock_is_exclusive_and_released(tmp_path):
    with train.run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / runs.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(DigitsError, match=rf"being trained by process {os.getpid()} "):
            with train.run_lock(tmp_path / "run"):
                pass
    with train.run_lock(tmp_path / "run"):  # released when the block ended
        pass
