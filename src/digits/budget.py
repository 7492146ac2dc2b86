"""Fit a run into a wall-clock budget: measure this machine's training speed, then plan members and epochs."""

import dataclasses
import logging
import math
import time

import numpy as np

from .config import TrainConfig, budget_seconds

log = logging.getLogger(__name__)

MAX_MEMBERS = 15  # the best public kernel's ensemble size; more adds little
FINISH_SECONDS = 15.0  # ensembling, the submission and the report after the last member
MEMBER_SECONDS = 8.0  # building and tracing a member's model, saving its files
EPOCH_SECONDS = 1.0  # checkpoints written after each epoch
SAFETY = 0.95  # speeds drift on a shared machine: plan for 95% of what is left


def measure(cfg: TrainConfig, pixels: np.ndarray, labels: np.ndarray, architecture: str) -> dict:
    """Training and prediction images/s of `architecture` here, timed on a throwaway model over the real pipeline."""
    from .data import to_images
    from .member import build_model, epoch_steps, keras, make_dataset, setup_tensorflow  # keras: imported quietly

    batch = cfg.batch_size
    call = min(cfg.steps_per_execution, max(2, math.ceil(1024 / batch)))  # steps per call into TensorFlow
    cfg = dataclasses.replace(cfg, steps_per_execution=call)
    calls = max(4, math.ceil(6144 / (call * batch)))  # the first traces and fills the pipeline; the rest are timed
    setup_tensorflow(cfg, cfg.seed)
    images = to_images(pixels[: calls * call * batch])
    labels = np.asarray(labels[: len(images)], np.int32)
    model = build_model(cfg, architecture, calls * call)
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    passes = math.ceil(calls * call / epoch_steps(len(images), cfg))  # small data: go round it again
    model.fit(make_dataset(images, labels, cfg, cfg.seed, 0, passes), steps_per_epoch=calls * call, shuffle=False,
              callbacks=[clock], verbose=0)
    train_speed = (len(ends) - 1) * call * batch / (ends[-1] - ends[0])  # steady state: from the first call's end
    sample = images[: 2 * cfg.predict_batch_size]
    model.predict(sample, batch_size=cfg.predict_batch_size, verbose=0)  # traces the prediction step
    started = time.perf_counter()
    model.predict(sample, batch_size=cfg.predict_batch_size, verbose=0)
    predict_speed = len(sample) / (time.perf_counter() - started)
    return {"architecture": architecture, "train_images_per_second": round(train_speed, 1),
            "predict_images_per_second": round(predict_speed, 1)}


def plan(cfg: TrainConfig, seconds_left: float, speed: dict, rows: int, holdout_rows: int, test_rows: int) -> dict:
    """Members and epochs that fill `seconds_left`: members of `cfg.epochs` epochs each while they fit, then
    the time over is spread as extra epochs (at most twice `cfg.epochs`); at least one member of one epoch."""
    predict_passes = 5 if cfg.tta else 1
    epoch = rows / speed["train_images_per_second"] + holdout_rows / speed["predict_images_per_second"] + EPOCH_SECONDS
    member = (holdout_rows + test_rows) * predict_passes / speed["predict_images_per_second"] + MEMBER_SECONDS
    usable = seconds_left * SAFETY - FINISH_SECONDS
    members = max(1, min(MAX_MEMBERS, math.floor(usable / (member + cfg.epochs * epoch))))
    epochs = max(1, min(2 * cfg.epochs, math.floor((usable / members - member) / epoch)))
    return {"members": members, "epochs": epochs, "architecture": speed["architecture"],
            "epoch_seconds": round(epoch, 1), "member_seconds": round(member + epochs * epoch, 1),
            "planned_seconds": round(members * (member + epochs * epoch) + FINISH_SECONDS, 1),
            "seconds_left": round(seconds_left, 1), **speed}


def fit_to_budget(cfg: TrainConfig, pixels, labels, test_rows: int, started: float) -> tuple:
    """`cfg` with members, epochs and plateau patience planned for its budget (from `started`), and the plan."""
    budget = budget_seconds(cfg.budget)
    holdout_rows = math.ceil(len(labels) * cfg.holdout_fraction)
    speed = measure(cfg, pixels, labels, cfg.architectures[0])
    seconds_left = budget - (time.time() - started)
    the_plan = {"budget_seconds": budget, **plan(cfg, seconds_left, speed, len(labels) - holdout_rows,
                                                 holdout_rows, test_rows)}
    log.info(f"this machine: {speed['train_images_per_second']:,.0f} img/s training, "
             f"{speed['predict_images_per_second']:,.0f} img/s predicting; plan: {the_plan['members']} member(s) x "
             f"{the_plan['epochs']} epochs of {speed['architecture']}, ~{the_plan['planned_seconds'] / 60:.1f} min "
             f"of the {seconds_left / 60:.1f} min left in the {cfg.budget} budget")
    if the_plan["planned_seconds"] > seconds_left:
        log.warning(f"warning: the budget is too short for even one epoch here "
                    f"(~{the_plan['epoch_seconds']:.0f} s each); training one anyway")
    patience = max(1, round(the_plan["epochs"] / 8))  # about one chance to halve the rate per eighth of the run
    the_plan["plateau_patience"] = patience
    cfg = dataclasses.replace(cfg, members=the_plan["members"], epochs=the_plan["epochs"], plateau_patience=patience)
    return cfg, the_plan
