"""Train an ensemble: check the data, train each member (resumably), then average and submit."""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, budget, data, dispatch, ensemble, manifest, report, runs
from .config import Paths, TrainConfig, apply_overrides, budget_seconds, describe_schedule
from .errors import DigitsError, InputError

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


def train(cfg: TrainConfig, paths: Paths, *, force=False, run_id=None, jobs=1, cluster=None) -> dict:
    """Train every member not yet finished, then ensemble; return the run's metrics."""
    started = time.time()
    inputs = load_inputs(paths, cfg.max_train_rows)
    _check_learnable(cfg, paths, inputs)
    run_id = run_id or run_id_for(cfg, inputs)
    run_dir = paths.models_dir / run_id
    with run_lock(run_dir):
        return _train_locked(cfg, paths, inputs, run_id, run_dir, started, force, jobs, cluster)


def _train_locked(cfg, paths, inputs, run_id, run_dir, started, force, jobs, cluster) -> dict:
    """The body of `train`, run while this process holds the run's lock."""
    if force:
        _clear_run_dir(run_dir)
    if (run_dir / runs.METRICS_FILE).is_file():
        return _finish_trained(run_id, run_dir, paths)
    plan = None
    if (run_dir / runs.CONFIG_FILE).is_file():
        cfg = saved_config(run_dir)  # a rerun keeps the plan (members, epochs) the run started with
    elif cfg.budget:
        cfg, plan = budget.fit_to_budget(cfg, inputs.pixels, inputs.labels, len(inputs.test_pixels), started)
    _prepare_run_dir(run_dir, cfg, inputs, started, plan)
    log.info(f"run {run_id}: {cfg.members} member(s) of {', '.join(cfg.architectures)}, {cfg.epochs} epochs, "
             f"{len(inputs.labels)} rows, schedule {describe_schedule(cfg)}")
    holdout = np.load(run_dir / runs.HOLDOUT_FILE)
    finished = runs.finished_members(run_dir)
    todo = [i for i in range(cfg.members) if i not in finished]
    deadline = None
    if budget_seconds(cfg.budget):
        reserve = (plan["member_seconds"] - plan["epochs"] * plan["epoch_seconds"]) if plan else 0.0
        deadline = started + budget_seconds(cfg.budget) - budget.FINISH_SECONDS - reserve
    dispatch.run_members(cfg, inputs, holdout["train_index"], holdout["holdout_index"], run_dir, todo, jobs, cluster,
                         deadline=deadline)
    manifest.finish(run_dir)
    metrics = ensemble.finish(run_dir, paths)
    log.info(f"report: {report.build(run_dir)}")
    return metrics


def resume(run_dir: Path, paths: Paths, **kwargs) -> dict:
    """Continue the run in `run_dir` with the config it was started with."""
    return train(saved_config(run_dir), paths, run_id=Path(run_dir).name, **kwargs)


def saved_config(run_dir: Path) -> TrainConfig:
    """The config a run folder was started with (after any budget plan)."""
    return apply_overrides(TrainConfig(), runs.read_config(run_dir), str(Path(run_dir) / runs.CONFIG_FILE))


def _check_learnable(cfg: TrainConfig, paths: Paths, inputs: Inputs):
    """Refuse rows the recipe cannot learn from, naming train.csv (and the row limit, if one cut it)."""
    name = data.find_csv(paths.data_dir, "train.csv").name
    if cfg.max_train_rows and len(inputs.labels) == cfg.max_train_rows:
        name += f" (its first {cfg.max_train_rows} rows: max_train_rows)"
    data.check_learnable(name, inputs.labels, cfg.holdout_fraction, cfg.allow_missing_digits)


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


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, inputs: Inputs, started: float, plan: dict | None):
    """Write the config, holdout split and manifest once; on resume check the data is unchanged."""
    config_file = run_dir / runs.CONFIG_FILE
    if config_file.is_file():
        recorded = manifest.read(run_dir).get("inputs_sha256", {})
        if recorded and recorded != inputs.sha256:
            raise InputError(f"{run_dir}: the data changed since this run started; use --force to start over")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    train_index, holdout_index = data.split_holdout(inputs.labels, cfg.holdout_fraction, cfg.seed)
    atomic.save_npz(run_dir / runs.HOLDOUT_FILE, train_index=train_index, holdout_index=holdout_index,
                    labels=inputs.labels[holdout_index], pixels=inputs.pixels[holdout_index])
    report.save_train_samples(run_dir, inputs.pixels[train_index], inputs.labels[train_index], cfg.seed)
    manifest.start(run_dir, cfg, inputs.sha256, started, plan)
    atomic.write_text(config_file, json.dumps(cfg.to_dict(), indent=2))
