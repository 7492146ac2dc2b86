"""A budgeted member re-plans from its real epoch times, so that ReduceLROnPlateau lowers its rate before its end."""

import json
import logging
import time

import pytest

from digits import member, mnist
from digits.config import load_config

SECONDS = 4.0  # the member's deadline after its first epoch and as long again (the first traces): ~10 epochs here


class _AfterTracing(member.Deadline):
    """The deadline `deadline` seconds after the first epoch, plus as long again as it took (its stop check takes it
    for the next epoch's length): tracing makes it slow, and on a loaded machine very slow."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.deadline += 2 * time.time() - self.began
        super().on_epoch_end(epoch, logs)


def test_a_member_its_deadline_cuts_short_still_ends_at_a_lowered_rate(mnist_idx, tmp_path, monkeypatch, caplog):
    """A plan's patience (40) far past the epochs the deadline allows: the member re-plans after its second epoch and
    ReduceLROnPlateau lowers the rate before the last. The holdout never gains `plateau_min_delta` (1.0), so every
    epoch after the first is a plateau, and the rate drops as soon as the patience lets it."""
    pixels, labels, test_pixels, _ = mnist.load_all(mnist_idx)
    cfg = load_config("tiny", {"members": 1, "epochs": 60, "plateau_patience": 40, "plateau_min_delta": 1.0,
                               "batch_size": 128, "steps_per_execution": 8, "tensorboard": False})
    monkeypatch.setattr(member, "Deadline", _AfterTracing)
    caplog.set_level(logging.INFO, logger="digits")
    result = member.train_member(cfg, 0, pixels[:1000], labels[:1000], pixels[1000:1300], labels[1000:1300],
                                 test_pixels[:100], tmp_path, deadline=SECONDS)
    state = json.loads((tmp_path / "state.json").read_text())
    rates = [epoch["learning_rate"] for epoch in state["history"]]
    assert 4 <= result["epochs_run"] < cfg.epochs and state["stopped"], result
    first = state["replan"][0]
    assert first["after_epoch"] == 2 and first["epochs_fit"] < cfg.epochs and first["patience"] < 40, state["replan"]
    assert rates[1] == pytest.approx(cfg.learning_rate) and rates[-1] < 0.99 * cfg.learning_rate, rates
    assert f"member 1/1: {first['epochs_fit']} epochs fit by its deadline, of 60 at most (" in caplog.text
    assert f"plateau patience 40 -> {first['patience']}" in caplog.text

    plateau = member.keras.callbacks.ReduceLROnPlateau(patience=cfg.plateau_patience)
    member.Deadline(time.time() + 60, "member 1/1", [plateau], cfg.learning_rate, state).on_train_begin()
    assert plateau.patience == state["replan"][-1]["patience"]  # a resumed member keeps its re-planned patience
