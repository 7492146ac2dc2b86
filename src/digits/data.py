"""Read and check the competition CSVs, turn pixels into images, split off the holdout."""

import csv
import hashlib
import io
import math
import re
import warnings
import zipfile
import zlib
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
                raise InputError(f"{self.name}: file not found (expected a CSV file)")
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except _ZIP_ERRORS as err:
            raise _unreadable_zip(self.path, Path(self.member).name, err) from None


# What reading a truncated or corrupt zip raises: a bad directory, a bad CRC, bad deflate data, EOF.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, NotImplementedError,
               RuntimeError)


def _unreadable_zip(archive: Path, filename: str, err: Exception) -> InputError:
    return InputError(f"{archive}: expected a zip file holding {filename}, got one that cannot be read "
                      f"(truncated or corrupt?): {' '.join(str(err).split())}")


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
        f"{plain}: file not found (expected {filename}, {filename}.zip or {COMPETITION_ZIP} in {data_dir}); "
        "run `make download` (Kaggle) or `make download SOURCE=mnist` (offline MNIST)"
    )


def _zip_member(archive: Path, filename: str) -> str:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except _ZIP_ERRORS as err:
        raise _unreadable_zip(archive, filename, err) from None
    for name in names:
        if Path(name).name == filename:
            return name
    raise InputError(f"{archive}: expected {filename} inside the zip, got only: {', '.join(names) or 'nothing'}")


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


def fold_count(fraction: float) -> int:
    """K, the folds of a `fraction` holdout: int(1 / fraction), so each fold holds at least that share (12 at 8%)."""
    return int(1 / fraction + 1e-9)


def split_folds(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Each row's fold (0..K-1, K = fold_count(fraction)): stratified by label, seeded."""
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(labels), np.int8)
    splitter = StratifiedKFold(n_splits=fold_count(fraction), shuffle=True, random_state=seed)
    for number, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[held] = number
    return fold


def check_learnable(name: str, labels: np.ndarray, holdout_fraction: float, allow_missing_digits: bool = False,
                    folds: bool = False):
    """Refuse training rows the recipe cannot learn from, before any model is built (and TensorFlow loads).

    The conditions are scikit-learn's for `split_holdout` (with `folds`, for `split_folds`: K rows of each digit),
    plus every digit 0..9 being present.
    """
    counts = np.bincount(labels, minlength=10)
    absent = [d for d in range(10) if counts[d] == 0]
    if absent and not allow_missing_digits:
        raise InputError(f"{name}: expected rows of every digit 0..9, got no {_digit_list(absent, 'or')} in "
                         f"{len(labels)} rows (a model trained on these rows could never predict them); add rows of "
                         "the missing digits, or train on the digits present with --set allow_missing_digits=true")
    single = [d for d in range(10) if counts[d] == 1]
    if single:
        raise InputError(f"{name}: expected at least 2 rows of each digit (one to train on, one for the stratified "
                         f"holdout), got 1 row of {_digit_list(single, 'and')}; add rows of "
                         f"{'it' if len(single) == 1 else 'them'}")
    classes = 10 - len(absent)
    k = fold_count(holdout_fraction)
    few = [d for d in range(10) if 0 < counts[d] < k]
    if folds and few:
        raise InputError(f"{name}: expected at least {k} rows of each digit (one in each of the {k} stratified folds "
                         f"of holdout_fraction {holdout_fraction:g}), got {_digit_list(few, 'and')} with "
                         f"{', '.join(str(counts[d]) for d in few)} row(s); add rows, or set holdout = \"shared\"")
    if not _splittable(len(labels), holdout_fraction, classes):
        need = next(n for n in range(2 * classes, 2 * classes + 10 ** 7) if _splittable(n, holdout_fraction, classes))
        held = math.ceil(holdout_fraction * len(labels))
        raise InputError(f"{name}: expected at least {need} rows for a stratified holdout of {holdout_fraction:g} "
                         f"(the holdout and the rest must each hold at least {classes} rows, one per digit), got "
                         f"{len(labels)} rows ({held} for the holdout, {len(labels) - held} for training); add rows")


