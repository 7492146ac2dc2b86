"""What a run was made from: input hashes, resolved config, seeds, versions, code commit, host, times."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import atomic, runs
from .config import PROJECT_ROOT, TrainConfig, describe_schedule


def _git(*args) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    """CPU model, core count, bf16/AMX support and visible GPUs of this machine (TensorFlow's and their models)."""
    import os

    from .dispatch import visible_gpus
    from .quiet import import_tensorflow

    tf = import_tensorflow()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cpu_flags": extras, "gpus": gpus,
            "gpu_models": [gpu["name"] for gpu in visible_gpus()], "platform": platform.platform()}


def versions() -> dict:
    """Python, TensorFlow, Keras and NumPy, and the CUDA and cuDNN TensorFlow was built with (None: a CPU build)."""
    import numpy

    from .quiet import import_tensorflow

    tensorflow = import_tensorflow()
    import keras

    build = tensorflow.sysconfig.get_build_info()
    return {"python": sys.version.split()[0], "tensorflow": tensorflow.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__, "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version")}


def start(run_dir: Path, cfg: TrainConfig, inputs_sha256: dict, started: float, plan: dict | None = None,
          jobs: int = 1):
    """Write the manifest when a run starts."""
    manifest = {
        "inputs_sha256": inputs_sha256,
        "config": cfg.to_dict(),
        "schedule": describe_schedule(cfg),
        "budget_plan": plan,
        "jobs": jobs,  # members trained at once: a rerun keeps it, as each member's bytes depend on its threads
        "seeds": _seeds(cfg),
        "versions": versions(),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": None,
        "host": host_info(),
    }
    atomic.write_text(Path(run_dir) / runs.MANIFEST_FILE, json.dumps(manifest, indent=2))


def _seeds(cfg: TrainConfig) -> list[int]:
    """Each member's seed (as member.member_seed draws it): the run's seed and the member's index only."""
    return [cfg.seed * 1000 + i for i in range(cfg.members)]


def grow(run_dir: Path, cfg: TrainConfig, members_before: int, started: float, plan: dict | None = None):
    """Record that the run grows to `cfg.members` members: its config and seeds, and an entry in `growths`."""
    manifest = read(run_dir)
    growths = manifest.setdefault("growths", [])
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
             "members_before": members_before}
    if growths and growths[-1]["finished"] is None:  # an interrupted growth, asked again: still one entry
        entry = {key: growths.pop()[key] for key in ("started", "members_before")}
    growths.append({**entry, "members": cfg.members, "budget_plan": plan, "finished": None, "train_seconds": None})
    manifest.update(config=cfg.to_dict(), schedule=describe_schedule(cfg), seeds=_seeds(cfg), finished=None)
    atomic.write_text(Path(run_dir) / runs.MANIFEST_FILE, json.dumps(manifest, indent=2))


def finish(run_dir: Path):
    """Stamp the manifest with the time training finished, and close a growth whose members all finished."""
    manifest = read(run_dir)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    growth = (manifest.get("growths") or [{}])[-1]
    if growth and growth["finished"] is None:
        infos = [runs.member_info(run_dir, i) for i in range(growth["members_before"], growth["members"])]
        if all(infos):
            growth["finished"] = manifest["finished"]
            growth["train_seconds"] = round(sum(info["train_seconds"] for info in infos), 2)
    atomic.write_text(Path(run_dir) / runs.MANIFEST_FILE, json.dumps(manifest, indent=2))


def read(run_dir: Path) -> dict:
    path = Path(run_dir) / runs.MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
