"""Members are independent: they train on a local Dask cluster as they do in-process."""

import json

import numpy as np
import pandas as pd
import pytest
from dask.distributed import LocalCluster

from conftest import path_args, paths_under, run_cli


def _member_probs(root):
    return [np.load(p) for p in sorted(root.glob("models/*/members/*/test_probs.npy"))]


def _train_on_cluster(small_data, paths):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        return run_cli("train", "--config", "tiny", "--cluster", cluster.scheduler_address,
                       *path_args(paths), "--data-dir", small_data, check=True)


def test_dask_cluster_trains_every_member(small_data, tmp_path):
    """Both members of a run train in the workers of a local 2-worker cluster, and the run ends in a submission."""
    remote = paths_under(tmp_path / "dask")
    result = _train_on_cluster(small_data, remote)
    assert "member 1/2 epoch" not in result.stdout  # trained in the workers, whose logs stay there
    submission = result.stdout.strip().splitlines()[-1]
    assert pd.read_csv(submission)["ImageId"].tolist() == list(range(1, 501))
    metrics = json.loads(next(remote.models_dir.glob("*/metrics.json")).read_text())
    assert [m["index"] for m in metrics["members"]] == [0, 1]
    assert len(_member_probs(tmp_path / "dask")) == 2


@pytest.mark.slow  # flaky under load: see the docstring
def test_dask_cluster_trains_every_member_to_the_in_process_bytes(small_data, tmp_path):
    """Each member's shuffle, warps and dropout come from (seed, member, epoch, step) alone, so where it trains
    does not matter: the same intra-op thread count and instruction set give the same bytes.

    Known gap: with another process busy on one of the two cores, the workers' bytes differed from the in-process
    run's in 6 of 19 runs on a 2-core AMD EPYC (Zen 5), and once in a quiet full suite, while in-process runs under
    the same load stayed identical. TF_NUM_INTRAOP_THREADS=1 did not cure it (3 of 5 differed); with
    TF_NUM_INTEROP_THREADS=1 as well, 5 of 5 matched: too few to call it the cause.
    """
    local, remote = paths_under(tmp_path / "local"), paths_under(tmp_path / "dask")
    run_cli("train", "--config", "tiny", *path_args(local), "--data-dir", small_data, check=True)
    submission = _train_on_cluster(small_data, remote).stdout.strip().splitlines()[-1]
    expected, got = _member_probs(tmp_path / "local"), _member_probs(tmp_path / "dask")
    assert len(expected) == len(got) == 2
    for mine, theirs in zip(expected, got, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    local_csv = (local.submissions_dir / submission.split("/")[-1]).read_bytes()
    assert open(submission, "rb").read() == local_csv
