"""GPU-only behaviour: mixed_float16 through the strong net, a GPU member read on a CPU, one member per GPU.

Every test here skips where no GPU is visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them all).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import path_args, paths_under, run_cli
from digits import dispatch

GPUS = dispatch.visible_gpus()
pytestmark = pytest.mark.skipif(not GPUS, reason="no GPU visible (nvidia-smi -L lists none, or no NVIDIA driver)")
SAME_MODEL_PAIR = len(GPUS) >= 2 and GPUS[0]["name"] == GPUS[1]["name"]


def _member_files(models_dir, name="test_probs.npy") -> list[bytes]:
    return [p.read_bytes() for p in sorted(models_dir.glob(f"*/members/*/{name}"))]


def test_strong_in_mixed_float16_gives_finite_losses(small_data):
    """A few steps of `strong` under mixed_float16 (loss scaling, FusedBatchNorm in float16) stay finite."""
    import dataclasses

    from digits.config import load_config
    from digits.data import read_inputs, to_images
    from digits.member import build_model, keras, make_dataset, setup_tensorflow, tf

    assert tf.config.list_physical_devices("GPU"), "nvidia-smi lists a GPU that TensorFlow does not see"
    cfg = dataclasses.replace(load_config("strong"), steps_per_execution=4)
    setup_tensorflow(cfg, cfg.seed)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    pixels, labels, _, _ = read_inputs(small_data)
    images, labels = to_images(pixels[:1024]), np.asarray(labels[:1024], np.int32)
    model = build_model(cfg, "strong", 16)
    history = model.fit(make_dataset(images, labels, cfg, cfg.seed, 0, 1), steps_per_epoch=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history


def test_member_trained_on_the_gpu_predicts_the_same_on_the_cpu(small_data, tmp_path):
    """A mixed_float16 member saved on the GPU loads where CUDA is hidden and gives the same labels."""
    paths = paths_under(tmp_path)
    run_cli("train", "--config", "tiny", "--members", "1", "--set", "mixed_precision=true", *path_args(paths),
            "--data-dir", small_data, check=True)
    (member,) = paths.models_dir.glob("*/members/m00")
    assert json.loads((member / "done.json").read_text())["gpu"]["name"] == GPUS[0]["name"]
    probe = ("import sys, numpy as np; from digits.data import read_inputs, to_images; "
             "from digits.member import predict_probs, tf; from digits.models import load_model; "
             "assert not tf.config.list_physical_devices('GPU'); "
             "test = to_images(read_inputs(sys.argv[1])[2]); "
             "np.save(sys.argv[3], predict_probs(load_model(sys.argv[2]), test))")
    cpu_probs = tmp_path / "cpu_probs.npy"
    proc = subprocess.run([sys.executable, "-c", probe, str(small_data), str(member / "model.keras"), str(cpu_probs)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    gpu, cpu = np.load(member / "test_probs.npy"), np.load(cpu_probs)
    top2 = np.sort(gpu, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.01  # near-ties may flip between float16 on a GPU and a CPU's arithmetic
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(gpu.argmax(1)[clear], cpu.argmax(1)[clear])


@pytest.mark.skipif(not SAME_MODEL_PAIR, reason="needs two GPUs of the same model")
def test_two_members_on_two_gpus_match_each_trained_alone(small_data, tmp_path):
    """`--jobs 2` on two GPUs: each worker owns one GPU, and each member has the bytes of a run on one GPU alone."""
    two = paths_under(tmp_path / "two")
    run_cli("train", "--config", "tiny", "--jobs", "2", *path_args(two), "--data-dir", small_data, check=True)
    done = [json.loads(p.read_text()) for p in sorted(two.models_dir.glob("*/members/*/done.json"))]
    assert sorted(d["gpu"]["device"] for d in done) == sorted(g["device"] for g in GPUS[:2])  # one member per GPU
    alone = paths_under(tmp_path / "alone")
    run_cli("train", "--config", "tiny", *path_args(alone), "--data-dir", small_data, check=True,
            env={"CUDA_VISIBLE_DEVICES": GPUS[0]["device"]})
    assert _member_files(two.models_dir) == _member_files(alone.models_dir)
    assert _member_files(two.models_dir, "holdout_probs.npy") == _member_files(alone.models_dir, "holdout_probs.npy")
