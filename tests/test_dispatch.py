"""Members are independent: trained on a local Dask cluster they equal the ones trained in-process."""

import numpy as np
from dask.distributed import LocalCluster

from conftest import path_args, paths_under, run_cli


def _member_probs(root):
    return [np.load(p) for p in sorted(root.glob("models/*/members/*/test_probs.npy"))]


def test_dask_cluster_gives_the_in_process_result(small_data, tmp_path):
    local, remote = paths_under(tmp_path / "local"), paths_under(tmp_path / "dask")
    run_cli("train", "--config", "tiny", *path_args(local), "--data-dir", small_data, check=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = run_cli("train", "--config", "tiny", "--cluster", cluster.scheduler_address,
                         *path_args(remote), "--data-dir", small_data, check=True)
    assert "member 0: epoch" not in result.stdout  # trained in the workers, whose logs stay there
    expected, got = _member_probs(tmp_path / "local"), _member_probs(tmp_path / "dask")
    assert len(expected) == len(got) == 2
    for mine, theirs in zip(expected, got, strict=False):
        np.testing.assert_array_equal(mine, theirs)
    local_csv = (local.submissions_dir / result.stdout.strip().splitlines()[-1].split("/")[-1]).read_bytes()
    assert open(result.stdout.strip().splitlines()[-1], "rb").read() == local_csv
