"""Run ensemble members one after another, in parallel processes (joblib, one GPU each), or on a Dask cluster."""

import contextlib
import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from . import runs
from .config import epoch_images
from .errors import DigitsError
from .gpus import describe_gpu, gpu_count, visible_gpus  # noqa: F401  (gpu_count: dispatch's API)

log = logging.getLogger(__name__)
SLOTS_DIR = "worker-slots"  # in the run folder: one lock file per worker slot, held by the worker that owns it
SLOT_WAIT_S = 60.0  # a worker replacing a dead one waits this long for the dead one's slot to be released
_CLAIM: dict = {}  # in a worker process: the slot it holds for its whole life (its lock's fd, its placement)


def run_members(cfg, inputs, rows_of, run_dir, todo, jobs=1, cluster=None, deadline=None, reserve=0.0):
    """Train the members in `todo`; each writes its own folder, so they are independent.

    `rows_of(index)` gives member `index`'s (train rows, holdout rows) of `inputs` (split.Split.member_rows). With a
    `deadline` (the run's budget, less one member's `reserve` of seconds for predicting and saving) each member trains
    until its wave's share of the time left (member_deadline), and a member still to start when the deadline has
    passed is left for a rerun, unless no member has finished yet: a run always ends with a submission.
    """
    def arrays(index):
        train_index, holdout_index = rows_of(index)
        return (inputs.pixels[train_index], inputs.labels[train_index], inputs.pixels[holdout_index],
                inputs.labels[holdout_index], inputs.test_pixels)

    if jobs <= 1 and not cluster:
        from .member import train_member

        rows = epoch_images(cfg, len(rows_of(0)[0]))
        gpu = next(iter(visible_gpus()), None)  # TensorFlow trains on the first GPU it sees
        for position, index in enumerate(todo):
            if deadline is not None and time.time() >= deadline and (position or len(todo) < cfg.members):
                log.info(f"budget spent: members {todo[position:]} not trained (rerun the command to train them)")
                return
            after = len(todo) - position - 1
            train_member(cfg, index, *arrays(index), runs.member_dir(run_dir, index),
                         images_after=after * rows * cfg.epochs, deadline=member_deadline(deadline, after, reserve),
                         ends_by=deadline, gpu=gpu)
        return
    import joblib

    slots = placements(jobs, visible_gpus(), os.cpu_count() or 1) if not cluster else []
    at_once = jobs if not cluster else len(todo)
    with _backend(cluster, Path(run_dir) / SLOTS_DIR, slots):
        joblib.Parallel(n_jobs=at_once)(
            joblib.delayed(_train_in_worker)(cfg, index, arrays(index), str(runs.member_dir(run_dir, index)), 0,
                                             deadline, (len(todo) - 1 - position) // at_once,
                                             str(run_dir) if position >= at_once or len(todo) < cfg.members else None,
                                             reserve)
            for position, index in enumerate(todo)
        )


def member_deadline(deadline: float | None, waves_after: int, reserve: float, now: float | None = None):
    """When a member starting `now` must stop training: its wave's even share of the time to the run's `deadline`,
    after the `reserve` seconds that each of the `waves_after` later waves needs to predict and save."""
    if deadline is None:
        return None
    now = time.time() if now is None else now
    return now + (deadline - now - waves_after * reserve) / (waves_after + 1)


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
            threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
            return
        if time.monotonic() > waited_until:
            raise DigitsError(f"worker {os.getpid()}: all {len(slots)} worker slots in {folder} are held by other "
                              "processes; is another trainer using this run folder?")
        time.sleep(0.5)


def _exit_with_parent(parent: int, every: float = 0.5):
    """End this worker once its parent trainer has died (kill -9, a closed terminal): else it would train on for
    minutes, holding its slot, so that a rerun's workers could not start."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _train_in_worker(cfg, index, arrays, member_dir, threads, deadline, waves_after=0, skippable_in=None,
                     reserve=0.0):
    """Entry point in a worker process: import TensorFlow there, not in the parent, after claim_slot pinned its GPU.

    `waves_after`: waves of members still to come after this one's, for its share of the `deadline` and the run's
    ETA (each wave trains at this one's speed). A member that would start past the `deadline` is left for a rerun
    if `skippable_in` (its run folder) already has a finished member, as in-process; members of the first wave
    always train, so the run ends with a submission.
    """
    from . import logs

    logs.to_stdout()
    if deadline is not None and time.time() >= deadline and skippable_in and runs.finished_members(Path(skippable_in)):
        log.info(f"budget spent: member {index} not trained (rerun the command to train it)")
        return None
    from .member import train_member

    placement = _CLAIM.get("placement") or {"threads": threads, "gpu": None}
    log.info(f"member {index + 1}/{cfg.members}: worker {os.getpid()} (slot {placement.get('slot', '-')}) trains it "
             f"on {describe_gpu(placement['gpu'])}")
    images_after = waves_after * epoch_images(cfg, len(arrays[0])) * cfg.epochs
    return train_member(cfg, index, *arrays, member_dir, threads=placement["threads"], gpu=placement["gpu"],
                        deadline=member_deadline(deadline, waves_after, reserve), ends_by=deadline,
                        images_after=images_after)


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
