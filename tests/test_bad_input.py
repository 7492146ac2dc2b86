"""Bad input is caught before any training, named (file, row, column, what was expected), exit code 2, nothing written.

Each case corrupts a copy of small real-MNIST CSVs (the `small_data` fixture: 2,000 train and 500 test rows).
Most cases run in-process through `train.load_inputs`, the function `digits train` checks its data with; a
representative handful run the real `digits train --config tiny` in a subprocess, which must fail without
importing TensorFlow (about half a second, not the several seconds TensorFlow takes to load).
"""

import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import path_args, paths_under, run_cli
from digits import data, train
from digits.errors import InputError

TRAIN, TEST, ZIP = "train.csv", "test.csv", data.COMPETITION_ZIP


@dataclass(frozen=True)
class Case:
    id: str
    corrupt: object  # (data_dir, {"train.csv": text, "test.csv": text}) -> None; edits the copies in data_dir
    expect: str  # the message's start, "{file}, row N, column 'X': expected ...", with {train}/{test}/{zip}/{dir}
    cli: bool = False  # also (only) through the real CLI in a subprocess


def _lines(text: str) -> list[str]:
    return text.split("\n")  # the good files end with a newline: the last item is ""


def _edit(name: str, edit):
    """A corruption that rewrites `name` from its good text with `edit(lines) -> lines`."""
    def corrupt(data_dir: Path, good: dict):
        # surrogateescape: a lone surrogate such as "\udcff" is written as the raw byte 0xff
        (data_dir / name).write_bytes("\n".join(edit(_lines(good[name]))).encode("utf-8", "surrogateescape"))
    return corrupt


def _cell(name: str, row: int, column: str, value: str):
    """Set one cell; `row` as numbered in the file (the header is row 1)."""
    def edit(lines):
        header = lines[0].split(",")
        cells = lines[row - 1].split(",")
        cells[header.index(column)] = value
        lines[row - 1] = ",".join(cells)
        return lines
    return _edit(name, edit)


def _header(name: str, change):
    def edit(lines):
        lines[0] = ",".join(change(lines[0].split(",")))
        return lines
    return _edit(name, edit)


def _every_line(name: str, change):
    """Apply `change(cells) -> cells` to the header and every data row."""
    return _edit(name, lambda lines: [",".join(change(line.split(","))) if line else line for line in lines])


def _swap(cells, a, b):
    i, j = cells.index(a), cells.index(b)
    cells[i], cells[j] = cells[j], cells[i]
    return cells


def _remove(*names):
    def corrupt(data_dir: Path, good: dict):
        for name in names:
            (data_dir / name).unlink()
    return corrupt


def _write(name: str, content: bytes):
    def corrupt(data_dir: Path, good: dict):
        (data_dir / name).write_bytes(content)
    return corrupt


def _zip_instead(members: dict, damage=None):
    """Replace train.csv and test.csv by digit-recognizer.zip holding `members` (name -> good file or bytes)."""
    def corrupt(data_dir: Path, good: dict):
        archive = data_dir / ZIP
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for member, content in members.items():
                zf.writestr(member, good[content].encode() if content in good else content)
        for name in (TRAIN, TEST):
            (data_dir / name).unlink()
        if damage:
            archive.write_bytes(damage(archive.read_bytes()))
    return corrupt


def _flip_middle(raw: bytes) -> bytes:
    """Corrupt compressed bytes in the middle of the first member; the zip's directory stays intact."""
    middle = len(raw) // 4
    return raw[:middle] + bytes(b ^ 0x5A for b in raw[middle:middle + 64]) + raw[middle + 64:]


CELL = "{train}, row {row}, column '{column}': expected an integer 0..255, got {got}"
FIELDS = "{file}, row {row}: expected {n} fields (like the header), got"

CASES = [
    # files
    Case("missing train.csv", _remove(TRAIN),
         "{train}: file not found (expected train.csv, train.csv.zip or digit-recognizer.zip in {dir})", cli=True),
    Case("missing test.csv", _remove(TEST),
         "{test}: file not found (expected test.csv, test.csv.zip or digit-recognizer.zip in {dir})"),
    Case("empty train.csv", _write(TRAIN, b""),
         "{train}, row 1: expected a header row 'label,pixel0,...,pixel783' (785 columns), got an empty file"),
    Case("empty test.csv", _write(TEST, b"\n"),
         "{test}, row 1: expected a header row 'pixel0,pixel1,...,pixel783' (784 columns), got an empty file"),
    Case("header only", _edit(TRAIN, lambda lines: lines[:1] + [""]),
         "{train}, row 2: expected a data row of 785 values, got end of file (the file has only a header)"),
    Case("test.csv header only, no newline", _edit(TEST, lambda lines: lines[:1]),
         "{test}, row 2: expected a data row of 784 values, got end of file"),
    # header
    Case("header without label", _header(TRAIN, lambda cells: cells[1:]),
         "{train}, row 1 (header), column 1: expected 'label', got 'pixel0'"),
    Case("label renamed", _header(TRAIN, lambda cells: ["digit", *cells[1:]]),
         "{train}, row 1 (header), column 1: expected 'label', got 'digit'"),
    Case("pixel column missing", _header(TRAIN, lambda cells: [c for c in cells if c != "pixel5"]),
         "{train}, row 1 (header), column 7: expected 'pixel5', got 'pixel6'"),
    Case("pixel column extra", _every_line(TRAIN, lambda cells: [*cells[:12], "0" if cells[0] != "label" else
                                                                 "extra", *cells[12:]]),
         "{train}, row 1 (header), column 13: expected 'pixel11', got 'extra'"),
    Case("pixel column misnamed", _header(TRAIN, lambda cells: [c.replace("pixel12", "Pixel12") for c in cells]),
         "{train}, row 1 (header), column 14: expected 'pixel12', got 'Pixel12'", cli=True),
    Case("pixel columns out of order", _header(TEST, lambda cells: _swap(cells, "pixel3", "pixel4")),
         "{test}, row 1 (header), column 4: expected 'pixel3', got 'pixel4'"),
    Case("783 pixel columns", _every_line(TRAIN, lambda cells: cells[:-1]),
         "{train}, row 1 (header), column 785: expected 'pixel783', got end of row (784 columns, expected 785)"),
    Case("785 pixel columns", _every_line(TEST, lambda cells: [*cells, "pixel784" if cells[0] == "pixel0" else "0"]),
         "{test}, row 1 (header), column 785: expected end of row (784 columns), got 'pixel784'"),
    Case("test.csv with a label column", _every_line(TEST, lambda cells: ["label" if cells[0] == "pixel0" else "3",
                                                                         *cells]),
         "{test}, row 1 (header), column 1: expected 'pixel0', got 'label' (test data must not have a 'label' "
         "column)", cli=True),
    # cells
    Case("non-numeric cell", _cell(TRAIN, 5, "pixel12", "abc"),
         CELL.format(train="{train}", row=5, column="pixel12", got="'abc'")),
    Case("empty cell", _cell(TRAIN, 7, "pixel300", ""),
         CELL.format(train="{train}", row=7, column="pixel300", got="''")),
    Case("NaN cell", _cell(TRAIN, 8, "pixel301", "nan"),
         CELL.format(train="{train}", row=8, column="pixel301", got="'nan'")),
    Case("negative pixel", _cell(TRAIN, 9, "pixel400", "-1"),
         CELL.format(train="{train}", row=9, column="pixel400", got="'-1'")),
    Case("pixel over 255", _cell(TRAIN, 2001, "pixel500", "256"),
         CELL.format(train="{train}", row=2001, column="pixel500", got="'256'")),
    Case("fractional pixel", _cell(TRAIN, 13, "pixel600", "0.5"),
         CELL.format(train="{train}", row=13, column="pixel600", got="'0.5'"), cli=True),
    Case("non-UTF-8 byte", _cell(TRAIN, 14, "pixel1", "\udcff"),  # written as the raw byte 0xff
         CELL.format(train="{train}", row=14, column="pixel1", got="'\ufffd'")),
    Case("label 10", _cell(TRAIN, 15, "label", "10"),
         "{train}, row 15, column 'label': expected an integer 0..9, got '10'"),
    Case("label -1", _cell(TRAIN, 16, "label", "-1"),
         "{train}, row 16, column 'label': expected an integer 0..9, got '-1'"),
    Case("bad cell in test.csv", _cell(TEST, 501, "pixel783", "x"),
         "{test}, row 501, column 'pixel783': expected an integer 0..255, got 'x'"),
    # rows
    Case("row with fewer fields", _edit(TRAIN, lambda lines: [*lines[:16], lines[16].rsplit(",", 1)[0],
                                                               *lines[17:]]),
         FIELDS.format(file="{train}", row=17, n=785).replace("row 17:", "row 17, column 'pixel783':") + " 784",
         cli=True),
    Case("row with more fields", _edit(TRAIN, lambda lines: [*lines[:18], lines[18] + ",0", *lines[19:]]),
         FIELDS.format(file="{train}", row=19, n=785) + " 786"),
    Case("every row one field more", _edit(TRAIN, lambda lines: [lines[0]] + [f"{x},0" if x else x
                                                                               for x in lines[1:]]),
         FIELDS.format(file="{train}", row=2, n=785) + " 786"),
    Case("blank line", _edit(TRAIN, lambda lines: [*lines[:20], "", *lines[20:]]),
         FIELDS.format(file="{train}", row=21, n=785) + " an empty line"),
    Case("blank line mid-file, blank lines at the end", _edit(TRAIN, lambda lines: [*lines[:30], "", *lines[30:],
                                                                                    "", ""]),
         FIELDS.format(file="{train}", row=31, n=785) + " an empty line"),
    Case("quoted bad cell", _cell(TRAIN, 12, "pixel7", '"x"'),
         CELL.format(train="{train}", row=12, column="pixel7", got="'x'")),
    Case("file cut off mid-row", _edit(TRAIN, lambda lines: [*lines[:-2], lines[-2][:100]]),
         "{train}, row 2001, column 'pixel"),
    # zips
    Case("zip without the CSVs", _zip_instead({"sample_submission.csv": b"ImageId,Label\n1,0\n"}),
         "{zip}: expected train.csv inside the zip, got only: sample_submission.csv"),
    Case("zip with train.csv only", _zip_instead({TRAIN: TRAIN}),
         "{zip}: expected test.csv inside the zip, got only: train.csv"),
    Case("truncated zip", _zip_instead({TRAIN: TRAIN, TEST: TEST}, lambda raw: raw[: len(raw) // 2]),
         "{zip}: expected a zip file holding train.csv, got one that cannot be read (truncated or corrupt?)",
         cli=True),
    Case("corrupt zip data", _zip_instead({TRAIN: TRAIN, TEST: TEST}, _flip_middle),
         "{zip}: expected a zip file holding train.csv, got one that cannot be read (truncated or corrupt?)"),
]


@pytest.fixture(scope="module")
def good_text(small_data) -> dict:
    return {name: (small_data / name).read_text() for name in (TRAIN, TEST)}


def _make_data(small_data: Path, root: Path, good: dict, corrupt) -> Path:
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    for name in (TRAIN, TEST):
        shutil.copyfile(small_data / name, data_dir / name)
    corrupt(data_dir, good)
    return data_dir


def _files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_and_nothing_is_written(case, small_data, good_text, tmp_path):
    data_dir = _make_data(small_data, tmp_path, good_text, case.corrupt)
    paths = paths_under(tmp_path)
    expected = case.expect.format(train=data_dir / TRAIN, test=data_dir / TEST, zip=data_dir / ZIP, dir=data_dir)
    before = _files(tmp_path)

    if case.cli:
        started = time.perf_counter()
        result = run_cli("train", "--config", "tiny", *path_args(paths), env={"PYTHONPROFILEIMPORTTIME": "1"},
                         timeout=120)
        seconds = time.perf_counter() - started
        assert result.returncode == 2, result.stderr[-3000:]
        imports = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
        heavy = [line for line in imports if any(m in line for m in ("tensorflow", "keras", "sklearn"))]
        assert not heavy, f"the CLI imported heavy modules before rejecting bad input: {heavy[:3]}"
        messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
        assert len(messages) == 1, messages  # one line
        message = messages[0]
        assert message.startswith(f"error: {expected}"), message
        assert seconds < 30, f"rejecting bad input took {seconds:.1f} s"
    else:
        with pytest.raises(InputError) as caught:
            train.load_inputs(paths)
        message = str(caught.value)
        assert caught.value.exit_code == 2
        assert "\n" not in message
        assert message.startswith(expected), message

    left = _files(tmp_path) - before
    assert not left, f"bad input left files behind: {sorted(map(str, left))}"


def _quote_line(line: bytes) -> bytes:
    """A CSV line with every field in double quotes, as spreadsheet and database exports write it."""
    return b'"' + line.replace(b",", b'","') + b'"'


ACCEPTED = {
    "CRLF line endings": lambda raw: raw.replace(b"\n", b"\r\n"),
    "UTF-8 BOM": lambda raw: b"\xef\xbb\xbf" + raw,
    "BOM and CRLF": lambda raw: b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"),
    "no trailing newline": lambda raw: raw.rstrip(b"\n"),
    "whole numbers written 3.0": lambda raw: raw.replace(b",255,", b",255.0,").replace(b",0\n", b",0.0\n"),
    "spaces after commas": lambda raw: raw.replace(b",", b", "),
    "quoted header": lambda raw: _quote_line(raw.split(b"\n", 1)[0]) + b"\n" + raw.split(b"\n", 1)[1],
    "quoted header and values": lambda raw: b"\n".join(_quote_line(line) if line else line
                                                        for line in raw.split(b"\n")),
    "trailing blank lines": lambda raw: raw + b"\n\r\n  \n",
}


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_variants_parse_to_the_same_arrays(change, small_data, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in (TRAIN, TEST):
        raw = (small_data / name).read_bytes()
        changed = change(raw)
        assert changed != raw
        (data_dir / name).write_bytes(changed)
    paths = paths_under(tmp_path)
    pixels, labels = data.read_train(data.find_csv(small_data, TRAIN))
    test_pixels = data.read_test(data.find_csv(small_data, TEST))
    for _ in range(2):  # the second time from the decoded cache
        inputs = train.load_inputs(paths)
        assert inputs.pixels.dtype == np.uint8 and inputs.labels.dtype == np.uint8
        np.testing.assert_array_equal(inputs.pixels, pixels)
        np.testing.assert_array_equal(inputs.labels, labels)
        np.testing.assert_array_equal(inputs.test_pixels, test_pixels)


@pytest.mark.parametrize("archive", [ZIP, "train.csv.zip"])
def test_zipped_csvs_parse_to_the_same_arrays(archive, small_data, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if archive == ZIP:
        with zipfile.ZipFile(data_dir / ZIP, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(small_data / TRAIN, f"digit-recognizer/{TRAIN}")  # Kaggle's zips may hold a folder
            zf.write(small_data / TEST, TEST)
    else:
        with zipfile.ZipFile(data_dir / archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(small_data / TRAIN, TRAIN)
        shutil.copyfile(small_data / TEST, data_dir / TEST)
    inputs = train.load_inputs(paths_under(tmp_path))
    pixels, labels = data.read_train(data.find_csv(small_data, TRAIN))
    np.testing.assert_array_equal(inputs.pixels, pixels)
    np.testing.assert_array_equal(inputs.labels, labels)
    np.testing.assert_array_equal(inputs.test_pixels, data.read_test(data.find_csv(small_data, TEST)))


def test_read_inputs_checks_both_files_before_caching_either(small_data, good_text, tmp_path):
    """`data.read_inputs` (what train.load_inputs should call) leaves no cache when only test.csv is bad."""
    data_dir = _make_data(small_data, tmp_path, good_text, _cell(TEST, 3, "pixel0", "x"))
    with pytest.raises(InputError, match=r"test\.csv, row 3, column 'pixel0': expected an integer 0\.\.255"):
        data.read_inputs(data_dir, data_dir / "cache")
    assert not (data_dir / "cache").exists()
    _make_data(small_data, tmp_path / "good", good_text, lambda *_: None)
    pixels, labels, test_pixels, sha = data.read_inputs(tmp_path / "good" / "data", tmp_path / "good" / "cache")
    assert pixels.shape == (2000, 784) and labels.shape == (2000,) and test_pixels.shape == (500, 784)
    assert sorted(sha) == [TEST, TRAIN] and len(list((tmp_path / "good" / "cache").glob("*.npy"))) == 2
