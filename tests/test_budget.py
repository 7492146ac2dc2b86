"""The time budget: plan from a measured speed, stop within the budget; progress lines, TensorBoard, a quiet start."""

import json
import logging
import time

import numpy as np
import pytest

from conftest import path_args, paths_under, run_cli
from digits import budget
from digits.config import budget_seconds, load_config
from digits.errors import InputError

BUDGET_S = 60
TOLERANCE_S = 10  # Python's own start-up before the clock starts, and the last epoch's timing noise


def test_a_budgeted_run_plans_from_measured_speed_and_ends_within_it(small_data, tmp_path):
    paths = paths_under(tmp_path)
    started = time.time()
    result = run_cli("train", "--config", "tiny", "--budget", f"{BUDGET_S}s", "--set", "epochs=3",
                     *path_args(paths), "--data-dir", small_data, check=True)
    elapsed = time.time() - started
    assert elapsed <= BUDGET_S + TOLERANCE_S, f"took {elapsed:.0f} s for a {BUDGET_S} s budget"
    run_dir = next(paths.models_dir.glob("tiny-*"))
    plan = json.loads((run_dir / "manifest.json").read_text())["budget_plan"]
    assert plan["train_images_per_second"] > 0 and plan["predict_images_per_second"] > 0
    assert plan["budget_seconds"] == BUDGET_S
    assert plan["planned_seconds"] <= BUDGET_S
    assert plan["members"] * plan["epochs"] >= 2, "a minute buys more than one epoch of lenet on 2,000 rows"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["members"], config["epochs"]) == (plan["members"], plan["epochs"])
    first = result.stdout.splitlines()[0]
    assert first.startswith("this machine: ") and f"plan: {plan['members']} member(s) x {plan['epochs']}" in first
    epoch_lines = [line for line in result.stdout.splitlines() if " epoch " in line and "img/s" in line]
    assert epoch_lines and epoch_lines[0].startswith(f"member 1/{plan['members']} epoch 1/{plan['epochs']}: ")
    assert all("run ETA" in line for line in epoch_lines)


def _speed(train, predict=None):
    return {"architecture": "strong", "train_images_per_second": train,
            "predict_images_per_second": predict or 4 * train}


def test_a_faster_machine_gets_more_members_or_epochs_in_the_same_time():
    cfg = load_config("quick")
    slow = budget.plan(cfg, 540, _speed(600), 38_640, 3_360, 28_000)
    fast = budget.plan(cfg, 540, _speed(2_500), 38_640, 3_360, 28_000)
    assert slow["members"] * slow["epochs"] < fast["members"] * fast["epochs"]
    for plan in (slow, fast):
        assert plan["planned_seconds"] <= 540
        assert 1 <= plan["epochs"] <= 2 * cfg.epochs and 1 <= plan["members"] <= budget.MAX_MEMBERS


def test_a_budget_too_short_for_one_epoch_still_trains_one():
    plan = budget.plan(load_config("quick"), 30, _speed(100), 38_640, 3_360, 28_000)
    assert (plan["members"], plan["epochs"]) == (1, 1)
    assert plan["planned_seconds"] > 30


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("90", 90), ("1.5h", 5400), ("", 0)])
def test_budget_durations(text, seconds):
    assert budget_seconds(text) == seconds


def test_a_bad_budget_names_the_key():
    with pytest.raises(InputError, match="key 'budget' must be a duration"):
        load_config("quick", {"budget": "ten minutes"})


def test_progress_draws_a_bar_on_a_terminal(capsys, caplog):
    import keras

    from digits.progress import Progress

    caplog.set_level(logging.INFO, logger="digits")

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    bar = Progress("member 1/2", 640, 32, 2, images_after=1280, terminal=True)
    slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: time.sleep(0.03))  # lets tqdm redraw
    model.fit(np.zeros((640, 4)), np.zeros((640, 2)), batch_size=32, epochs=2, verbose=0, callbacks=[slow, bar])
    drawn = capsys.readouterr().err
    assert "member 1/2 epoch 2/2" in drawn and "img/s" in drawn and "run ETA" in drawn
    lines = [record.getMessage() for record in caplog.records if record.name == "digits.progress"]
    assert len(lines) == 2 and lines[1].startswith("member 1/2 epoch 2/2: ") and "run ETA" in lines[1]


def test_a_run_writes_tensorboard_events_and_hides_tensorflow_noise(trained_run):
    paths, run_dir = trained_run
    assert list((run_dir / "members" / "m00" / "tensorboard").rglob("*tfevents*"))
    result = run_cli("describe", "--config", "tiny")  # imports TensorFlow and builds the nets
    assert result.returncode == 0
    for noise in ("oneDNN custom operations", "cuda", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr
