"""Fit a run into a wall-clock budget: time the candidate nets here, then choose the net, members, epochs and
members trained at once whose predicted test accuracy (plan_table.py, from `make bench`) is best in the time."""

import dataclasses
import logging
import math
import os
import time

import numpy as np

from . import plan_table, replan
from .config import TrainConfig, budget_seconds, epoch_images, epoch_steps
from .gpus import gpu_count

log = logging.getLogger(__name__)

MAX_MEMBERS = 15  # the best public kernel's ensemble size; more adds little
MAX_EPOCHS = 45  # the Kaggle recipe's epochs; past the table's last point the planner adds members instead
FINISH_SECONDS = 15.0  # ensembling, the submission and the report after the last member
MEMBER_SECONDS = 8.0  # building and tracing a member's model, saving its files
EPOCH_SECONDS = 1.0  # checkpoints written after each epoch
WORKERS_SECONDS = 8.0  # starting the worker processes that train members at once, TensorFlow imported in each
SAFETY = 0.95  # speeds drift on a shared machine: plan for 95% of what is left
# a budgeted member trains on past its planned epochs while its share of the budget lasts, up to this many times
# them: real epochs took 0.7-1.2x the planned seconds (docs/PERFORMANCE.md, 2026-12-02), so a plan alone left up
# to a third of a budget unused
FILL_FACTOR = 1.5
# members at once trained 16-34% slower per epoch in real budgeted runs than the side-by-side probe predicts
# (holdout checks, checkpoints and two input pipelines share the cores; docs/PERFORMANCE.md, 2026-12-02)
AT_ONCE_EFFICIENCY = 0.85
MIN_CHECKS = 16  # holdout checks a short run gets at least (shorter epochs), so ReduceLROnPlateau acts in time
MAX_CHECKS_PER_PASS = 8  # each check costs a holdout prediction and a checkpoint
TIMED_IMAGES = 4096  # images timed per candidate net, after the first call (tracing, oneDNN's first calls)
# per net, at least how many times the net before it (plan_table order) it costs per training image: the least
# ratios measured (docs/PERFORMANCE.md, 2026-12-03) are lite 1.13x kaggle-rmsprop (a real AVX2-only Zen 3; 1.6x
# with bf16, 2.9x on the AVX2 stand-in) and strong 2.2x lite (bf16 Xeon; 3.7x on the Zen 3)
MIN_COST_RATIO = {"lite": 1.1, "strong": 2.0}


def candidates(cfg: TrainConfig) -> list[str]:
    """The nets a budget may choose from, cheapest first: the table's under `architectures = ["auto"]` (its
    POINTS order), else the config's first."""
    return list(plan_table.ACCURACY) if cfg.architectures == ("auto",) else [cfg.architectures[0]]


def measure(cfg: TrainConfig, pixels: np.ndarray, labels: np.ndarray, architecture: str) -> dict:
    """Training and prediction images/s of `architecture` here, timed on a throwaway model over the real pipeline."""
    from .data import to_images
    from .member import build_model, keras, make_dataset, setup_tensorflow  # keras: imported quietly

    batch = cfg.batch_size
    call = min(cfg.steps_per_execution, max(2, math.ceil(1024 / batch)))  # steps per call into TensorFlow
    cfg = dataclasses.replace(cfg, steps_per_execution=call)
    calls = 1 + max(3, math.ceil(TIMED_IMAGES / (call * batch)))  # the first traces and fills the pipeline
    setup_tensorflow(cfg, cfg.seed)
    images = to_images(pixels[: calls * call * batch])
    labels = np.asarray(labels[: len(images)], np.int32)
    model = build_model(cfg, architecture, calls * call)
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    passes = math.ceil(calls * call / epoch_steps(cfg, len(images)))  # small data: go round it again
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


