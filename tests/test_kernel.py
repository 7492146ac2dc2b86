"""The Kaggle kernel: `make kernel` builds a notebook that trains from its embedded package on a /kaggle-like layout.

Here its code cells run in one plain Python process, in order; tests/test_kaggle_image.py runs it in Jupyter."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from slugify import slugify  # python-slugify: what the kaggle CLI checks the title against

import digits
from conftest import PROJECT_ROOT, run_cli
from digits import dispatch, kernel, submission
from digits.config import EMBEDDED_CONFIGS, load_config
from kaggle_standin import KaggleStandIn, cli_env

KEY = "k3y" + secrets.token_hex(14)  # the fake API key: must not end up in the bundle or a run folder
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
SOURCE_DIR = Path(digits.__file__).parent
MPLCONFIGDIR = str(PROJECT_ROOT / ".cache" / "matplotlib")
LAYOUTS = ["digit-recognizer", "competitions/digit-recognizer"]  # both occur under /kaggle/input
# The notebook's code cells, run in order in one namespace as a Jupyter kernel would; a failed step's message
# (IPython's _render_traceback_) goes to stderr and the run exits 1, as a notebook stops at its failed cell.
RUN_CELLS = """
import json, sys
notebook, site = sys.argv[1:3]
sys.path.append(site)
namespace = {"__name__": "__main__"}
for cell in json.load(open(notebook, encoding="utf-8"))["cells"]:
    if cell["cell_type"] != "code":
        continue
    try:
        exec(compile("".join(cell["source"]), f"<cell {cell['id']}>", "exec"), namespace)
    except Exception as err:
        if not hasattr(err, "_render_traceback_"):
            raise
        print(*err._render_traceback_(), sep="\\n", file=sys.stderr)
        sys.exit(1)
"""


def base_env(home: Path, **extra) -> dict:
    """A minimal environment: no credentials, proxies or DIGITS_* of the developer's own."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "MPLCONFIGDIR": MPLCONFIGDIR, "PYTHONUNBUFFERED": "1",
            **extra}


