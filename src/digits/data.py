"""Read and check the competition CSVs, turn pixels into images, split off the holdout."""

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .errors import InputError

IMAGE_SIDE = 28
PIXEL_COLUMNS = [f"pixel{i}" for i in range(IMAGE_SIDE * IMAGE_SIDE)]
TRAIN_COLUMNS = ["label", *PIXEL_COLUMNS]
COMPETITION_ZIP = "digit-recognizer.zip"


@dataclass(frozen=True)
class CsvSource:
    """A CSV file on disk, or a member of a zip; `name` is what error messages call it."""

    name: str
    path: Path
    member: str | None = None

    def read_bytes(self) -> bytes:
        if self.member is None:
            if not self.path.is_file():
                raise InputError(f"{self.name}: file not found")
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise InputError(f"{self.path}: not a readable zip file (truncated or corrupt?): {err}") from None


def find_csv(data_dir, filename: str) -> CsvSource:
    """Find `filename` in `data_dir`: the CSV itself, `<filename>.zip`, or inside Kaggle's competition zip."""
    data_dir = Path(data_dir)
    plain = data_dir / filename
    if plain.is_file():
        return CsvSource(str(plain), plain)
    for archive in (data_dir / f"{filename}.zip", data_dir / COMPETITION_ZIP):
        if archive.is_file():
            return CsvSource(f"{archive}:{filename}", archive, _zip_member(archive, filename))
    raise InputError(
        f"{plain}: file not found (nor {filename}.zip or {COMPETITION_ZIP} in {data_dir}); "
        "run `make download` (Kaggle) or `make download SOURCE=mnist` (offline MNIST)"
    )


def _zip_member(archive: Path, filename: str) -> str:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise InputError(f"{archive}: not a readable zip file (truncated or corrupt?): {err}") from None
    for name in names:
        if Path(name).name == filename:
            return name
    raise InputError(f"{archive}: has no {filename} (it holds: {', '.join(names) or 'nothing'})")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_train(source: CsvSource, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Return (pixels uint8 (N, 784), labels uint8 (N,)) from a checked `label,pixel0..pixel783` CSV."""
    table = _read_checked(source, TRAIN_COLUMNS, cache_dir)
    return table[:, 1:], table[:, 0]


def read_test(source: CsvSource, cache_dir=None) -> np.ndarray:
    """Return pixels uint8 (N, 784) from a checked `pixel0..pixel783` CSV."""
    return _read_checked(source, PIXEL_COLUMNS, cache_dir)


def to_images(pixels: np.ndarray) -> np.ndarray:
    """Flat 0..255 pixels to float32 images (N, 28, 28, 1) in [0, 1]; the one place this happens."""
    pixels = np.asarray(pixels)
    return (pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1).astype(np.float32)) / np.float32(255.0)


def split_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split into (train indices, holdout indices)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be between 0 and 1, got {fraction}")
    index = np.arange(len(labels))
    train_idx, holdout_idx = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(holdout_idx)


def _read_checked(source: CsvSource, columns: list[str], cache_dir) -> np.ndarray:
    """Parse and check one CSV (uint8 table), reusing a decoded copy keyed by the file's SHA-256."""
    raw = source.read_bytes()
    cached = Path(cache_dir) / f"{sha256_bytes(raw)[:20]}-{len(columns)}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    table = _parse(source.name, raw, columns)
    if cached is not None:
        with atomic.atomic_path(cached) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, table)
    return table


def _parse(name: str, raw: bytes, columns: list[str]) -> np.ndarray:
    text_start = raw[:200_000].decode("utf-8-sig", errors="replace")
    if not text_start.strip():
        raise InputError(f"{name}: file is empty (expected a header row: {_describe(columns)})")
    header = [cell.strip() for cell in text_start.splitlines()[0].split(",")]
    _check_header(name, header, columns)
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), encoding="utf-8-sig", dtype=np.float64, skip_blank_lines=False, engine="c"
        )
    except (ValueError, pd.errors.ParserError) as err:
        _diagnose_lines(name, raw, columns)
        raise InputError(f"{name}: could not be parsed as CSV: {err}") from None
    if len(frame) == 0:
        raise InputError(f"{name}: has a header but no data rows")
    values = frame.to_numpy()
    bad = ~np.isfinite(values) | (values < 0) | (values > 255) | (values != np.floor(values))
    if columns[0] == "label":
        bad[:, 0] |= values[:, 0] > 9
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        _diagnose_lines(name, raw, columns, only_row=row)
        raise InputError(f"{name}, row {row + 2}: bad value")  # unreachable unless lines and pandas disagree
    return values.astype(np.uint8)


def _describe(columns: list[str]) -> str:
    return f"{columns[0]},{columns[1]},...,{columns[-1]} ({len(columns)} columns)"


def _check_header(name: str, header: list[str], columns: list[str]):
    is_train = columns[0] == "label"
    if not is_train and header and header[0] == "label":
        raise InputError(f"{name}, row 1 (header): test data must not have a 'label' column")
    if is_train and header[0] != "label":
        raise InputError(f"{name}, row 1 (header), column 1: expected 'label', got {header[0]!r}")
    for position, (got, expected) in enumerate(zip(header, columns), start=1):
        if got != expected:
            raise InputError(f"{name}, row 1 (header), column {position}: expected {expected!r}, got {got!r}")
    if len(header) != len(columns):
        raise InputError(
            f"{name}, row 1 (header): has {len(header)} columns, expected {len(columns)}: {_describe(columns)}"
        )


def _diagnose_lines(name: str, raw: bytes, columns: list[str], only_row: int | None = None):
    """Find the first bad cell the slow way and raise an InputError naming its row and column."""
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    numbered = enumerate(lines[1:], start=2)
    if only_row is not None:
        numbered = [(only_row + 2, lines[only_row + 1])]
    for line_no, line in numbered:
        if not line.strip():
            raise InputError(f"{name}, row {line_no}: empty row (expected {len(columns)} values)")
        cells = line.split(",")
        if len(cells) != len(columns):
            raise InputError(f"{name}, row {line_no}: has {len(cells)} fields, expected {len(columns)}")
        for column, cell in zip(columns, cells):
            _check_cell(name, line_no, column, cell.strip())


def _check_cell(name: str, line_no: int, column: str, cell: str):
    limit = 9 if column == "label" else 255
    where = f"{name}, row {line_no}, column '{column}'"
    if cell == "":
        raise InputError(f"{where}: empty cell (expected an integer 0..{limit})")
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: expected an integer 0..{limit}, got {cell!r}") from None
    if value != int(value) if np.isfinite(value) else True:
        raise InputError(f"{where}: expected an integer 0..{limit}, got {cell!r} (not a whole number)")
    if not 0 <= value <= limit:
        raise InputError(f"{where}: expected an integer 0..{limit}, got {cell!r} (out of range)")
