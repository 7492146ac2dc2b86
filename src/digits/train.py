"""Train an ensemble: check the data, train each member (resumably), then average and submit."""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, data, ensemble, manifest, report
from .config import Paths, TrainConfig
from .errors import InputError

CONFIG_FILE = "config.json"
HOLDOUT_FILE = "holdout.npz"


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


def train(cfg: TrainConfig, paths: Paths, *, force=False, run_id=None, jobs=1, cluster=None, log=print) -> dict:
    """Train every member not yet finished, then ensemble; return the run's metrics."""
    started = time.time()
    inputs = load_inputs(paths, cfg.max_train_rows)
    run_id = run_id or run_id_for(cfg, inputs)
    run_dir = paths.models_dir / run_id
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / ensemble.METRICS_FILE).is_file():
        log(f"run {run_id} already finished (use --force to train it again)")
        return ensemble.finish(run_dir, paths, log=log)
    _prepare_run_dir(run_dir, cfg, inputs, started)
    log(f"run {run_id}: {cfg.members} member(s) of {', '.join(cfg.architectures)}, {len(inputs.labels)} rows")
    holdout = np.load(run_dir / HOLDOUT_FILE)
    todo = [i for i in range(cfg.members) if not (member_dir(run_dir, i) / "done.json").is_file()]
    from .dispatch import run_members

    run_members(cfg, inputs, holdout["train_index"], holdout["holdout_index"], run_dir, todo, jobs, cluster, log)
    manifest.finish(run_dir)
    metrics = ensemble.finish(run_dir, paths, log=log)
    log(f"report: {report.build(run_dir)}")
    return metrics


def resume(run_dir: Path, paths: Paths, **kwargs) -> dict:
    """Continue the run in `run_dir` with the config it was started with."""
    from .config import apply_overrides

    config_file = Path(run_dir) / CONFIG_FILE
    if not config_file.is_file():
        raise InputError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    saved = json.loads(config_file.read_text())
    cfg = apply_overrides(TrainConfig(), saved, str(config_file))
    return train(cfg, paths, run_id=Path(run_dir).name, **kwargs)


def member_dir(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / "members" / f"m{index:02d}"


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, inputs: Inputs, started: float):
    """Write the config, holdout split and manifest once; on resume check the data is unchanged."""
    config_file = run_dir / CONFIG_FILE
    if config_file.is_file():
        recorded = manifest.read(run_dir).get("inputs_sha256", {})
        if recorded and recorded != inputs.sha256:
            raise InputError(f"{run_dir}: the data changed since this run started; use --force to start over")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    train_index, holdout_index = data.split_holdout(inputs.labels, cfg.holdout_fraction, cfg.seed)
    with atomic.atomic_path(run_dir / HOLDOUT_FILE) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, train_index=train_index, holdout_index=holdout_index,
                     labels=inputs.labels[holdout_index], pixels=inputs.pixels[holdout_index])
    report.save_train_samples(run_dir, inputs.pixels[train_index], inputs.labels[train_index], cfg.seed)
    manifest.start(run_dir, cfg, inputs.sha256, started)
    atomic.write_text(config_file, json.dumps(cfg.to_dict(), indent=2))
