"""The generated notebook on Kaggle's image versions (constraints/kaggle-image.txt), in a separate cached environment,
executed by a real notebook executor (nbclient and ipykernel, as Kaggle runs a notebook kernel)."""

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
T4_UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000"]
# Run by the image environment's Python: execute a notebook as Kaggle does (nbclient, an ipykernel kernel), and save
# it executed, outputs included, even when a cell failed.
EXECUTE = """
import sys
import nbclient
import nbformat

source, target, working = sys.argv[1:4]
notebook = nbformat.read(source, as_version=4)
nbformat.validate(notebook)
try:
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": working}}).execute()
finally:
    nbformat.write(notebook, target)
"""


def pins() -> dict[str, str]:
    """name -> version of every `name==version` line of the constraints file."""
    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    return dict(line.split("==") for line in (x.strip() for x in lines) if line and not line.startswith("#"))


def executor() -> list[str]:
    """The notebook executor's requirements, the file's `# executor: name==version` lines (not image pins)."""
    return re.findall(r"^# executor: (\S+==\S+)$", CONSTRAINTS.read_text(encoding="utf-8"), re.M)


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
    """A virtualenv with the pinned versions and the executor, made once per Python and pin set (other comments
    do not count)."""
    python, version = find_python()
    key = hashlib.sha256(json.dumps([version, sorted(pins().items()), executor()]).encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env_dir = root / f"kaggle-image-py{version}-{key}"
    with open(root / f"{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run waits for the one that builds it
        if not (env_dir / ".complete").is_file():
            shutil.rmtree(env_dir, ignore_errors=True)
            subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=300)
            proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                                   "-r", str(CONSTRAINTS), *executor()], capture_output=True, text=True,
                                  timeout=1800)
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


def fake_t4s(folder: Path) -> Path:
    """A folder whose `nvidia-smi -L` lists two T4s: "GPU T4 x2" as the kernel sees it (TensorFlow here: CPU only)."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\ncat <<'END'\n" + "".join(f"GPU {i}: Tesla T4 (UUID: {uuid})\n" for i, uuid in
                                                         enumerate(T4_UUIDS)) + "END\n")
    script.chmod(0o755)
    return folder


def outputs(cell: dict, kind: str) -> list:
    """A cell's outputs that are text on `kind` ("stdout", "stderr") or data of that MIME type ("image/png")."""
    found = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == kind:
            found.append("".join(output["text"]))
        elif kind in output.get("data", {}):
            found.append(output["data"][kind])
    return found


def test_notebook_runs_on_the_image_versions(image_env, small_data, tmp_path):
    """The default kernel (GPU T4 x2), executed by Jupyter in the image's versions on a /kaggle-like layout, shows
    its figures and writes a valid submission; its two members train at once in worker processes, one per GPU."""
    out = tmp_path / "kernel"
    built = kernel.build("tiny", out, owner="testuser", gpu="t4")
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
    env = {"PATH": f"{fake_t4s(tmp_path / 'bin')}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1", "MPLCONFIGDIR": str(tmp_path / "mpl"),
           "KAGGLE_KERNEL_RUN_TYPE": "Batch", "DIGITS_KAGGLE_INPUT": str(input_root),
           "DIGITS_KAGGLE_WORKING": str(working)}
    executed = working / "__notebook__.ipynb"  # where Kaggle keeps the executed notebook
    try:
        proc = subprocess.run([str(image_env / "bin" / "python"), "-I", "-c", EXECUTE, str(built), str(executed),
                               str(working)], capture_output=True, text=True, timeout=600, cwd=working, env=env)
    finally:
        for path in [input_root, *input_root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = {cell["id"]: cell for cell in json.loads(executed.read_text())["cells"]}
    code = [cell for cell in cells.values() if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] for cell in code)
    assert not [o for cell in code for o in cell["outputs"] if o["output_type"] == "error"]
    started = "".join(outputs(cells["start"], "stdout"))
    assert started.startswith("GPUs: 2: GPU 0 (Tesla T4), GPU 1 (Tesla T4); built for NvidiaTeslaT4\n")
    assert f"from {tmp_path}/tmp/{kernel.EMBED_FOLDER}/src/digits/__init__.py, config tiny" in started
    for name, images in (("data", 1), ("members", 2), ("ensemble", 1), ("mistakes", 1)):  # folds: no size curve
        assert len(outputs(cells[name], "image/png")) == images, name  # the figures, inline
    trained = "".join(outputs(cells["train"], "stdout"))  # the workers' lines too: Jupyter shows their output
    assert "(slot 0) trains it on GPU 0 (Tesla T4)" in trained and "(slot 1) trains it on GPU 1 (Tesla T4)" in trained
    assert sorted(p.name for p in working.glob("runs/*/worker-slots/*")) == ["slot-0.lock", "slot-1.lock"]
    assert outputs(cells["submission"], "text/html")  # the submission's head, as a table
    written = working / "submission.csv"
    assert len(submission.read(written, expected_rows=500)) == 500
    assert submission.accuracy(written, small_data / "answers.csv") > 0.5  # chance is 0.1
    assert {p: p.read_bytes() for p in competition.iterdir()} == before
