"""`make bench ONLY=table`: test accuracy by net and epochs, and the ensemble gain, for the budget planner.

Each point trains two members of one net for E passes over the train rows, in the epochs, plateau patience and
warm-up a budget plans for E passes (budget.as_planned: shorter epochs below MIN_CHECKS passes), on the Kaggle
layout (38,640 train rows after the 8% holdout), and scores them on the 28,000 answers.
Accuracy is a property of the recipe, not of the CPU, so one class measures it; the planner times the speeds live.
The table is written as a Python module, src/digits/plan_table.py, so the Kaggle kernel carries it too.
"""

import argparse
import json
import os
import pprint
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from digits import atomic, runs, split
from digits.config import PROJECT_ROOT, Paths

TABLE_MODULE = PROJECT_ROOT / "src" / "digits" / "plan_table.py"
# net -> epochs measured; each point is 2 members (their mean is the single-member figure, their average the pair's)
POINTS = {
    "kaggle-rmsprop": (4, 12, 24),
    "lite": (4, 12, 24),
    "strong": (4, 12, 24),
}
SMOKE_POINTS = {"lite": (1,)}


def member_accuracies(run_dir: Path, answers: np.ndarray) -> tuple[list[float], float]:
    """Each member's test accuracy, and that of their averaged probabilities."""
    probs = [np.load(p) for p in sorted(run_dir.glob(f"members/*/{runs.TEST_PROBS_FILE}"))]
    singles = [float(np.mean(p.argmax(1) == answers)) for p in probs]
    return singles, float(np.mean(np.mean(probs, axis=0).argmax(1) == answers))


def parse_points(text: str) -> dict:
    """`net:epochs,...` (from `--points`) as {net: (epochs, ...)}, each a point of POINTS."""
    points = {}
    for item in text.split(","):
        net, _, epochs = item.partition(":")
        if not epochs.isdigit() or int(epochs) not in POINTS.get(net, ()):
            raise ValueError(f"--points: {item!r} is not one of the table's points (net:epochs, from {POINTS})")
        points[net] = (*points.get(net, ()), int(epochs))
    return points


def in_table_order(points: list) -> list:
    """Points sorted as POINTS lists them (nets cheapest first, then epochs); nets since deleted last."""
    order = list(POINTS)
    return sorted(points, key=lambda p: (order.index(p["architecture"]) if p["architecture"] in order else len(order),
                                         p["epochs"]))


def measure(paths: Paths, train, smoke: bool, log=print, points: dict | None = None) -> dict:
    """Train every point (or those of `points`) with `train(paths, arch, epochs)` (-> run folder) and score it."""
    answers = pd.read_csv(paths.answers_csv)["Label"].to_numpy()
    found = []
    for arch, epoch_list in (SMOKE_POINTS if smoke else points or POINTS).items():
        for epochs in epoch_list:
            started = time.perf_counter()
            run_dir = train(paths, arch, epochs)
            singles, pair = member_accuracies(run_dir, answers[: len(np.load(next(run_dir.glob(
                f"members/*/{runs.TEST_PROBS_FILE}"))))])
            found.append({"architecture": arch, "epochs": epochs, "members": singles, "ensemble_of_2": pair,
                           "seconds": round(time.perf_counter() - started, 1)})
            log(f"[table] {arch} x {epochs} epochs: members {', '.join(f'{a:.2%}' for a in singles)}, "
                f"pair {pair:.2%}")
    train_rows = len(split.load(run_dir).member_rows(0)[0])
    return {"points": found, "train_rows": int(train_rows)}


def write_module(figures: dict, speedups: dict, date: str, path: Path = TABLE_MODULE):
    """The planner's table as a Python module: per net, (epochs, mean single test accuracy); the pair's gain; per
    compute precision and net, the speedup of members at once (`parallel_speedup`)."""
    accuracy, errors, gains = {}, [], []
    for point in (p for p in figures["points"] if p["architecture"] in POINTS):  # nets since deleted drop out
        mean = float(np.mean(point["members"]))
        accuracy.setdefault(point["architecture"], []).append((point["epochs"], round(mean, 5)))
        errors.append(1 - mean)
        gains.append(max(point["ensemble_of_2"] - mean, 1e-5))
    power, log_c = np.polyfit(np.log(errors), np.log(gains), 1)  # gain = c * error ** power, least squares in logs
    parallel = {precision: {net: round(f["speedup"], 3) for net, f in nets.items()}
                for precision, nets in speedups.items()}
    text = (f'"""Written by `make bench ONLY=table` on {date} (benchmarks/accuracy_table.py): do not edit.\n\n'
            "Test accuracy of one member by net and epochs (Kaggle layout, scored on the 28,000 answers); what\n"
            "averaging two members adds, as PAIR_GAIN x (one member's error rate) ** PAIR_GAIN_POWER (fitted over\n"
            "the points: weaker members gain more); and how much faster members train at once, per precision.\n"
            '"""\n\n'
            f"TRAIN_ROWS = {figures['train_rows']}\n"
            f"ACCURACY = {pprint.pformat(accuracy, width=110, sort_dicts=False)}\n"
            f"PAIR_GAIN, PAIR_GAIN_POWER = {round(float(np.exp(log_c)), 4)}, {round(float(power), 3)}\n"
            "# per compute precision and net: total training speed of one single-thread member per core over one\n"
            "# member on every core (a net not timed takes the least of the others)\n"
            f"PARALLEL_SPEEDUP = {pprint.pformat(parallel, width=110)}\n")
    atomic.write_text(path, text)




def _probe_command(net: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.accuracy_table", "--probe", net, "--threads", str(threads)]


def parallel_speedup(env: dict, nets=("strong", "lite"), cores: int = 0) -> dict:
    """Per net: training img/s of one member on every core, and of one single-thread member per core side by side."""
    cores = cores or os.cpu_count() or 1
    figures = {}
    for net in nets:
        alone = _run_probes([_probe_command(net, 0)], env)
        together = _run_probes([_probe_command(net, 1)] * cores, env)
        figures[net] = {"one_member": alone[0], "members_at_once": together,
                        "speedup": round(sum(together) / alone[0], 3)}
    return figures


def _run_probes(commands: list, env: dict) -> list[float]:
    """Start the probes at once and return each one's training img/s."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env={**os.environ, **env})
             for c in commands]
    return [float(json.loads(p.communicate()[0].strip().splitlines()[-1])["train_images_per_second"]) for p in procs]


def _probe(net: str, threads: int):
    """Time `net` the way the planner does (twice, so that side-by-side probes overlap); print the second."""
    from digits import budget, member, mnist
    from digits.config import TrainConfig

    images, labels, _, _ = mnist.load_all(mnist.fetch_idx(mnist.default_cache_dir()))
    cfg = TrainConfig()
    if threads:
        member.setup_tensorflow(cfg, cfg.seed, threads)
    pixels = images.reshape(len(images), -1)[:20_000]
    budget.measure(cfg, pixels, labels[:20_000], net)
    print(json.dumps(budget.measure(cfg, pixels, labels[:20_000], net)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    _probe(args.probe, args.threads)
