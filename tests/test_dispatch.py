"""Members are independent: they train on a local Dask cluster as they do in-process."""

import json

import numpy as np
import pandas as pd
from dask.distributed import LocalCluster

from conftest import path_args, paths_under, run_cli


def _member_probs(root):
    return [np.load(p) for p in sorted(root.glob("models/*/members/*/test_probs.npy"))]


def _train_on_cluster(small_data, paths):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        return run_cli("train", "--config", "tiny", "--cluster", cluster.scheduler_address,
                       *path_args(paths), "--data-dir", small_data, check=True)


def test_dask_cluster_trains_every_member_to_the_in_process_bytes(small_data, tmp_path):
    """Each member's shuffle, warps and dropout come from (seed, member, epoch, step) alone, so where it trains
    does not matter: the same intra-op thread count and instruction set give the same bytes."""
    local, remote = paths_under(tmp_path / "local"), paths_under(tmp_path / "dask")
    run_cli("train", "--config", "tiny", *path_args(local), "--data-dir", small_data, check=True)
    result = _train_on_cluster(small_data, remote)
    assert "member 1/2 epoch" not in result.stdout  # trained in the workers, whose logs stay there
    submission = result.stdout.strip().splitlines()[-1]
    assert pd.read_csv(submission)["ImageId"].tolist() == list(range(1, 501))
    metrics = json.loads(next(remote.models_dir.glob("*/metrics.json")).read_text())
    assert [m["index"] for m in metrics["members"]] == [0, 1]
    expected, got = _member_probs(tmp_path / "local"), _member_probs(tmp_path / "dask")
    assert len(expected) == len(got) == 2
    for mine, theirs in zip(expected, got, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    local_csv = (local.submissions_dir / submission.split("/")[-1]).read_bytes()
    assert open(submission, "rb").read() == local_csv
