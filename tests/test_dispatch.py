"""Members are independent: they train on a local Dask cluster as they do in-process."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_dask_cluster_trains_every_member_to_the_in_process_bytes(small_data, tmp_path):
    """Both members train in the workers of a local 2-worker cluster, to the bytes they get in-process: each
    member's initial weights, shuffle, warps and dropout come from (seed, member, epoch, step) alone, so where
    it trains does not matter: the same intra-op thread count and instruction set give the same bytes.

    It used to fail about one run in three with a core busy: Keras drew initializer seeds from Python's global
    `random`, which a Dask worker's other threads also draw on. Kernels are now seeded per layer (models.make_model).
    """
    local, remote = paths_under(tmp_path / "local"), paths_under(tmp_path / "dask")
    run_cli("train", "--config", "tiny", "--jobs", "1", *path_args(local), "--data-dir", small_data, check=True)
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


NVIDIA_SMI_L = ("GPU 0: Tesla T4 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)\n"
                "GPU 1: Tesla T4 (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)\n")


def fake_nvidia_smi(folder, listing=NVIDIA_SMI_L):
    """A PATH whose `nvidia-smi` answers `-L` with `listing`, as on Kaggle's "GPU T4 x2"."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{listing}END\n")
    script.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_gpu_count_reads_nvidia_smi_and_honours_cuda_visible_devices(tmp_path, monkeypatch):
    from digits import dispatch

    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert dispatch.gpu_count() == 2
    assert [g["name"] for g in dispatch.visible_gpus()] == ["Tesla T4", "Tesla T4"]
    assert dispatch.visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == [
        {"index": 1, "name": "Tesla T4", "device": "1"}]
    assert dispatch.gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-bbbb2222"}) == 1  # a shortened UUID
    assert dispatch.gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert dispatch.gpu_count({"CUDA_VISIBLE_DEVICES": "-1"}) == 0
    assert dispatch.gpu_count({"CUDA_VISIBLE_DEVICES": "0,7,1"}) == 1  # CUDA stops at the first unknown entry
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert dispatch.gpu_count() == 0  # no driver, no GPU
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin2", "No devices were found\n"))
    assert dispatch.gpu_count() == 0


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_n_gpus_give_n_workers_each_on_its_own_gpu(gpus, tmp_path, monkeypatch):
    """N GPUs -> N worker slots, each pinned to a distinct GPU by CUDA_VISIBLE_DEVICES before TensorFlow loads."""
    from digits import dispatch

    listing = "".join(f"GPU {i}: Tesla T4 (UUID: GPU-{i:04d}abcd-0000)\n" for i in range(gpus))
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", listing))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = dispatch.placements(dispatch.gpu_count(), dispatch.visible_gpus(), cores=4)
    devices = [slot["env"]["CUDA_VISIBLE_DEVICES"] for slot in slots]
    assert devices == [f"GPU-{i:04d}abcd-0000" for i in range(gpus)] and len(set(devices)) == gpus
    assert [slot["gpu"]["index"] for slot in slots] == list(range(gpus))
    assert all(slot["threads"] == max(1, 4 // gpus) for slot in slots)
    assert dispatch.placements(2, [], cores=4) == [{"slot": i, "threads": 2, "gpu": None, "env": {}} for i in (0, 1)]


def _claim_in_a_process(slots_dir, slots, queue):
    from digits import dispatch

    dispatch.claim_slot(slots_dir, slots)
    queue.put((dispatch._CLAIM["placement"]["slot"], os.environ.get("CUDA_VISIBLE_DEVICES"),
               "tensorflow" in sys.modules))
    time.sleep(3)  # hold the slot while the others claim theirs


def test_each_worker_process_claims_a_distinct_slot(tmp_path):
    """Workers started together lock distinct slot files and set their slot's GPU before TensorFlow is imported."""
    import multiprocessing

    from digits import dispatch

    gpus = [{"index": i, "name": "Tesla T4", "device": f"GPU-{i}"} for i in range(3)]
    slots = dispatch.placements(3, gpus, cores=3)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_claim_in_a_process, args=(str(tmp_path / "slots"), slots, queue))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    claims = sorted(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert claims == [(0, "GPU-0", False), (1, "GPU-1", False), (2, "GPU-2", False)]


def test_workers_end_when_their_trainer_is_killed(small_data, tmp_path):
    """Members at once train in worker processes; SIGKILL of the trainer ends them too, so they neither train on
    unowned nor keep their slots from a rerun's workers (which would give up after SLOT_WAIT_S), and the rerun
    resumes the run. On a machine without GPUs each member's done.json and the log say it trained on the CPU."""
    paths = paths_under(tmp_path)
    command = [sys.executable, "-m", "digits", "train", "--config", "tiny", "--jobs", "2", "--set", "epochs=3",
               *map(str, path_args(paths)), "--data-dir", str(small_data)]
    trainer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (len(workers := _slot_pids(paths)) < 2
                                       or not list(paths.models_dir.glob("*/members/*/state.json"))):
        time.sleep(0.1)
    assert len(workers) == 2, "the workers did not start"
    trainer.kill()
    trainer.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its killed trainer"
    result = run_cli(*command[3:], check=True)
    assert "resuming after epoch" in result.stdout
    assert pd.read_csv(result.stdout.strip().splitlines()[-1])["ImageId"].tolist() == list(range(1, 501))
    done = [json.loads(p.read_text()) for p in sorted(paths.models_dir.glob("*/members/*/done.json"))]
    assert [d["gpu"] for d in done] == [None, None]
    assert sorted(p.name for p in paths.models_dir.glob("*/worker-slots/*")) == ["slot-0.lock", "slot-1.lock"]
    assert "member 1/2: worker" in result.stdout and "trains it on the CPU" in result.stdout


def _slot_pids(paths) -> list[int]:
    return [int(text) for lock in paths.models_dir.glob("*/worker-slots/slot-*.lock")
            if (text := lock.read_text().strip()).isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) counts as ended
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
