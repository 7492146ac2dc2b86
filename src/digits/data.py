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
        with atomic.atomic_path(cached) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, table)


def _parse(name: str, raw: bytes, columns: list[str]) -> np.ndarray:
    """Fast path: pandas' C parser reads every column as integers and one min/max check passes.

    Anything else goes to `_diagnose_lines`, which finds the first bad row the slow way.
    """
    text_start = raw[:200_000].decode("utf-8-sig", errors="replace")
    if not text_start.strip():
        raise InputError(f"{name}, row 1: expected a header row {_describe(columns)}, got an empty file")
    _check_header(name, _split_lines(text_start)[0], columns)
    try:
        frame = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", skip_blank_lines=False, engine="c")
    except (ValueError, pd.errors.ParserError) as err:  # UnicodeDecodeError is a ValueError
        _diagnose_lines(name, raw, columns)
        raise InputError(f"{name}: expected a CSV file, could not parse it: {_one_line(err)}") from None
    if len(frame) == 0:
        raise InputError(f"{name}, row 2: expected a data row of {len(columns)} values, got end of file "
                         "(the file has only a header)")
    if frame.shape[1] != len(columns) or not isinstance(frame.index, pd.RangeIndex):
        # pandas takes a first column with no header as the index: some row has more fields than the header
        _diagnose_lines(name, raw, columns)
        raise InputError(f"{name}: expected {len(columns)} fields in every row, some rows have more")
    limit = 9 if columns[0] == "label" else 255
    if all(kind in "iu" for kind in (dtype.kind for dtype in frame.dtypes)):
        values = frame.to_numpy()
        if values.min() >= 0 and values.max() <= 255 and values[:, 0].max() <= limit:
            return values.astype(np.uint8)
        bad = (values < 0) | (values > 255)
        bad[:, 0] |= values[:, 0] > limit
        row = int(np.argmax(bad.any(axis=1)))
        _diagnose_lines(name, raw, columns, only_row=row)
    # Not all integers: empty or non-numeric cells, fractions, short rows, or harmless forms such as `3.0`.
    _diagnose_lines(name, raw, columns)
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 255) | (values != np.floor(values))
    bad[:, 0] |= values[:, 0] > limit
    if bad.any():  # only if pandas and the line-by-line reading disagree (quoted fields, say)
        raise InputError(f"{name}, row {int(np.argmax(bad.any(axis=1))) + 2}: expected integers 0..255 "
                         f"(label 0..9), got a value that is not")
    return values.astype(np.uint8)


def _describe(columns: list[str]) -> str:
    return f"'{columns[0]},{columns[1]},...,{columns[-1]}' ({len(columns)} columns)"


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _split_lines(text: str) -> list[str]:
    """Lines as pandas' C parser counts them (\\n, \\r\\n or \\r), unlike str.splitlines (which also splits on \\f)."""
    return _LINE_BREAK.split(text)


def _check_header(name: str, header_line: str, columns: list[str]):
    header = [cell.strip() for cell in header_line.split(",")]
    where = f"{name}, row 1 (header)"
    if columns[0] != "label" and header[0] == "label":
        raise InputError(f"{where}, column 1: expected {columns[0]!r}, got 'label' "
                         "(test data must not have a 'label' column)")
    for position, (got, expected) in enumerate(zip(header, columns), start=1):
        if got != expected:
            raise InputError(f"{where}, column {position}: expected {expected!r}, got {got!r}")
    if len(header) < len(columns):
        raise InputError(f"{where}, column {len(header) + 1}: expected {columns[len(header)]!r}, got end of row "
                         f"({len(header)} columns, expected {len(columns)}: {_describe(columns)})")
    if len(header) > len(columns):
        raise InputError(f"{where}, column {len(columns) + 1}: expected end of row ({len(columns)} columns: "
                         f"{_describe(columns)}), got {header[len(columns)]!r}")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A whole number 0..255 (leading zeros, `.0` and spaces allowed), as a regex so good rows are checked in C.
_CELL = r" *0*(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.0*)? *"
_GOOD_ROW = re.compile(rf"{_CELL}(?:,{_CELL})*")


def _diagnose_lines(name: str, raw: bytes, columns: list[str], only_row: int | None = None):
    """Find the first bad cell line by line and raise an InputError naming its row and column.

    `only_row` (0-based data row) checks just that row; returns quietly if nothing is wrong.
    """
    lines = _split_lines(raw.decode("utf-8-sig", errors="replace"))
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    numbered = enumerate(lines[1:], start=2)
    if only_row is not None:
        numbered = [(only_row + 2, lines[only_row + 1])] if only_row + 1 < len(lines) else []
    for line_no, line in numbered:
        where = f"{name}, row {line_no}"
        if not line.strip():
            raise InputError(f"{where}: expected {len(columns)} fields (like the header), got an empty line")
        cells = line.split(",")
        if len(cells) < len(columns):
            raise InputError(f"{where}, column {columns[len(cells)]!r}: expected {len(columns)} fields "
                             f"(like the header), got {len(cells)} (the row ends early)")
        if len(cells) > len(columns):
            raise InputError(f"{where}: expected {len(columns)} fields (like the header), got {len(cells)}")
        if _GOOD_ROW.fullmatch(line) and (columns[0] != "label" or float(cells[0]) <= 9):
            continue
        for column, cell in zip(columns, cells):
            _check_cell(where, column, cell.strip())


def _check_cell(where: str, column: str, cell: str):
    limit = 9 if column == "label" else 255
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not np.isfinite(value) or value != int(value) or not 0 <= value <= limit:
        raise InputError(f"{where}, column '{column}': expected an integer 0..{limit}, got {cell!r}")
