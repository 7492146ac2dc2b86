"""A full disk mid-run (a file-size limit stands in for it): a clear error naming the file, nothing half-written,
and the same command resumes once there is room."""

import resource
import subprocess
import sys

import pandas as pd

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli

ARGS = ["train", "--config", "tiny", "--set", "epochs=2"]
LIMIT = 3_000_000  # bytes per file: the data cache and the holdout split fit, a member's model file does not


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_full_disk_mid_run_is_named_and_the_run_resumes(small_data, tmp_path):
    paths = paths_under(tmp_path)
    command = [sys.executable, "-m", "digits", *ARGS, *map(str, path_args(paths)), "--data-dir", str(small_data)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
                            preexec_fn=_limit_file_size)
    assert result.returncode == 1, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: could not write {paths.models_dir}/") and "File too large" in error, error
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.tmp*")), "a half-written file was left behind"
    assert not list(paths.models_dir.rglob("done.json")), "no member can have finished"

    result = run_cli(*ARGS, *path_args(paths), "--data-dir", small_data, check=True)
    submission = pd.read_csv(result.stdout.strip().splitlines()[-1])
    assert submission["ImageId"].tolist() == list(range(1, 501))
