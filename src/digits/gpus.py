"""The GPUs this process may use, found without importing TensorFlow (nvidia-smi), and how logs name them."""

import logging
import os
import re
import shutil
import subprocess

log = logging.getLogger(__name__)
GPU_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: ([^)\s]+)\)")  # a line of `nvidia-smi -L`


def visible_gpus(environ=None) -> list[dict]:
    """The GPUs this process may use, without importing TensorFlow: `nvidia-smi -L`, narrowed by CUDA_VISIBLE_DEVICES.

    Each is {"index": nvidia-smi's index, "name": its model, "device": the CUDA_VISIBLE_DEVICES entry that names it}.
    No nvidia-smi (no NVIDIA driver) means no GPU.
    """
    environ = os.environ if environ is None else environ
    found = _nvidia_smi_gpus()
    if "CUDA_VISIBLE_DEVICES" not in environ:
        return found
    chosen = []
    for entry in (e.strip() for e in environ["CUDA_VISIBLE_DEVICES"].split(",")):
        if not entry or entry == "-1" or (entry.lstrip("-").isdigit() and int(entry) < 0):
            break  # CUDA stops at the first invalid entry; "" and -1 hide every GPU
        match = [g for g in found if entry in (str(g["index"]), g["device"])
                 or (entry.startswith("GPU-") and g["device"].startswith(entry))]  # a UUID may be shortened
        if entry.startswith("MIG-") or match:
            chosen.append({**(match[0] if match else {"index": None, "name": "MIG instance"}), "device": entry})
        else:
            break
    return chosen


def gpu_count(environ=None) -> int:
    """How many GPUs this process sees (0 without an NVIDIA driver); `--jobs auto` gives each its own worker."""
    return len(visible_gpus(environ))


def _nvidia_smi_gpus() -> list[dict]:
    """Every GPU `nvidia-smi -L` lists, each named by its UUID (robust to CUDA's device order)."""
    command = shutil.which("nvidia-smi")
    if not command:
        return []
    try:
        out = subprocess.run([command, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning(f"warning: nvidia-smi -L failed ({err}); training without GPU placement")
        return []
    lines = [GPU_LINE.match(line.strip()) for line in out.stdout.splitlines()] if out.returncode == 0 else []
    return [{"index": int(m[1]), "name": m[2], "device": m[3]} for m in lines if m]


def describe_gpu(gpu: dict | None) -> str:
    """A GPU as a log line names it: `GPU 1 (Tesla T4)`; `the CPU` for none."""
    if not gpu:
        return "the CPU"
    return f"GPU {gpu['index'] if gpu['index'] is not None else gpu['device']} ({gpu['name']})"