def predicted_accuracy(architecture: str, epochs: float, members: int) -> float | None:
    """Expected test accuracy of `members` averaged members of `epochs` (in the table's epochs), or None if unknown.

    One member's accuracy is interpolated in log(epochs) between the table's points and held flat past the last;
    below the first point nothing was measured, so nothing is predicted. Averaging two members adds
    PAIR_GAIN x error ** PAIR_GAIN_POWER (fitted: weak members gain more), M members twice that times (1 - 1/M).
    """
    points = plan_table.ACCURACY.get(architecture)
    if not points or epochs < points[0][0] * 0.999:
        return None
    single = float(np.interp(math.log(epochs), np.log([e for e, _ in points]), [a for _, a in points]))
    pair_gain = plan_table.PAIR_GAIN * (1 - single) ** plan_table.PAIR_GAIN_POWER
    return single + 2 * pair_gain * (1 - 1 / members)


def parallel_speedup(net: str, measured_only: bool = False, environ=None) -> float:
    """Total training speed of one single-thread member per core over one member using every core (plan_table);
    a net not timed takes the least of the others (1.0 with `measured_only`); 1.0 where this CPU class has none."""
    from .member import compute_policy

    speedups = plan_table.PARALLEL_SPEEDUP.get(compute_policy(True, environ), {})
    return speedups.get(net, 1.0 if measured_only else min(speedups.values(), default=1.0))


def options(cfg: TrainConfig, seconds_left: float, speeds: dict, rows: int, holdout_rows: int, test_rows: int,
            workers: list[int], speedup: dict, epochs: int = 0) -> list[dict]:
    """Every plan that fits: per net, per count of members at once (`workers`), per members; best first.

    `speedup`: per net, how much faster members at once train in total than one (parallel_speedup).
    `speeds` are per net, measured with every core in one process; `epochs` fixed (growing a run: the run's own
    epochs and `epoch_rows`) or 0 (as many as fit, up to MAX_EPOCHS passes; a plan of fewer than MIN_CHECKS
    passes gets shorter epochs). Members run in waves of `jobs`. Nets outside the table have no predicted
    accuracy: for them the most training images win.
    """
    usable = seconds_left * SAFETY - FINISH_SECONDS
    found = []
    for net, speed in speeds.items():
        for jobs in workers:
            one_pass, check, member = _seconds(cfg, speed, jobs, speedup.get(net, 1.0), rows, holdout_rows, test_rows)
            for members in range(jobs if jobs > 1 else 1, MAX_MEMBERS + 1):
                start = WORKERS_SECONDS if jobs > 1 else 0.0
                left = (usable - start) / math.ceil(members / jobs) - member  # each wave's seconds for epochs
                epoch_rows = cfg.epoch_rows if epochs else _epoch_rows(left / (one_pass + check), rows)
                images = epoch_images(dataclasses.replace(cfg, epoch_rows=epoch_rows), rows)
                epoch = one_pass * images / rows + check
                fit = math.floor(left / epoch)
                if fit < max(1, epochs):
                    break
                fit = epochs or (min(MAX_EPOCHS, fit) if not epoch_rows else fit)
                found.append(_option_for(net, jobs, members, fit, epoch, member, images, epoch_rows))
    return sorted(found, key=_rank)


def _epoch_rows(passes: float, rows: int) -> int:
    """Images per epoch for a run of `passes` passes: 0 (a pass) from MIN_CHECKS passes up, else a share of a pass
    such that the run checks the holdout about MIN_CHECKS times (at most MAX_CHECKS_PER_PASS per pass)."""
    if passes >= MIN_CHECKS:
        return 0
    return math.ceil(rows / min(MAX_CHECKS_PER_PASS, math.ceil(MIN_CHECKS / max(passes, 1e-9))))


def _seconds(cfg: TrainConfig, speed: dict, jobs: int, speedup: float, rows: int, holdout_rows: int,
             test_rows: int) -> tuple[float, float, float]:
    """Seconds of one pass over the train rows, of a holdout check with its checkpoint, and a member's fixed cost
    (build, predict, save)."""
    share = (speedup * AT_ONCE_EFFICIENCY if jobs > 1 else 1.0) / jobs  # each member's part of the machine's speed
    train_speed = speed["train_images_per_second"] * share
    predict_speed = speed["predict_images_per_second"] * share
    check = holdout_rows / predict_speed + EPOCH_SECONDS
    member = (holdout_rows + test_rows) * (5 if cfg.tta else 1) / predict_speed + MEMBER_SECONDS
    return rows / train_speed, check, member


