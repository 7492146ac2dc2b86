"""Write, check and score `ImageId,Label` submission files."""

from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .errors import InputError

HEADER = ["ImageId", "Label"]


def write(path, labels: np.ndarray) -> Path:
    """Atomically write labels (test.csv row order) as `ImageId,Label` with ImageId from 1."""
    labels = np.asarray(labels)
    ids = np.arange(1, len(labels) + 1)
    text = "ImageId,Label\n" + "".join(f"{i},{label}\n" for i, label in zip(ids, labels.tolist()))
    atomic.write_text(path, text)
    read(path, expected_rows=len(labels))
    return Path(path)


def read(path, expected_rows: int | None = None) -> np.ndarray:
    """Check a submission (header, ids 1..N in order, labels 0..9, row count) and return its labels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    lines = path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    if not lines:
        raise InputError(f"{path}: file is empty (expected header 'ImageId,Label')")
    header = [cell.strip() for cell in lines[0].split(",")]
    if header != HEADER:
        raise InputError(f"{path}, row 1 (header): expected 'ImageId,Label', got {lines[0]!r}")
    rows = lines[1:]
    while rows and not rows[-1].strip():
        rows.pop()
    labels = np.empty(len(rows), dtype=np.int64)
    for offset, line in enumerate(rows):
        row_no, expected_id = offset + 2, offset + 1
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 2:
            raise InputError(f"{path}, row {row_no}: has {len(cells)} fields, expected 2 (ImageId,Label)")
        if cells[0] != str(expected_id):
            raise InputError(f"{path}, row {row_no}, column 'ImageId': expected {expected_id}, got {cells[0]!r}")
        if cells[1] not in {str(d) for d in range(10)}:
            raise InputError(f"{path}, row {row_no}, column 'Label': expected a digit 0..9, got {cells[1]!r}")
        labels[offset] = int(cells[1])
    if expected_rows is not None and len(labels) != expected_rows:
        raise InputError(f"{path}: has {len(labels)} rows, expected {expected_rows} (one per test.csv row)")
    if len(labels) == 0:
        raise InputError(f"{path}: has a header but no rows")
    return labels


def count_rows(csv_path) -> int:
    """Data rows in a CSV with a header (for checking a submission against test.csv)."""
    return len(pd.read_csv(csv_path, usecols=[0]))


def accuracy(submission_path, answers_path) -> float:
    """Fraction of submission labels equal to the held-back answers."""
    truth = read(answers_path)
    predicted = read(submission_path, expected_rows=len(truth))
    return float(np.mean(predicted == truth))
