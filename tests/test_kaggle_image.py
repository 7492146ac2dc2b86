"""The generated kernel on Kaggle's image versions (constraints/kaggle-image.txt), in a separate cached environment."""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from digits import kernel, submission

CONSTRAINTS = PROJECT_ROOT / "constraints" / "kaggle-image.txt"
MODULES = {"tensorflow-cpu": "tensorflow", "scikit-learn": "sklearn"}  # distribution -> import name


def pins() -> dict[str, str]:
    """name -> version of every `name==version` line of the constraints file."""
    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    return dict(line.split("==") for line in (x.strip() for x in lines) if line and not line.startswith("#"))


def image_python_version() -> str:
    """The image's Python, from the file's `# python: X.Y` line."""
    return re.search(r"^# python: (\d+\.\d+)$", CONSTRAINTS.read_text(encoding="utf-8"), re.M)[1]


def python_version(python: str) -> str | None:
    try:
        proc = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                              capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def find_python() -> tuple[str, str]:
    """The image's Python where this machine has one (DIGITS_IMAGE_PYTHON, PATH, pyenv), else this test's own."""
    want = image_python_version()
    candidates = [os.environ.get("DIGITS_IMAGE_PYTHON"), shutil.which(f"python{want}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{want}.*/bin/python{want}")))]
    for python in filter(None, candidates):
        version = python_version(python)
        if version and version.startswith(f"{want}."):
            return python, version
    print(f"no Python {want} here: using {sys.executable} with the image's package versions")
    return sys.executable, python_version(sys.executable)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digits"


@pytest.fixture(scope="module")
def image_env() -> Path:
    """A virtualenv with the pinned versions, made once per Python and pin set (comments do not count)."""
    python, version = find_python()
    key = hashlib.sha256(json.dumps([version, sorted(pins().items())]).encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env_dir = root / f"kaggle-image-py{version}-{key}"
    with open(root / f"{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run waits for the one that builds it
        if not (env_dir / ".complete").is_file():
            shutil.rmtree(env_dir, ignore_errors=True)
            subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=300)
            proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                                   "-r", str(CONSTRAINTS)], capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, f"installing {CONSTRAINTS} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            (env_dir / ".complete").write_text(CONSTRAINTS.read_text(encoding="utf-8"))
    return env_dir


def test_environment_has_the_image_versions(image_env):
    names = {name: MODULES.get(name, name) for name in pins()}
    probe = ("import importlib.metadata as m, json, sys; "
             f"print(json.dumps({{n: m.version(n) for n in {sorted(names)!r}}})); print(sys.version_info[:2])")
    proc = subprocess.run([str(image_env / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0]) == pins()


def make_read_only(folder: Path):
    for path in [*folder.rglob("*"), folder]:
        path.chmod(stat.S_IREAD | (stat.S_IEXEC if path.is_dir() else 0) | stat.S_IRGRP | stat.S_IROTH)


def test_kernel_runs_on_the_image_versions(image_env, small_data, tmp_path):
    """The tiny kernel script, run by the image's Python on a /kaggle-like layout, writes a valid submission."""
    out = tmp_path / "kernel"
    script = kernel.build("tiny", out, owner="testuser", gpu="none")  # this machine trains on its CPU
    input_root = tmp_path / "kaggle" / "input"
    competition = input_root / "competitions" / "digit-recognizer"
    competition.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(small_data / name, competition / name)
    before = {p: p.read_bytes() for p in competition.iterdir()}
    make_read_only(input_root)
    working = tmp_path / "kaggle" / "working"
    working.mkdir()
    (tmp_path / "tmp").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1",
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "KAGGLE_KERNEL_RUN_TYPE": "Batch",
           "DIGITS_KAGGLE_INPUT": str(input_root), "DIGITS_KAGGLE_WORKING": str(working)}
    try:
        proc = subprocess.run([str(image_env / "bin" / "python"), "-I", str(script)], capture_output=True, text=True,
                              timeout=600, cwd=working, env=env)
    finally:
        for path in [input_root, *input_root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"from {kernel.EMBED_ROOT}/__init__.py, config tiny" in proc.stdout
    written = working / "submission.csv"
    assert len(submission.read(written, expected_rows=500)) == 500
    assert submission.accuracy(written, small_data / "answers.csv") > 0.5  # chance is 0.1
    assert {p: p.read_bytes() for p in competition.iterdir()} == before
