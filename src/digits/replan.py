"""Plateau patience for the epochs a member trains: as a budget plans them, and re-planned from a budgeted member's
real seconds per epoch (the plan's speeds are a model; a slow or shared machine trains fewer epochs than planned)."""

import math


def plateau_patience(epochs: int) -> int:
    """ReduceLROnPlateau's patience for a run of `epochs` epochs: about one halving per eighth of the run."""
    return max(1, round(epochs / 8))


def replan(epoch_seconds: float, seconds_left: float, epochs_done: int, most_epochs: int, patience: int,
           at_start_rate: bool = False) -> tuple[int, int]:
    """The epochs a member will really train and its patience, from its real `epoch_seconds` and the `seconds_left` to
    its deadline after `epochs_done` epochs, so that its rate drops before the deadline ends it.

    No epoch starts that would end past the deadline (member.Deadline), nor past `most_epochs`. If they all fit, the
    plan holds and `patience` stays. Else the patience is the planned rule's on the epochs that fit, if shorter; and
    while the rate is still `at_start_rate`, short enough that the checks still followed by an epoch hold two
    patience windows. The patience never grows: a plan's was measured best even where members trained on past it.
    """
    fit = epochs_done + max(0, math.floor(seconds_left / max(epoch_seconds, 1e-9)))
    if fit >= most_epochs:
        return most_epochs, patience
    shorter = min(patience, plateau_patience(fit))
    if at_start_rate:
        shorter = min(shorter, (fit - epochs_done - 1) // 2)
    return fit, max(1, shorter)
