"""The run's split of the labelled rows, and the out-of-fold (OOF) scores it gives.

holdout "shared": one stratified holdout; every member trains on the other rows and is scored on it, and so is the
ensemble. holdout "folds": the rows fall into K = int(1 / holdout_fraction) stratified folds, fixed when the run
starts; member i trains on all rows but fold i mod K and is scored on that fold. Each row's probabilities averaged
over the members that held it out are its OOF probabilities, and their accuracy is a cross-validation (CV) score:
of a member, not of the ensemble, since a row is only predicted by members that never trained on it.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, data, runs
from .config import TrainConfig


def create(run_dir: Path, cfg: TrainConfig, pixels: np.ndarray, labels: np.ndarray):
    """Draw the run's split and save it (holdout.npz) with the labels and pixels of every row it scores."""
    target = Path(run_dir) / runs.HOLDOUT_FILE
    if cfg.holdout == "shared":
        train_index, holdout_index = data.split_holdout(labels, cfg.holdout_fraction, cfg.seed)
        atomic.save_npz(target, train_index=train_index, holdout_index=holdout_index, labels=labels[holdout_index],
                        pixels=pixels[holdout_index])
    else:
        atomic.save_npz(target, fold=data.split_folds(labels, cfg.holdout_fraction, cfg.seed), labels=labels,
                        pixels=pixels)


@dataclass(frozen=True)
class Split:
    """The rows a run scores (train.csv row numbers, sorted), their labels and pixels, and who holds each out."""

    rows: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray
    fold: np.ndarray | None  # each scored row's fold; None: one holdout shared by every member
    train_index: np.ndarray | None  # shared: the rows every member trains on

    @property
    def folds(self) -> int:
        """K, or 0 for a shared holdout."""
        return 0 if self.fold is None else int(self.fold.max()) + 1

    @property
    def labelled_rows(self) -> int:
        return len(self.rows) + (0 if self.train_index is None else len(self.train_index))

    def held_out(self, index: int) -> np.ndarray:
        """Positions (in `rows`) of the rows member `index` is scored on and never trains on."""
        if self.fold is None:
            return np.arange(len(self.rows))
        return np.flatnonzero(self.fold == index % self.folds)

    def member_rows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, holdout rows) of member `index`, as train.csv row numbers."""
        if self.fold is None:
            return self.train_index, self.rows
        held = self.fold == index % self.folds
        return self.rows[~held], self.rows[held]

    def same_as(self, other: "Split") -> bool:
        """Both split the same rows the same way (so their members' scores can be pooled)."""
        return (np.array_equal(self.rows, other.rows) and (self.fold is None) == (other.fold is None)
                and (self.fold is None or np.array_equal(self.fold, other.fold))
                and (self.train_index is None or np.array_equal(self.train_index, other.train_index)))


def load(run_dir: Path) -> Split:
    """The split saved in the run folder."""
    saved = np.load(Path(run_dir) / runs.HOLDOUT_FILE)
    labels, pixels = saved["labels"].astype(np.int64), saved["pixels"]
    if "fold" in saved:
        return Split(np.arange(len(labels)), labels, pixels, saved["fold"], None)
    return Split(saved["holdout_index"], labels, pixels, None, saved["train_index"])


def out_of_fold(split: Split, held_out_probs: list[tuple[int, np.ndarray]]) -> dict:
    """Each scored row's probabilities averaged over the members that held it out ((member index, its probabilities
    on its held-out rows) pairs); only rows some member held out: their positions, probabilities and member counts."""
    total = np.zeros((len(split.rows), 10), np.float64)
    count = np.zeros(len(split.rows), np.int64)
    for index, probs in held_out_probs:
        held = split.held_out(index)
        total[held] += probs
        count[held] += 1
    covered = np.flatnonzero(count)
    return {"position": covered, "probs": (total[covered] / count[covered, None]).astype(np.float32),
            "members": count[covered]}


def score(split: Split, oof: dict, members: list[int]) -> dict:
    """The CV entry of metrics.json: what it scores, its accuracy, the rows it covers and its standard error."""
    labels = split.labels[oof["position"]]
    rows = len(labels)
    accuracy = float(np.mean(oof["probs"].argmax(1) == labels)) if rows else None
    return {
        "kind": "out-of-fold" if split.fold is not None else "holdout",
        "accuracy": accuracy,
        "rows": rows,
        "labelled_rows": split.labelled_rows,
        "standard_error": math.sqrt(accuracy * (1 - accuracy) / rows) if rows else None,
        "members": list(members),
        "folds": split.folds,
    }


def describe(cv: dict) -> str:
    """The CV entry in words, saying what it estimates."""
    if not cv["rows"]:
        return "no CV: none of these members is scored (second-round pseudo-label members are not)"
    if cv["kind"] == "holdout":
        return (f"holdout accuracy {cv['accuracy']:.4f} +- {cv['standard_error']:.4f} (the ensemble, on one holdout "
                f"of {cv['rows']:,} rows)")
    share = "all" if cv["rows"] == cv["labelled_rows"] else f"{cv['rows']:,} of"
    return (f"CV {cv['accuracy']:.4f} +- {cv['standard_error']:.4f} (out-of-fold on {share} {cv['labelled_rows']:,} "
            f"labelled rows, {len(cv['members'])} member(s) in {cv['folds']} folds: it estimates one member, "
            "not the ensemble)")


def save_oof(target: Path, split: Split, oof: dict):
    """oof.npz: the rows scored (train.csv row numbers), their labels, OOF probabilities and member counts."""
    position = oof["position"]
    atomic.save_npz(target, row=split.rows[position], label=split.labels[position], probs=oof["probs"],
                    members=oof["members"])