def _splittable(rows: int, fraction: float, classes: int) -> bool:
    """scikit-learn's condition: its holdout of ceil(fraction * rows) rows and the rest each hold `classes` rows."""
    held = math.ceil(fraction * rows)
    return held >= classes and rows - held >= classes


def _digit_list(digits: list[int], last: str) -> str:
    words = [str(d) for d in digits]
    return "digit " + words[0] if len(words) == 1 else "digits " + ", ".join(words[:-1]) + f" {last} " + words[-1]


def read_inputs(data_dir, cache_dir=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Find and check train.csv and test.csv together: (pixels, labels, test pixels, raw SHA-256 by name).

    Decoded copies are cached only once both files passed, so bad input leaves nothing behind.
    """
    sources = {name: find_csv(data_dir, name) for name in ("train.csv", "test.csv")}
    raws = {name: source.read_bytes() for name, source in sources.items()}
    train, train_cache = _decode(sources["train.csv"].name, raws["train.csv"], TRAIN_COLUMNS, cache_dir)
    test, test_cache = _decode(sources["test.csv"].name, raws["test.csv"], PIXEL_COLUMNS, cache_dir)
    for table, cached in ((train, train_cache), (test, test_cache)):
        _save_cache(cached, table)
    return train[:, 1:], train[:, 0], test, {name: sha256_bytes(raw) for name, raw in raws.items()}


def _read_checked(source: CsvSource, columns: list[str], cache_dir) -> np.ndarray:
    """Parse and check one CSV (uint8 table), reusing a decoded copy keyed by the file's SHA-256."""
    table, cached = _decode(source.name, source.read_bytes(), columns, cache_dir)
    _save_cache(cached, table)
    return table


def _decode(name: str, raw: bytes, columns: list[str], cache_dir) -> tuple[np.ndarray, Path | None]:
    """The checked table, and the cache file still to write (None if it was read from the cache)."""
    cached = Path(cache_dir) / f"{sha256_bytes(raw)[:20]}-{len(columns)}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached), None
    return _parse(name, raw, columns), cached


def _save_cache(cached: Path | None, table: np.ndarray):
    if cached is not None:
        atomic.save_npy(cached, table)


def _parse(name: str, raw: bytes, columns: list[str]) -> np.ndarray:
    """Fast path: pandas' C parser reads every cell as uint8 (it refuses anything else) and labels are 0..9.

    Anything else goes to `_parse_slowly`, which finds and names the first bad row.
    """
    text_start = raw[:200_000].decode("utf-8-sig", errors="replace")
    if not text_start.strip():
        raise InputError(f"{name}, row 1: expected a header row {_describe(columns)}, got an empty file")
    raw = _without_trailing_blank_lines(raw)
    _check_header(name, _LINE_BREAK.split(text_start, maxsplit=1)[0], columns)
    try:
        frame = _read_csv(raw, dtype=np.uint8)
    except (ValueError, pd.errors.ParserError):  # a cell not 0..255, a short row (UnicodeDecodeError too)
        return _parse_slowly(name, raw, columns)
    if len(frame) == 0:
        raise InputError(f"{name}, row 2: expected a data row of {len(columns)} values, got end of file "
                         "(the file has only a header)")
    if frame.shape[1] != len(columns) or not isinstance(frame.index, pd.RangeIndex):
        # pandas took a first column with no header as the index: rows have more fields than the header
        return _parse_slowly(name, raw, columns)
    if columns[0] == "label" and frame["label"].max() > 9:
        return _parse_slowly(name, raw, columns)
    return frame.to_numpy()


def _without_trailing_blank_lines(raw: bytes) -> bytes:
    """`raw` ending in one line break: blank lines after the last row are dropped, as pandas drops them."""
    return raw.rstrip() + b"\n"


def _read_csv(raw: bytes, dtype=None) -> pd.DataFrame:
    with warnings.catch_warnings():  # pandas warns on the way to an error we report ourselves
        warnings.simplefilter("ignore")
        return pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", encoding_errors="replace", skip_blank_lines=False,
                           engine="c", dtype=dtype, low_memory=dtype is not None)


