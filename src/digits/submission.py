"""Write, check and score `ImageId,Label` submission files."""

from pathlib import Path

import numpy as np

from . import atomic
from .errors import InputError

HEADER = ["ImageId", "Label"]


def write(path, labels: np.ndarray) -> Path:
    """Atomically write labels (test.csv row order) as `ImageId,Label` with ImageId from 1."""
    labels = np.asarray(labels)
    ids = np.arange(1, len(labels) + 1)
    text = "ImageId,Label\n" + "".join(f"{i},{label}\n" for i, label in zip(ids, labels.tolist(), strict=True))
    atomic.write_text(path, text)
    read(path, expected_rows=len(labels))
    return Path(path)


def read(path, expected_rows: int | None = None, expected_from: str = "test.csv") -> np.ndarray:
    """Check a submission (header, ids 1..N in order, labels 0..9, row count) and return its labels.

    `expected_rows` is the row count it must have, one per row of `expected_from` (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a submission CSV 'ImageId,Label')")
    lines = path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines
    if not lines:
        raise InputError(f"{path}, row 1: expected the header 'ImageId,Label', got an empty file")
    header = [cell.strip() for cell in lines[0].split(",")]
    if header != HEADER:
        raise InputError(f"{path}, row 1 (header): expected 'ImageId,Label', got {lines[0]!r}")
    rows = lines[1:]
    count = f"{expected_rows} rows, one per row of {expected_from}"
    if expected_rows is not None and len(rows) > expected_rows:
        raise InputError(f"{path}, row {expected_rows + 2}: expected end of file ({count}), "
                         f"got {len(rows) - expected_rows} more row(s)")
    labels = np.empty(len(rows), dtype=np.int64)
    for offset, line in enumerate(rows):
        row_no, expected_id = offset + 2, offset + 1
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 2:
            raise InputError(f"{path}, row {row_no}: expected 2 fields (ImageId,Label), "
                             f"got {len(cells)}: {line[:80]!r}")
        if cells[0] != str(expected_id):
            raise InputError(f"{path}, row {row_no}, column 'ImageId': expected {expected_id}, got {cells[0]!r}")
        if cells[1] not in _DIGITS:
            raise InputError(f"{path}, row {row_no}, column 'Label': expected a digit 0..9, got {cells[1]!r}")
        labels[offset] = int(cells[1])
    if expected_rows is not None and len(rows) < expected_rows:
        raise InputError(f"{path}, row {len(rows) + 2}: expected ImageId {len(rows) + 1} ({count}), "
                         f"got end of file after {len(rows)} row(s)")
    if not rows:
        raise InputError(f"{path}, row 2: expected a data row 'ImageId,Label', got end of file (header only)")
    return labels


_DIGITS = frozenset(str(d) for d in range(10))


def accuracy(submission_path, answers_path) -> float:
    """Fraction of submission labels equal to the held-back answers."""
    truth = read(answers_path)
    predicted = read(submission_path, expected_rows=len(truth), expected_from=Path(answers_path).name)
    return float(np.mean(predicted == truth))
