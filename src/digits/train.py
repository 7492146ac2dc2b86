"""Train an ensemble: check the data, train each member (resumably), then average and submit."""

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, budget, data, describe, dispatch, ensemble, manifest, pseudo, report, runs, split
from .config import Paths, TrainConfig, apply_overrides, budget_seconds, describe_schedule, epoch_images
from .errors import DigitsError, InputError
from .gpus import gpu_count

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """The checked competition data a run trains and predicts on."""

    pixels: np.ndarray
    labels: np.ndarray
    test_pixels: np.ndarray
    sha256: dict


def load_inputs(paths: Paths, max_train_rows: int = 0) -> Inputs:
    """Read and check train.csv and test.csv (decoded copies are cached under data/cache)."""
    pixels, labels, test_pixels, raw_sha = data.read_inputs(paths.data_dir, paths.cache_dir)
    if max_train_rows:
        pixels, labels = pixels[:max_train_rows], labels[:max_train_rows]
    return Inputs(pixels, labels, test_pixels, raw_sha)


def run_id_for(cfg: TrainConfig, inputs: Inputs) -> str:
    """Same config and data give the same run id, so rerunning a command resumes its run."""
    key = cfg.fingerprint() + json.dumps(inputs.sha256, sort_keys=True)
    return f"{cfg.name}-{data.sha256_bytes(key.encode())[:8]}"


@dataclass
class Growth:
    """What `digits train --resume RUN` was asked to change: config fields (more members), or a budget to fill."""

    changes: dict
    budget: str = ""


def train(cfg: TrainConfig, paths: Paths, *, force=False, run_id=None, jobs="auto", cluster=None,
          grow: Growth | None = None, started: float | None = None) -> dict:
    """Train every member not yet finished (growing the run first if asked), then ensemble; return the metrics.

    A budget counts from `started` (a time.time(); default now): the CLI passes when the command started.
    """
    started = started or time.time()
    if gpu_count():  # the budget planner times nets in this process: leave the GPUs' memory to the workers
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    inputs = load_inputs(paths, cfg.max_train_rows)
    _check_learnable(cfg, paths, inputs)
    run_id = run_id or run_id_for(cfg, inputs)
    run_dir = paths.models_dir / run_id
    with run_lock(run_dir):
        return _train_locked(cfg, paths, inputs, run_id, run_dir, started, force, jobs, cluster, grow)


def _train_locked(cfg, paths, inputs, run_id, run_dir, started, force, jobs, cluster, grow) -> dict:
    """The body of `train`, run while this process holds the run's lock."""
    if force:
        _clear_run_dir(run_dir)
    plan = None
    if (run_dir / runs.CONFIG_FILE).is_file():
        cfg = runs.saved_config(run_dir)  # a rerun keeps the plan (members, epochs) the run started with
        if grow:
            cfg, plan = _grow(run_dir, cfg, grow, inputs, started)
        if runs.is_complete(run_dir, cfg.members):
            return _finish_trained(run_id, run_dir, paths)
    elif cfg.budget:
        cfg, plan = budget.fit_to_budget(cfg, inputs.pixels, inputs.labels, len(inputs.test_pixels), started, jobs)
    else:
        cfg = budget.without_budget(cfg)
    jobs = _members_at_once(jobs, cfg, run_dir, plan, cluster)
    _prepare_run_dir(run_dir, cfg, inputs, started, plan, jobs)
    the_split = split.load(run_dir)
    each = f" of {epoch_images(cfg, len(the_split.member_rows(0)[0])):,} images" if cfg.epoch_rows else ""
    seconds = budget_seconds(grow.budget if grow and grow.budget else cfg.budget)
    epochs = f"{cfg.epochs} epochs{each}" + (" at most (fewer if its share of the budget ends first)"
                                             if seconds else "")
    held = (f"member i holds out fold i mod {the_split.folds} of {the_split.folds} stratified folds"
            if the_split.folds else f"one holdout of {len(the_split.rows):,} rows for every member")
    log.info(f"run {run_id}: {cfg.members} member(s) of {', '.join(cfg.architectures)}, {epochs}, "
             f"{len(inputs.labels)} rows ({held}), schedule {describe_schedule(cfg)}")
    todo = runs.unfinished_members(run_dir, cfg.members)
    deadline, reserve = None, 0.0
    if seconds:
        reserve = (plan["member_seconds"] - plan["epochs"] * plan["epoch_seconds"]) if plan else 0.0
        deadline = started + seconds - budget.FINISH_SECONDS - reserve
    if not _train_rounds(cfg, inputs, the_split, run_dir, todo, jobs, cluster, deadline, reserve):
        log.info(f"run {run_id}: the first round's members are not all trained, so the second round waits "
                 "(rerun the command to go on)")
    manifest.finish(run_dir)
    metrics = ensemble.finish(run_dir, paths)
    log.info(f"report: {report.build(run_dir)}")
    return metrics


