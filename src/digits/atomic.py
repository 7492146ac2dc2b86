"""Write files under a temporary name and rename, so a crash never leaves a truncated file."""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(target):
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + "".join(target.suffixes[-2:])  # keeps e.g. ".weights.h5", which Keras insists on
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions a plain open() would
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        if err.errno and err.filename in (None, str(tmp)):  # a write deep in a library (h5py's message spans
            raise OSError(err.errno, os.strerror(err.errno), str(target)) from err  # lines): name the file, briefly
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target, data: bytes):
    """Atomically write `data` to `target`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target, text: str):
    """Atomically write `text` (UTF-8) to `target`."""
    write_bytes(target, text.encode("utf-8"))


def save_npy(target, array):
    """Atomically save `array` as a .npy file."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def save_npz(target, **arrays):
    """Atomically save `arrays` as an uncompressed .npz file."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