def _option_for(net: str, jobs: int, members: int, epochs: int, epoch: float, member: float, images: int,
                epoch_rows: int) -> dict:
    seconds = math.ceil(members / jobs) * (member + epochs * epoch) + FINISH_SECONDS
    seconds += WORKERS_SECONDS if jobs > 1 else 0.0
    return {"architecture": net, "members": members, "epochs": epochs, "epoch_rows": epoch_rows, "jobs": jobs,
            "threads": max(1, (os.cpu_count() or 1) // jobs),
            "predicted_accuracy": predicted_accuracy(net, epochs * images / plan_table.TRAIN_ROWS, members),
            "epoch_seconds": round(epoch, 1), "member_seconds": round(member + epochs * epoch, 1),
            "planned_seconds": round(seconds, 1), "images": members * epochs * images}


def _rank(option: dict) -> tuple:
    """Higher predicted accuracy first (to 0.01 points), then more training images, then less time."""
    accuracy = option["predicted_accuracy"]
    return (-(round(accuracy, 4) if accuracy is not None else -1.0), -option["images"], option["planned_seconds"])


def runner_up(ranked: list[dict]) -> dict | None:
    """The best plan with another net, or else with another number of members at once."""
    best = ranked[0]
    for key in ("architecture", "jobs"):
        other = [o for o in ranked if o[key] != best[key]]
        other = [o for o in other if o["predicted_accuracy"] is not None] or other
        if other:
            return other[0]
    return ranked[1] if len(ranked) > 1 else None


def worker_choices(jobs) -> list[int]:
    """Members at once to consider: `jobs` if given; else one per GPU where there are GPUs, else 1 and all cores."""
    if jobs not in (None, "auto"):
        return [int(jobs)]
    gpus = gpu_count()
    if gpus:
        return [gpus]
    cores = os.cpu_count() or 1
    return [1, cores] if cores > 1 else [1]


def without_budget(cfg: TrainConfig) -> TrainConfig:
    """With no budget to plan for, `architectures = ["auto"]` means the strong net."""
    return dataclasses.replace(cfg, architectures=("strong",)) if cfg.architectures == ("auto",) else cfg


def auto_jobs(cfg: TrainConfig) -> int:
    """`--jobs auto` without a budget: one member per GPU; else one per core where that measured faster."""
    gpus = gpu_count()
    if gpus:
        return min(gpus, cfg.members)
    cores = os.cpu_count() or 1
    faster = parallel_speedup(cfg.architectures[0], measured_only=True) > 1.0
    return min(cores, cfg.members) if cores > 1 and faster else 1


def make_plan(cfg: TrainConfig, pixels, labels, test_rows: int, started: float, jobs="auto", epochs: int = 0) -> dict:
    """Time the candidate nets here, cheapest first, then `choose` the plan for the budget left since `started`.

    A net is not timed where it cannot win: even at the speed of the net before it (timed, or bounded so if not)
    over its MIN_COST_RATIO, it would predict no better in the time left than the nets timed already (short
    budgets save its timing).
    """
    holdout_rows = math.ceil(len(labels) * cfg.holdout_fraction)
    rows, workers = len(labels) - holdout_rows, worker_choices(jobs)
    speedup = {net: 1.0 if gpu_count() else parallel_speedup(net) for net in candidates(cfg)}
    speeds, not_timed, last = {}, [], None  # last: the speed of the net before, timed or bounded
    for net in candidates(cfg):
        if speeds:
            left = budget_seconds(cfg.budget) - (time.time() - started)
            ratio = MIN_COST_RATIO.get(net, min(MIN_COST_RATIO.values()))
            last = {k: v / ratio for k, v in last.items() if k != "architecture"}
            timed = options(cfg, left, speeds, rows, holdout_rows, test_rows, workers, speedup, epochs)
            hoped = options(cfg, left, {net: last}, rows, holdout_rows, test_rows, workers, speedup, epochs)
            if timed and (not hoped or _rank(hoped[0]) >= _rank(timed[0])):
                not_timed.append(net)
                continue
        speeds[net] = last = measure(cfg, pixels, labels, net)
    seconds_left = budget_seconds(cfg.budget) - (time.time() - started)
    the_plan = choose(cfg, seconds_left, speeds, rows, holdout_rows, test_rows, workers, speedup, epochs)
    return {**the_plan, "not_timed": not_timed}


def choose(cfg: TrainConfig, seconds_left: float, speeds: dict, rows: int, holdout_rows: int, test_rows: int,
           workers: list[int], speedup: dict, epochs: int = 0) -> dict:
    """The best of `options` (at least one member of one epoch on the fastest net), with the runner-up and others."""
    ranked = options(cfg, seconds_left, speeds, rows, holdout_rows, test_rows, workers, speedup, epochs)
    if not ranked:  # not even one epoch fits: train one anyway, on the fastest net
        net = max(speeds, key=lambda n: speeds[n]["train_images_per_second"])
        one_pass, check, member = _seconds(cfg, speeds[net], 1, 1.0, rows, holdout_rows, test_rows)
        epoch_rows = cfg.epoch_rows if epochs else _epoch_rows(0, rows)
        images = epoch_images(dataclasses.replace(cfg, epoch_rows=epoch_rows), rows)
        ranked = [{**_option_for(net, 1, 1, epochs or 1, one_pass * images / rows + check, member, images,
                                 epoch_rows), "too_short": True}]
    best = dict(ranked[0])
    best.update(budget_seconds=budget_seconds(cfg.budget), seconds_left=round(seconds_left, 1), speeds=speeds,
                parallel_speedup=speedup, runner_up=runner_up(ranked), alternatives=ranked[1:6],
                **schedule(cfg, best["epochs"], best["epoch_rows"], rows),
                **{k: v for k, v in speeds[best["architecture"]].items() if k != "architecture"})
    return best


def schedule(cfg: TrainConfig, epochs: int, epoch_rows: int, rows: int) -> dict:
    """Plateau patience and warm-up for a plan of `epochs` epochs of `epoch_rows` images (0: a pass of `rows`)."""
    images = epoch_images(dataclasses.replace(cfg, epoch_rows=epoch_rows), rows)
    return {"plateau_patience": replan.plateau_patience(epochs),
            # warm up over as many images as `warmup_epochs` passes (at least one epoch if any)
            "warmup_epochs": max(min(cfg.warmup_epochs, 1), round(cfg.warmup_epochs * rows / images))}


def as_planned(cfg: TrainConfig, passes: float, rows: int) -> dict:
    """Epochs, images per epoch, patience and warm-up of a run of `passes` passes over `rows`, as a budget plans it
    (`make bench ONLY=table` trains its points so)."""
    epoch_rows = _epoch_rows(passes, rows)
    epochs = max(1, round(passes * rows / epoch_images(dataclasses.replace(cfg, epoch_rows=epoch_rows), rows)))
    return {"epochs": epochs, "epoch_rows": epoch_rows, **schedule(cfg, epochs, epoch_rows, rows)}


def describe(the_plan: dict) -> str:
    """The plan in one line: what was measured, what it chose and predicts, and the runner-up."""
    speeds = ", ".join(f"{net} {s['train_images_per_second']:,.0f}" for net, s in the_plan["speeds"].items())
    line = (f"this machine: {speeds} img/s training ({the_plan['predict_images_per_second']:,.0f} img/s predicting); "
            f"plan: {_option(the_plan)}, ~{the_plan['planned_seconds'] / 60:.1f} min of the "
            f"{the_plan['seconds_left'] / 60:.1f} min left in the {_budget_text(the_plan)} budget")
    if the_plan.get("runner_up"):
        line += f"; runner-up: {_option(the_plan['runner_up'])}"
    if the_plan.get("not_timed"):
        line += f"; not timed, as they cannot win in this time: {', '.join(the_plan['not_timed'])}"
    return line


def _option(option: dict) -> str:
    at_once = f", {option['jobs']} at a time ({option['threads']} thread(s) each)" if option["jobs"] > 1 else ""
    accuracy = option["predicted_accuracy"]
    predicted = f", predicted test accuracy {accuracy:.2%}" if accuracy is not None else ""
    each = option["images"] // (option["members"] * option["epochs"])
    epochs = f"{option['epochs']} epochs" + (f" ({each:,} images each)" if option.get("epoch_rows") else "")
    return f"{option['members']} member(s) x {epochs} of {option['architecture']}{at_once}{predicted}"


def _budget_text(the_plan: dict) -> str:
    seconds = the_plan["budget_seconds"]
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def fit_to_budget(cfg: TrainConfig, pixels, labels, test_rows: int, started: float, jobs="auto") -> tuple:
    """`cfg` with net, members, epochs and plateau patience planned for its budget (from `started`), and the plan."""
    the_plan = make_plan(cfg, pixels, labels, test_rows, started, jobs)
    log.info(describe(the_plan))
    if the_plan.get("too_short"):
        log.warning(f"warning: the budget is too short for even one epoch here "
                    f"(~{the_plan['epoch_seconds']:.0f} s each); training one anyway")
    epochs = most_epochs(the_plan["epochs"], the_plan["epoch_rows"])
    cfg = dataclasses.replace(cfg, members=the_plan["members"], epochs=epochs,
                              epoch_rows=the_plan["epoch_rows"], architectures=(the_plan["architecture"],),
                              plateau_patience=the_plan["plateau_patience"], warmup_epochs=the_plan["warmup_epochs"])
    return cfg, the_plan


def most_epochs(planned: int, epoch_rows: int) -> int:
    """The epochs a budgeted member may train if its share of the budget lasts: FILL_FACTOR x the plan's, but no
    more than MAX_EPOCHS passes where the plan has whole passes (past them the table adds members, not epochs)."""
    most = max(planned + 1, round(planned * FILL_FACTOR))
    return most if epoch_rows else max(planned, min(most, MAX_EPOCHS))


def plan_more_members(cfg: TrainConfig, budget: str, pixels, labels, test_rows: int, started: float,
                      jobs="auto") -> dict:
    """How many more members of the run's net and `cfg.epochs` epochs fit in `budget` from `started` (at least one)."""
    net = cfg.architectures[cfg.members % len(cfg.architectures)]  # the first new member's
    grown = dataclasses.replace(cfg, budget=budget, architectures=(net,))
    the_plan = make_plan(grown, pixels, labels, test_rows, started, jobs, epochs=cfg.epochs)
    log.info(f"this machine: {the_plan['train_images_per_second']:,.0f} img/s training; plan: {the_plan['members']} "
             f"more member(s) x {cfg.epochs} epochs, ~{the_plan['planned_seconds'] / 60:.1f} min of the "
             f"{the_plan['seconds_left'] / 60:.1f} min left in the {budget} budget")
    return the_plan


def plan_table_text(the_plan: dict) -> str:
    """`digits plan`: the speeds measured, then the chosen plan and the next best, one line each."""
    lines = [f"{net}: {s['train_images_per_second']:,.0f} img/s training, {s['predict_images_per_second']:,.0f} "
             f"img/s predicting (one member on every core)" for net, s in the_plan["speeds"].items()]
    faster = {net: x for net, x in the_plan["parallel_speedup"].items() if x != 1.0}
    if faster:
        lines.append("members at once train faster in total than one, by (plan_table): "
                     + ", ".join(f"{net} {x:.2f}x" for net, x in faster.items()))
    if the_plan.get("not_timed"):
        lines.append(f"not timed, as they cannot win in this time: {', '.join(the_plan['not_timed'])}")
    lines.append(f"budget: {_budget_text(the_plan)}, {the_plan['seconds_left'] / 60:.1f} min left after timing")
    for label, option in [("plan", the_plan), *(("or", o) for o in the_plan["alternatives"])]:
        lines.append(f"{label:>4}: {_option(option)}, ~{option['planned_seconds'] / 60:.1f} min")
    return "\n".join(lines)