def _parse_slowly(name: str, raw: bytes, columns: list[str]) -> np.ndarray:
    """The error path: check each row's field count, then find the first bad value; raise naming it.

    Returns the table only for whole numbers in other spellings (`3.0`, ` 3`), which the fast path refuses.
    """
    lines = _LINE_BREAK.split(raw.decode("utf-8-sig", errors="replace"))
    if lines[-1] == "":
        lines.pop()  # the final newline
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.count(",") + 1
        if fields != len(columns) or not line.strip():
            _check_fields(f"{name}, row {line_no}", line, columns)
    if len(lines) == 1:
        raise InputError(f"{name}, row 2: expected a data row of {len(columns)} values, got end of file "
                         "(the file has only a header)")
    try:
        frame = _read_csv(raw)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"{name}: expected a CSV file, could not parse it: {' '.join(str(err).split())}") from None
    for column in frame.columns:
        if frame[column].dtype.kind not in "iufb":  # text in the column: what isn't a number becomes NaN
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    values = frame.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values > 255) | (values != np.floor(values))
        if columns[0] == "label":
            bad[:, 0] |= values[:, 0] > 9
    if frame.shape != (len(lines) - 1, len(columns)):  # pandas and the lines disagree (quoted fields, say)
        raise InputError(f"{name}: expected {len(lines) - 1} rows of {len(columns)} plain values, pandas read "
                         f"{frame.shape[0]} rows of {frame.shape[1]}")
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        where = f"{name}, row {row + 2}"
        for column, cell in zip(columns, lines[row + 1].split(","), strict=True):
            _check_cell(where, column, _unquote(cell.strip()))
        raise InputError(f"{where}: expected integers 0..255 (labels 0..9), got a value pandas reads otherwise")
    return values.astype(np.uint8)


def _describe(columns: list[str]) -> str:
    return f"'{columns[0]},{columns[1]},...,{columns[-1]}' ({len(columns)} columns)"


def _check_header(name: str, header_line: str, columns: list[str]):
    header = [cell.strip() for cell in next(csv.reader([header_line], skipinitialspace=True), None) or [""]]
    where = f"{name}, row 1 (header)"
    if columns[0] != "label" and header[0] == "label":
        raise InputError(f"{where}, column 1: expected {columns[0]!r}, got 'label' "
                         "(test data must not have a 'label' column)")
    for position, (got, expected) in enumerate(zip(header, columns, strict=False), start=1):
        if got != expected:
            raise InputError(f"{where}, column {position}: expected {expected!r}, got {got!r}")
    if len(header) < len(columns):
        raise InputError(f"{where}, column {len(header) + 1}: expected {columns[len(header)]!r}, got end of row "
                         f"({len(header)} columns, expected {len(columns)})")
    if len(header) > len(columns):
        raise InputError(f"{where}, column {len(columns) + 1}: expected end of row ({len(columns)} columns), "
                         f"got {header[len(columns)]!r}")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as pandas' C parser counts lines (str.splitlines also splits on \f)


def _check_fields(where: str, line: str, columns: list[str]):
    if not line.strip():
        raise InputError(f"{where}: expected {len(columns)} fields (like the header), got an empty line")
    fields = line.count(",") + 1
    if fields < len(columns):
        raise InputError(f"{where}, column {columns[fields]!r}: expected {len(columns)} fields (like the header), "
                         f"got {fields} (the row ends early)")
    if fields > len(columns):
        raise InputError(f"{where}: expected {len(columns)} fields (like the header), got {fields}")


def _unquote(cell: str) -> str:
    """A cell without the double quotes around it, if it has them (`"7"` is 7 to pandas)."""
    return cell[1:-1].strip() if len(cell) >= 2 and cell[0] == cell[-1] == '"' else cell


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _check_cell(where: str, column: str, cell: str):
    limit = 9 if column == "label" else 255
    value = float(cell) if _NUMBER.fullmatch(cell) else None
    if value is None or not 0 <= value <= limit or value != int(value):
        raise InputError(f"{where}, column '{column}': expected an integer 0..{limit}, got {cell!r}")