def built_kernel(root: Path, *variables: str) -> Path:
    """build/kernel made by `make kernel CONFIG=tiny VARIABLES`, with credentials only in KAGGLE_USERNAME/KAGGLE_KEY."""
    (root / "home").mkdir()
    out = root / "kernel"
    command = ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-o", ".venv/bin/.installed", "kernel",
               "CONFIG=tiny", *variables, f"ARGS=--out {out}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=base_env(root / "home", KAGGLE_USERNAME="testuser", KAGGLE_KEY=KEY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """The tiny kernel for Kaggle's default GPU, T4 x2."""
    return built_kernel(tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def cpu_kernel_dir(tmp_path_factory) -> Path:
    """The tiny kernel for the CPU (GPU=none): what runs here, on a machine without a GPU."""
    return built_kernel(tmp_path_factory.mktemp("cpu-kernel"), "GPU=none")


def assert_no_key(folder: Path):
    for path in folder.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


def read_notebook(kernel_dir: Path) -> dict:
    """The built notebook, found through the metadata's code_file."""
    meta = json.loads((kernel_dir / "kernel-metadata.json").read_text())
    return json.loads((kernel_dir / meta["code_file"]).read_text(encoding="utf-8"))


def test_metadata_fields(kernel_dir):
    meta = json.loads((kernel_dir / "kernel-metadata.json").read_text())
    assert meta["id"] == "testuser/digits-tiny"
    assert slugify(meta["title"]) == "digits-tiny" and len(meta["title"]) >= 5
    assert (kernel_dir / meta["code_file"]).is_file() and meta["code_file"] == "digits_kernel.ipynb"
    assert (meta["language"], meta["kernel_type"]) == ("python", "notebook")
    assert meta["competition_sources"] == ["digit-recognizer"]
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    assert meta["machine_shape"] == "NvidiaTeslaT4"  # "GPU T4 x2", Kaggle's default GPU, for every config
    assert meta["docker_image_pinning_type"] == "original"  # later versions keep the first version's image
    assert not (kernel_dir / "digits_kernel.py").exists()  # the notebook is the only code file
    assert_no_key(kernel_dir)


def test_notebook_cells_follow_the_pipeline(kernel_dir):
    """A title, the package in one hidden cell, then one line of markdown above each step's one-call code cell."""
    notebook = read_notebook(kernel_dir)
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    cells = notebook["cells"]
    title, package, steps = cells[0], cells[1], cells[2:]
    assert title["cell_type"] == "markdown" and "".join(title["source"]).startswith("# Digit Recognizer")
    assert package["cell_type"] == "code" and package["metadata"] == {
        "collapsed": True, "jupyter": {"source_hidden": True}, "_kg_hide-input": True}
    code = "".join(package["source"])
    assert "\nACCELERATOR = 'NvidiaTeslaT4'" in code and "\nCONFIG = 'tiny'" in code
    assert "SOURCES = {" in code and "'notebook': " in code and "import digits.notebook" in code
    assert [c["cell_type"] for c in steps] == ["markdown", "code"] * (len(steps) // 2)
    texts = ["".join(c["source"]) for c in steps[0::2]]
    calls = ["".join(c["source"]) for c in steps[1::2]]
    assert all(text.startswith("**") and "\n" not in text for text in texts)  # one line each
    assert all(call.count("\n") == 0 and "digits.notebook." in call for call in calls)  # one call each
    assert [call.split("digits.notebook.")[1].split("(")[0] for call in calls] == [
        "start", "check_data", "holdout_split", "show_config", "train_members", "member_curves", "ensemble_figures",
        "worst_mistakes", "write_submission"]  # tiny has no budget: no plan cell
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells if c["cell_type"] == "code")
    assert len({c["id"] for c in cells}) == len(cells)


def test_the_notebook_is_valid_nbformat(kernel_dir):
    nbformat = pytest.importorskip("nbformat")  # the kaggle client's jupytext brings it; the build does not need it
    meta = json.loads((kernel_dir / "kernel-metadata.json").read_text())
    nbformat.validate(nbformat.read(kernel_dir / meta["code_file"], as_version=4))


def make_kernel(tmp_path, *variables) -> tuple[subprocess.CompletedProcess, dict | None]:
    """`make kernel VARIABLES` into a fresh folder; the metadata it wrote, if any."""
    out = tmp_path / "k"
    command = ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-o", ".venv/bin/.installed", "kernel",
               *variables, f"ARGS=--out {out}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=base_env(tmp_path, KAGGLE_USERNAME="testuser"))
    meta = out / "kernel-metadata.json"
    return proc, json.loads(meta.read_text()) if meta.is_file() else None


@pytest.mark.parametrize("variables, slug, shape", [
    ((), "digits-full", "NvidiaTeslaT4"),  # full trains in mixed_float16: T4 tensor cores
    (("CONFIG=quick",), "digits-quick", "NvidiaTeslaT4"),
    (("CONFIG=tiny",), "digits-tiny", "NvidiaTeslaT4"),  # float32 too: the P100 is retired
    (("CONFIG=quick", "GPU=p100"), "digits-quick", "NvidiaTeslaT4"),
    (("CONFIG=quick", "GPU=NvidiaTeslaP100"), "digits-quick", "NvidiaTeslaT4"),
    (("CONFIG=fast", "GPU=NvidiaTeslaT4"), "digits-fast", "NvidiaTeslaT4"),
    (("GPU=none",), "digits-full", None),
])
def test_make_kernel_config_and_gpu(variables, slug, shape, tmp_path):
    proc, meta = make_kernel(tmp_path, *variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert meta["id"] == f"testuser/{slug}" and meta.get("machine_shape") == shape
    assert meta["enable_gpu"] is (shape is not None) and meta["enable_tpu"] is False
    assert meta["docker_image_pinning_type"] == "original"
    assert f"accelerator {shape or 'none'}" in proc.stdout
    calls = ["".join(c["source"]) for c in read_notebook(tmp_path / "k")["cells"] if c["cell_type"] == "code"]
    assert ("digits.notebook.show_plan(run_dir)" in calls) is (slug != "digits-tiny")  # the configs with a budget
    retired = any("p100" in v.lower() for v in variables)
    assert ("Kaggle retired the P100" in proc.stdout) is retired


def test_unknown_gpu_is_refused(tmp_path):
    proc, meta = make_kernel(tmp_path, "GPU=v100")
    assert proc.returncode != 0 and meta is None
    assert "GPU='v100': choose t4" in proc.stderr and "Traceback" not in proc.stderr


def test_installed_package_is_invisible_to_the_isolated_python():
    """So the runs below can only import `digits` from the notebook itself."""
    probe = f"import sys; sys.path.append({SITE_PACKAGES!r}); import numpy, digits"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert proc.returncode == 1 and "No module named 'digits'" in proc.stderr


def kaggle_layout(tmp_path: Path, small_data: Path, layout: str = LAYOUTS[0]) -> tuple[Path, Path]:
    """/kaggle/input/<layout> with the competition files, and an empty /kaggle/working, under tmp_path."""
    competition = tmp_path / "kaggle" / "input" / layout
    competition.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(small_data / name, competition / name)
    working = tmp_path / "kaggle" / "working"
    working.mkdir()
    (tmp_path / "tmp").mkdir()
    return tmp_path / "kaggle" / "input", working


def run_notebook(kernel_dir: Path, tmp_path: Path, working: Path, **extra) -> subprocess.CompletedProcess:
    """The notebook's code cells run in order by python -I -S (site-packages without .pth files), in working/."""
    notebook = kernel_dir / json.loads((kernel_dir / "kernel-metadata.json").read_text())["code_file"]
    env = base_env(tmp_path, TMPDIR=str(tmp_path / "tmp"), KAGGLE_KERNEL_RUN_TYPE="Batch", KAGGLE_KEY=KEY,
                   DIGITS_KAGGLE_INPUT=str(tmp_path / "kaggle" / "input"), DIGITS_KAGGLE_WORKING=str(working), **extra)
    return subprocess.run([sys.executable, "-I", "-S", "-c", RUN_CELLS, str(notebook), SITE_PACKAGES],
                          capture_output=True, text=True, timeout=600, cwd=working, env=env)


@pytest.mark.skipif(dispatch.gpu_count() > 0, reason="this machine has a GPU: the T4 kernel would train")
def test_gpu_kernel_without_a_gpu_stops_at_its_first_line(kernel_dir, small_data, tmp_path):
    """Quota spent or phone not verified: Kaggle runs a GPU kernel on a CPU. It says so first and trains nothing."""
    _, working = kaggle_layout(tmp_path, small_data)
    proc = run_notebook(kernel_dir, tmp_path, working)
    assert proc.returncode == 1 and proc.stdout == ""
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: this kernel was built for GPU T4 x2 (NvidiaTeslaT4) but Kaggle gave it no GPU")
    assert "quota" in first and "phone" in first and "make kernel GPU=none" in first
    assert "Traceback" not in proc.stderr and not any(working.iterdir())


def test_kernel_start_pins_one_worker_per_gpu(monkeypatch, capsys):
    """On "GPU T4 x2" the kernel's first line names both GPUs and `train` trains one member per GPU at once."""
    t4s = [{"index": i, "name": "Tesla T4", "device": f"GPU-{i}"} for i in (0, 1)]
    monkeypatch.setattr(dispatch, "visible_gpus", lambda environ=None: t4s)
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    assert kernel.start_on_kaggle("NvidiaTeslaT4") == 2
    assert capsys.readouterr().out == "GPUs: 2: GPU 0 (Tesla T4), GPU 1 (Tesla T4); built for NvidiaTeslaT4\n"
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    monkeypatch.setattr(dispatch, "visible_gpus", lambda environ=None: t4s[:1])
    assert kernel.start_on_kaggle("NvidiaTeslaT4") == "auto"
    monkeypatch.setattr(dispatch, "visible_gpus", lambda environ=None: [])
    assert kernel.start_on_kaggle(None) == "auto"
    assert capsys.readouterr().out.endswith("GPUs: none (built for the CPU)\n")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_notebook_trains_on_kaggle_layout(layout, cpu_kernel_dir, small_data, tmp_path):
    """The notebook alone (python -I -S, site-packages without .pth files) trains and writes working/submission.csv."""
    kernel_dir = cpu_kernel_dir
    input_root, working = kaggle_layout(tmp_path, small_data, layout)
    input_before = sorted(p.relative_to(tmp_path) for p in input_root.rglob("*"))
    proc = run_notebook(kernel_dir, tmp_path, working, PATH="/usr/bin:/bin")  # no nvidia-smi: a CPU session
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "GPUs: none (built for the CPU)"
    package = tmp_path / "tmp" / kernel.EMBED_FOLDER / "src" / "digits"  # written by the first cell, in TMPDIR
    assert lines[1] == f"digits {digits.__version__} from {package}/__init__.py, config tiny"
    assert lines[2].startswith("image: Python 3.") and ", TensorFlow 2." in lines[2] and ", CUDA " in lines[2]
    assert sorted(p.name for p in package.glob("*.py")) == sorted(p.name for p in SOURCE_DIR.glob("*.py"))
    assert lines[3].startswith(f"{input_root / layout}: train.csv 2,000 labelled images, test.csv 500 images")
    assert "folds: 12 stratified folds of 2,000 images (seed 42); member i holds out fold i mod 12" in proc.stdout
    figures = [line for line in lines if line.startswith("[figure: ")]  # what Jupyter shows as images
    assert figures == ["[figure: images per digit]", "[figure: member_m00.png]", "[figure: member_m01.png]",
                       "[figure: confusion_matrix.png]", "[figure: worst_mistakes.png]"]
    manifest = json.loads(next((working / "runs").glob("*/manifest.json")).read_text())
    assert {"cuda", "cudnn"} <= set(manifest["versions"]) and manifest["host"]["gpu_models"] == []
    done = [json.loads(p.read_text()) for p in (working / "runs").glob("*/members/*/done.json")]
    assert done and all(d["gpu"] is None for d in done)

    written = working / "submission.csv"
    assert len(submission.read(written, expected_rows=500)) == 500
    assert submission.accuracy(written, small_data / "answers.csv") > 0.5  # chance is 0.1
    (run_dir,) = (working / "runs").iterdir()
    assert (working / "submissions" / f"{run_dir.name}.csv").read_bytes() == written.read_bytes()
    assert sorted(p.relative_to(tmp_path) for p in input_root.rglob("*")) == input_before
    assert_no_key(kernel_dir)
    assert_no_key(working)
    assert KEY not in proc.stdout + proc.stderr


def test_the_plan_cell_shows_the_plan_saved_in_the_manifest(tmp_path, capsys):
    """The budget planner's choice, saved as JSON in manifest.json, read back and shown as `digits plan` shows it."""
    from digits import budget, notebook

    cfg = load_config("tiny", {"budget": "600s"})
    speeds = {"lenet": {"architecture": "lenet", "train_images_per_second": 3_000, "predict_images_per_second": 12_000}}
    plan = budget.choose(cfg, 590, speeds, 38_640, 3_360, 28_000, [1, 2], {"lenet": 1.3})
    (tmp_path / "manifest.json").write_text(json.dumps({"budget_plan": plan}))
    notebook.show_plan(tmp_path)
    assert capsys.readouterr().out == budget.plan_table_text(json.loads(json.dumps(plan))) + "\n"
    (tmp_path / "manifest.json").write_text(json.dumps({"budget_plan": None}))
    notebook.show_plan(tmp_path)
    assert "no budget plan" in capsys.readouterr().out


def test_embedded_configs_follow_extends(tmp_path, monkeypatch):
    child = tmp_path / "exp.toml"
    child.write_text('extends = "quick"\nepochs = 1\n')
    name, texts = kernel.embedded_configs(str(child))
    assert name == "exp" and set(texts) == {"exp", "quick"}
    monkeypatch.setattr("digits.config.CONFIGS_DIR", tmp_path / "nowhere")  # as inside the kernel
    monkeypatch.setattr("digits.config.EMBEDDED_CONFIGS", {**EMBEDDED_CONFIGS, **texts})
    cfg = load_config("exp")
    assert (cfg.name, cfg.epochs, cfg.members) == ("exp", 1, load_config("quick").members)


def test_push_status_output_through_the_standin(kernel_dir, small_data, tmp_path):
    """`digits kernel push|status|output` drive the real CLI; output lands in submissions/ ready for submit."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "testuser", "key": KEY}))
    (home / ".kaggle" / "kaggle.json").chmod(0o600)
    dirs = ["--models-dir", tmp_path / "models", "--submissions-dir", tmp_path / "subs", "--out", kernel_dir]
    metrics = {"run_id": "tiny-0123abcd", "ensemble": {"holdout_accuracy": 0.9375}}
    answers = (small_data / "answers.csv").read_bytes()
    with KaggleStandIn(b"") as server:
        env = {**cli_env(str(home), server.proxy), "PATH": os.environ["PATH"]}
        pushed = run_cli("kernel", "push", *dirs, env=env, check=True)
        server.kernel_status = "RUNNING"
        running = run_cli("kernel", "status", *dirs, env=env, check=True)
        run = "runs/tiny-0123abcd/"
        models = {f"{run}members/m{i:02}/model.keras": b"weights" for i in range(25)}  # a full run has more
        server.kernel_outputs = {**models, f"{run}metrics.json": json.dumps(metrics).encode(),
                                 "submission.csv": answers}
        server.kernel_log = "training...\n"
        fetched = run_cli("kernel", "output", *dirs, env=env, check=True)
    assert [page["pageToken"] or "" for page in server.output_pages] == ["", "20"]  # the files on page 2 came too
    (push,) = server.kernel_pushes
    assert push["slug"] == "testuser/digits-tiny" and push["newTitle"] == "digits tiny"
    sent, built = json.loads(push["text"]), read_notebook(kernel_dir)  # the client sends each source as one string
    assert push["kernelType"] == "notebook" and push["language"] == "python"
    assert [c["source"] for c in sent["cells"]] == ["".join(c["source"]) for c in built["cells"]]
    assert push["competitionDataSources"] == ["digit-recognizer"]
    assert push["enableGpu"] is True and push["enableInternet"] is False
    assert push["machineShape"] == "NvidiaTeslaT4" and push["dockerImagePinningType"] == "original"
    assert "Kernel version 1 successfully pushed" in pushed.stdout
    assert "RUNNING" in running.stdout
    target = tmp_path / "subs" / "kaggle-tiny-0123abcd.csv"
    assert target.read_bytes() == answers and str(target) in fetched.stdout
    saved = json.loads((tmp_path / "models" / "kaggle-tiny-0123abcd" / "metrics.json").read_text())
    assert saved["ensemble"]["holdout_accuracy"] == 0.9375 and saved["kernel"] == "testuser/digits-tiny"
    assert not any("model.keras" in p for p in server.paths())  # only submission.csv and metrics.json fetched
    assert all(KEY not in p.stdout + p.stderr for p in (pushed, running, fetched))


def test_soft_failures_of_the_cli_are_errors(kernel_dir, tmp_path):
    """What `kaggle kernels push|status|output` prints while exiting 0 makes `digits kernel` exit 1 with advice."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "testuser", "key": KEY}))
    (home / ".kaggle" / "kaggle.json").chmod(0o600)
    dirs = ["--models-dir", tmp_path / "models", "--submissions-dir", tmp_path / "subs", "--out", kernel_dir]
    with KaggleStandIn(b"") as server:
        env = {**cli_env(str(home), server.proxy), "PATH": os.environ["PATH"]}
        server.invalid_competition_sources = ["digit-recognizer"]
        no_data = run_cli("kernel", "push", *dirs, env=env)
        server.push_error = "Notebook not found"
        push_error = run_cli("kernel", "push", *dirs, env=env)
        server.kernel_status, server.kernel_failure_message = "ERROR", "Your notebook tried to allocate more memory"
        failed = run_cli("kernel", "status", *dirs, env=env)
        server.kernel_status, server.kernel_failure_message = "COMPLETE", None
        complete = run_cli("kernel", "status", *dirs, env=env, check=True)
        server.kernel_outputs = {"submission.csv": b"ImageId,Label\n1,7\n"}
        server.missing_outputs = {"submission.csv"}
        missing = run_cli("kernel", "output", *dirs, env=env)
    assert no_data.returncode == 1 and "did not attach the competition data" in no_data.stderr
    assert "not valid competition sources" in no_data.stderr and "digit-recognizer/rules" in no_data.stderr
    assert push_error.returncode == 1 and "Kernel push error: Notebook not found" in push_error.stderr
    assert failed.returncode == 1 and "ended with ERROR" in failed.stderr and "allocate more memory" in failed.stderr
    assert 'has status "KernelWorkerStatus.COMPLETE"' in complete.stdout
    assert missing.returncode == 1 and "submission.csv of kernel testuser/digits-tiny could not be downloaded" \
        in missing.stderr
    assert not (tmp_path / "subs").exists() or not any((tmp_path / "subs").iterdir())
    for proc in (no_data, push_error, failed, missing):
        assert "Traceback" not in proc.stderr and KEY not in proc.stdout + proc.stderr
