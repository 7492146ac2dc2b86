"""Same data, config and seed give the same submission byte for byte; another seed gives other probabilities."""

from pathlib import Path

import numpy as np

from conftest import path_args, paths_under, run_cli


def _train(small_data, root, *extra):
    paths = paths_under(root)
    result = run_cli("train", "--config", "tiny", "--set", "members=1", *extra, *path_args(paths),
                     "--data-dir", small_data, check=True)
    submission = result.stdout.strip().splitlines()[-1]
    run_dir = paths.models_dir / Path(submission).stem
    return open(submission, "rb").read(), np.load(run_dir / "members" / "m00" / "test_probs.npy")


def test_same_seed_same_bytes_other_seed_differs(small_data, tmp_path):
    first_csv, first_probs = _train(small_data, tmp_path / "a")
    second_csv, second_probs = _train(small_data, tmp_path / "b")
    assert first_csv == second_csv
    assert first_probs.tobytes() == second_probs.tobytes()

    _, other_probs = _train(small_data, tmp_path / "c", "--seed", "7")
    assert not np.array_equal(first_probs, other_probs)