def _train_rounds(cfg, inputs, the_split, run_dir, todo, jobs, cluster, deadline, reserve) -> bool:
    """Train the members in `todo`: the first round, then, with pseudo_label, the second on the train rows plus the
    test images the first round labelled (src/digits/pseudo.py). False if the second round could not start."""
    first = pseudo.first_round(run_dir, cfg)
    now, todo_first = time.time(), [i for i in todo if i < first]
    # the first round's share of the budget: its members' share of those left to train
    first_deadline = deadline if deadline is None else now + (deadline - now) * len(todo_first) / max(1, len(todo))
    dispatch.run_members(cfg, inputs, the_split.member_rows, run_dir, todo_first, jobs, cluster,
                         deadline=first_deadline, reserve=reserve)
    if first == cfg.members:
        return True
    if runs.unfinished_members(run_dir, first):
        return False
    chosen = pseudo.choose(run_dir, cfg, first)
    second, pixels, labels, rows_of = pseudo.second_round(cfg, inputs.pixels, inputs.labels, inputs.test_pixels,
                                                          the_split.member_rows, chosen)
    dispatch.run_members(second, dataclasses.replace(inputs, pixels=pixels, labels=labels), rows_of, run_dir,
                         [i for i in todo if i >= first], jobs, cluster, deadline=deadline, reserve=reserve)
    return True


def _members_at_once(jobs, cfg: TrainConfig, run_dir: Path, plan: dict | None, cluster) -> int:
    """Members trained at once: the budget plan's; on a rerun, as the run started (its bytes depend on the threads
    each member had); else `jobs`, where "auto" is one per GPU, or one per core where that measures faster."""
    if cluster:
        return 1
    recorded = manifest.read(run_dir).get("jobs") if (run_dir / runs.MANIFEST_FILE).is_file() else None
    if jobs == "auto" and recorded:
        return recorded
    if plan:
        return plan["jobs"]
    return budget.auto_jobs(cfg) if jobs == "auto" else int(jobs)


def resume(run_dir: Path, paths: Paths, *, changes=None, budget="", force=False, **kwargs) -> dict:
    """Continue the run in `run_dir` with its saved config; `changes` (more members) or a `budget` grow it first."""
    cfg, grow = runs.saved_config(run_dir), Growth(dict(changes or {}), budget) if changes or budget else None
    if budget and not budget_seconds(budget):
        raise InputError(f"--budget {budget!r}: expected a duration such as '10m', '90s' or '1.5h'")
    if grow and budget and "members" in grow.changes:
        raise InputError(f"--resume {Path(run_dir).name}: give --members or --budget, not both (--budget plans "
                         "how many members fit in the time)")
    if force and grow:  # starting over: the changes simply make the new run's config
        cfg = apply_overrides(cfg, {**grow.changes, **({"budget": budget} if budget else {})}, "command line",
                              parse_text=True)
        grow = None
    return train(cfg, paths, run_id=Path(run_dir).name, force=force, grow=grow, **kwargs)


def _grow(run_dir: Path, cfg: TrainConfig, grow: Growth, inputs: Inputs, started: float) -> tuple:
    """The run's config with more members (as asked, or as many as `grow.budget` fits) and the budget plan.

    Each member depends only on the run's seed and its own index, so a run grown to N members holds the bytes of
    one trained with N at once. The grown config is saved and the growth recorded in the manifest.
    """
    _check_same_data(run_dir, inputs)
    where = f"--resume {run_dir.name}"
    grown = _grown_config(cfg, grow.changes, where)
    plan = None
    if grow.budget:
        plan = budget.plan_more_members(grown, grow.budget, inputs.pixels, inputs.labels, len(inputs.test_pixels),
                                        started)
        done = len(runs.finished_members(run_dir))
        grown = dataclasses.replace(grown, members=max(grown.members, done + plan["members"]))
    if grown.members == cfg.members:
        if grown != cfg:
            raise InputError(f"{where}: architectures {','.join(grown.architectures)} would only change members "
                             "not yet trained; add members with --members to train other nets")
        return cfg, plan
    log.info(f"run {run_dir.name}: growing from {cfg.members} to {grown.members} members")
    manifest.grow(run_dir, grown, cfg.members, started, plan)
    atomic.write_text(run_dir / runs.CONFIG_FILE, json.dumps(grown.to_dict(), indent=2))
    return grown, plan


