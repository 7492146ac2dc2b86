"""Pseudo-labels: a second round of members also learns from the test images the first round's ensemble is sure of.

Kaggle gives every competitor test.csv's 28,000 unlabelled images. With `pseudo_label`, the run's first members
(half, rounded up) train as usual; their averaged test probabilities then label each test image whose top
probability reaches `pseudo_threshold`; the other members train on their train rows plus those images. The holdout
rows and their scores are untouched, and answers.csv is never read. With folds, the run's CV counts the first round
only: the second learned from labels made by members that trained on its held-out fold. The choice is saved once
(pseudo.npz), so a rerun, a resumed member or a grown run trains on the same rows.
"""

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from . import atomic, manifest, runs
from .config import TrainConfig

log = logging.getLogger(__name__)


def first_round(run_dir: Path, cfg: TrainConfig) -> int:
    """How many of the run's members train without pseudo-labels: all of them if `pseudo_label` is off."""
    if not cfg.pseudo_label:
        return cfg.members
    path = Path(run_dir) / runs.PSEUDO_FILE
    if path.is_file():  # fixed when the images were chosen; a grown run adds second-round members
        return int(np.load(path)["first_round"])
    return math.ceil(cfg.members / 2)


def choose(run_dir: Path, cfg: TrainConfig, first: int) -> dict:
    """The test images the first `first` members' averaged probabilities label with at least `pseudo_threshold`,
    saved to pseudo.npz and recorded in the manifest the first time; read back after that."""
    path = Path(run_dir) / runs.PSEUDO_FILE
    if not path.is_file():
        probs = np.mean([np.load(runs.member_dir(run_dir, i) / runs.TEST_PROBS_FILE) for i in range(first)], axis=0,
                        dtype=np.float64)
        index = np.flatnonzero(probs.max(1) >= cfg.pseudo_threshold)
        atomic.save_npz(path, index=index, label=probs.argmax(1)[index].astype(np.int64), first_round=first,
                        threshold=cfg.pseudo_threshold)
        record = {"first_round": first, "threshold": cfg.pseudo_threshold, "test_images": int(len(index)),
                  "test_rows": int(len(probs))}
        found = manifest.read(run_dir)
        found["pseudo_label"] = record
        atomic.write_text(Path(run_dir) / runs.MANIFEST_FILE, json.dumps(found, indent=2))
        log.info(f"pseudo-labels: {len(index):,} of {len(probs):,} test images labelled by the first {first} "
                 f"member(s) with probability >= {cfg.pseudo_threshold}")
    chosen = np.load(path)
    return {"index": chosen["index"], "label": chosen["label"]}


def second_round(cfg: TrainConfig, pixels: np.ndarray, labels: np.ndarray, test_pixels: np.ndarray, rows_of,
                 chosen: dict) -> tuple:
    """(config, pixels, labels, rows_of) for the second round: the chosen test images appended to each member's train
    rows (`rows_of(index)`: its train and holdout rows), and epochs as long as the first round's in images, so that
    each member costs the same time."""
    added = np.arange(len(pixels), len(pixels) + len(chosen["index"]))
    cfg = dataclasses.replace(cfg, epoch_rows=cfg.epoch_rows or len(rows_of(0)[0]))

    def second_rows(index):
        train_index, holdout_index = rows_of(index)
        return np.concatenate([train_index, added]), holdout_index

    return (cfg, np.concatenate([pixels, test_pixels[chosen["index"]]]),
            np.concatenate([labels, chosen["label"].astype(labels.dtype)]), second_rows)
