"""Run ensemble members one after another, in parallel processes (joblib, one GPU each), or on a Dask cluster."""

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import runs
from .errors import DigitsError

log = logging.getLogger(__name__)
SLOTS_DIR = "worker-slots"  # in the run folder: one lock file per worker slot, held by the worker that owns it
SLOT_WAIT_S = 60.0  # a worker replacing a dead one waits this long for the dead one's slot to be released
GPU_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: ([^)\s]+)\)")  # a line of `nvidia-smi -L`
_CLAIM: dict = {}  # in a worker process: the slot it holds for its whole life (its lock's fd, its placement)


def run_members(cfg, inputs, train_index, holdout_index, run_dir, todo, jobs=1, cluster=None, deadline=None):
    """Train the members in `todo`; each writes its own folder, so they are independent.

    With a `deadline` (the run's budget) a member still to start when it has passed is left for a rerun,
    unless no member has finished yet: a run always ends with a submission.
    """
    arrays = (
        inputs.pixels[train_index],
        inputs.labels[train_index],
        inputs.pixels[holdout_index],
        inputs.labels[holdout_index],
        inputs.test_pixels,
    )
    if jobs <= 1 and not cluster:
        from .member import train_member

        rows = len(train_index)
        gpu = next(iter(visible_gpus()), None)  # TensorFlow trains on the first GPU it sees
        for position, index in enumerate(todo):
            if deadline is not None and time.time() >= deadline and (position or len(todo) < cfg.members):
                log.info(f"budget spent: members {todo[position:]} not trained (rerun the command to train them)")
                return
            after = (len(todo) - position - 1) * rows * cfg.epochs
            train_member(cfg, index, *arrays, runs.member_dir(run_dir, index), images_after=after,
                         deadline=deadline, gpu=gpu)
        return
    import joblib

    slots = placements(jobs, visible_gpus(), os.cpu_count() or 1) if not cluster else []
    with _backend(cluster, Path(run_dir) / SLOTS_DIR, slots):
        joblib.Parallel(n_jobs=jobs if not cluster else len(todo))(
            joblib.delayed(_train_in_worker)(cfg, index, arrays, str(runs.member_dir(run_dir, index)), 0, deadline)
            for index in todo
        )


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


def placements(jobs: int, gpus: list[dict], cores: int) -> list[dict]:
    """Each worker slot's settings: its slot number, intra-op threads, its GPU (or None), the environment it sets.

    With GPUs, slot i gets GPU i (round-robin when there are more workers than GPUs, then with memory growth so
    they can share); without, the workers only split the CPU cores.
    """
    jobs = max(1, jobs)
    threads = max(1, cores // jobs)
    slots = []
    for slot in range(jobs):
        gpu = gpus[slot % len(gpus)] if gpus else None
        env = {"CUDA_VISIBLE_DEVICES": gpu["device"]} if gpu else {}
        if gpu:
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # the parent (budget planner, manifest) may hold some memory
        slots.append({"slot": slot, "threads": threads, "gpu": gpu, "env": env})
    return slots


def describe_gpu(gpu: dict | None) -> str:
    """A GPU as a log line names it: `GPU 1 (Tesla T4)`; `the CPU` for none."""
    if not gpu:
        return "the CPU"
    return f"GPU {gpu['index'] if gpu['index'] is not None else gpu['device']} ({gpu['name']})"


def claim_slot(slots_dir: str, slots: list[dict]):
    """Worker initializer: lock the first free slot's file for this process's life, then apply its environment.

    It runs before TensorFlow is imported in the worker, so CUDA_VISIBLE_DEVICES decides which GPU TensorFlow sees.
    """
    folder = Path(slots_dir)
    folder.mkdir(parents=True, exist_ok=True)
    waited_until = time.monotonic() + SLOT_WAIT_S
    while True:
        for placement in slots:
            fd = os.open(folder / f"slot-{placement['slot']}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            os.environ.update(placement["env"])
            _CLAIM.update(fd=fd, placement=placement)
            return
        if time.monotonic() > waited_until:
            raise DigitsError(f"worker {os.getpid()}: all {len(slots)} worker slots in {folder} are held by other "
                              "processes; is another trainer using this run folder?")
        time.sleep(0.5)


def _train_in_worker(cfg, index, arrays, member_dir, threads, deadline):
    """Entry point in a worker process: import TensorFlow there, not in the parent, after claim_slot pinned its GPU."""
    from . import logs
    from .member import train_member

    logs.to_stdout()
    placement = _CLAIM.get("placement") or {"threads": threads, "gpu": None}
    log.info(f"member {index + 1}/{cfg.members}: worker {os.getpid()} (slot {placement.get('slot', '-')}) trains it "
             f"on {describe_gpu(placement['gpu'])}")
    return train_member(cfg, index, *arrays, member_dir, threads=placement["threads"], deadline=deadline,
                        gpu=placement["gpu"])


@contextlib.contextmanager
def _backend(cluster, slots_dir: Path | None = None, slots: list[dict] | None = None):
    """joblib's loky processes, each claiming one of `slots` at start; or the Dask cluster's workers."""
    import joblib

    if not cluster:
        with joblib.parallel_backend("loky", initializer=claim_slot, initargs=(str(slots_dir), slots or [])):
            yield
        return
    from dask.distributed import Client

    with Client(cluster) as client, joblib.parallel_backend("dask", client=client):
        yield