def _grown_config(cfg: TrainConfig, changes: dict, where: str) -> TrainConfig:
    """`cfg` with `changes`: more members, and other nets for new members only; anything else is refused."""
    grown = apply_overrides(cfg, changes, where, parse_text=True)
    if grown.members < cfg.members:
        raise InputError(f"{where}: --members {grown.members} is fewer than the {cfg.members} the run has; a run only "
                         f"grows (to ensemble fewer, use `digits ensemble RUN --members 0,1,...`)")
    before, after = cfg.to_dict(), grown.to_dict()
    for key in before:
        if key not in ("members", "architectures") and after[key] != before[key]:
            raise InputError(f"{where}: {key} {after[key]!r} differs from the {before[key]!r} its members were "
                             "trained with, and a grown run keeps its recipe; train a new run with it instead, then "
                             "blend the two with `digits ensemble RUN1 RUN2`")
    nets = describe.member_architectures(dataclasses.replace(grown, members=cfg.members))
    for index, (old, new) in enumerate(zip(describe.member_architectures(cfg), nets, strict=True)):
        if old != new:
            raise InputError(f"{where}: architectures {','.join(grown.architectures)} would make member {index} a "
                             f"{new!r}, but it is a {old!r}; a net can change only for new members (keep the run's "
                             f"{','.join(cfg.architectures)} first in the list)")
    return grown


def _check_learnable(cfg: TrainConfig, paths: Paths, inputs: Inputs):
    """Refuse rows the recipe cannot learn from, naming train.csv (and the row limit, if one cut it)."""
    name = data.find_csv(paths.data_dir, "train.csv").name
    if cfg.max_train_rows and len(inputs.labels) == cfg.max_train_rows:
        name += f" (its first {cfg.max_train_rows} rows: max_train_rows)"
    data.check_learnable(name, inputs.labels, cfg.holdout_fraction, cfg.allow_missing_digits, cfg.holdout == "folds")


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an OS lock on the run folder while training it; if another process holds it, stop at once naming it.

    The kernel drops the lock when its holder exits, even by kill -9, so a lock left behind never blocks.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_file = run_dir / runs.LOCK_FILE
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by worker processes (O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise DigitsError(f"{run_dir}: this run is being trained by process {holder} (it holds {lock_file}); "
                              "wait for it to finish or stop it, then run this command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(run_dir: Path) -> int | None:
    """The id of the process holding the run's lock (training it), or None; looks without taking the lock."""
    lock_file = Path(run_dir) / runs.LOCK_FILE
    try:
        stat = lock_file.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return _lock_holder_by_trying(lock_file) if lock_file.is_file() else None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in table.splitlines():  # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            return int(fields[4])
    return None


def _lock_holder_by_trying(lock_file: Path) -> int | None:
    """Without /proc/locks: try a shared lock for an instant; if it is refused, the file names the holder."""
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)  # also releases the shared lock
    return None


def _clear_run_dir(run_dir: Path):
    """Delete everything in the run folder but the lock this process holds (--force starts the run over)."""
    for path in run_dir.iterdir():
        if path.name == runs.LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _finish_trained(run_id: str, run_dir: Path, paths: Paths) -> dict:
    """A run whose members all finished: ensemble again, and rebuild whatever it promises and lacks (no training)."""
    missing = _missing_outputs(run_dir, paths)
    if missing:
        names = ", ".join(str(p.relative_to(run_dir) if p.is_relative_to(run_dir) else p) for p in missing)
        log.info(f"run {run_id}: every member is trained; rebuilding what is missing: {names}")
    else:
        log.info(f"run {run_id} already finished (use --force to train it again)")
    metrics = ensemble.finish(run_dir, paths)
    if missing:
        log.info(f"report: {report.build(run_dir)}")
    return metrics


def _missing_outputs(run_dir: Path, paths: Paths) -> list[Path]:
    """What a finished run promises and lacks: metrics, ensemble probabilities, submission, report, figures."""
    try:
        promised = [paths.submissions_dir / f"{run_dir.name}.csv", *report.outputs(run_dir)]
    except InputError:  # metrics.json or the ensemble's probabilities are missing
        return [run_dir / runs.METRICS_FILE]
    return [p for p in promised if not p.is_file()]


def _check_same_data(run_dir: Path, inputs: Inputs):
    """Refuse to train more of a run on data other than the data it started with."""
    recorded = manifest.read(run_dir).get("inputs_sha256", {})
    if recorded and recorded != inputs.sha256:
        raise InputError(f"{run_dir}: the data changed since this run started; use --force to start over")


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, inputs: Inputs, started: float, plan: dict | None, jobs: int):
    """Write the config, the split (a shared holdout or folds) and manifest once; on resume check the data is
    unchanged."""
    config_file = run_dir / runs.CONFIG_FILE
    if config_file.is_file():
        _check_same_data(run_dir, inputs)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    split.create(run_dir, cfg, inputs.pixels, inputs.labels)
    train_index = split.load(run_dir).member_rows(0)[0]
    report.save_train_samples(run_dir, inputs.pixels[train_index], inputs.labels[train_index], cfg.seed)
    manifest.start(run_dir, cfg, inputs.sha256, started, plan, jobs)
    atomic.write_text(config_file, json.dumps(cfg.to_dict(), indent=2))
