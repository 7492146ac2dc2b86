"""The Kaggle kernel: one generated notebook with the package inside, pushed, polled and fetched with the kaggle CLI."""

import json
import logging
import os
import re
import shutil
from pathlib import Path

from . import atomic, dispatch, runs, submission
from .config import COMPETITION, KAGGLE_WORKING, Paths, config_path, load_config
from .errors import InputError, KaggleError

log = logging.getLogger(__name__)
NOTEBOOK_FILE = "digits_kernel.ipynb"
METADATA_FILE = "kernel-metadata.json"
EMBED_FOLDER = "digits-kernel"  # the notebook writes the package to <temp dir>/digits-kernel/src/digits and imports it
# Cell metadata that folds the first cell (the package, a wall of text) away: Jupyter's and Kaggle's viewer's flags
HIDDEN_CELL = {"collapsed": True, "jupyter": {"source_hidden": True}, "_kg_hide-input": True}
OUTPUT_PATTERN = rf"(^|/)(submission\.csv|{re.escape(runs.METRICS_FILE)})$"  # the output files fetched, not models
# Kaggle's GPU for `machine_shape`: "GPU T4 x2", the default (a single T4 is not offered). The kaggle CLI 2.2.5
# lists NvidiaTeslaP100 as retired: it still sends it, with a warning, and Kaggle runs the session on the T4s.
MACHINE_SHAPES = {"t4": "NvidiaTeslaT4"}
RETIRED_SHAPES = {"p100": "NvidiaTeslaP100"}  # alias -> the retired name; built as MACHINE_SHAPES["t4"], warned
NO_GPU = ("none", "cpu")
GPU_TITLES = {"NvidiaTeslaT4": "GPU T4 x2"}  # what Kaggle's notebook settings call each shape
# "original": every later version of the kernel runs in the image its first version ran in ("latest" follows
# Kaggle's image updates); the kaggle CLI accepts these two values.
IMAGE_PINNING = "original"
FAILED_STATES = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")

# The notebook's first cell (hidden) after SOURCES, CONFIGS, CONFIG and ACCELERATOR: it writes the package's files
# into the session's temp folder and imports it from there, so that training's worker processes import it too.
LOADER = '''
import os
import shutil
import sys
import tempfile
import time

STARTED = time.time()  # a budget counts from here
ROOT = os.path.join(tempfile.gettempdir(), %(folder)r, "src")
shutil.rmtree(ROOT, ignore_errors=True)
os.makedirs(os.path.join(ROOT, "digits"))
for name, text in SOURCES.items():
    with open(os.path.join(ROOT, "digits", name + ".py"), "w", encoding="utf-8") as file:
        file.write(text)
sys.path.insert(0, ROOT)
import digits.notebook  # noqa: E402
'''


def publish_on_kaggle(metrics: dict, working_root=None) -> Path:
    """Copy the run's submission to <working>/submission.csv, the file Kaggle's "Submit" button takes."""
    working = Path(working_root or os.environ.get("DIGITS_KAGGLE_WORKING") or KAGGLE_WORKING)
    target = working / "submission.csv"
    atomic.write_bytes(target, Path(metrics["submission"]).read_bytes())
    log.info(f"wrote {target}")
    return target


def slugify(text: str) -> str:
    """Kaggle's URL slug of a title: lower case, runs of other characters become one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def embedded_configs(config: str) -> tuple[str, dict[str, str]]:
    """The name the kernel uses for `config`, and the TOML text of it and of every config it extends."""
    import tomllib

    name = Path(config).stem if Path(config).suffix == ".toml" else str(config)
    texts, key, parent, folder = {}, name, str(config), None
    while parent and key not in texts:
        path = config_path(parent, folder)
        texts[key] = path.read_text(encoding="utf-8")
        parent = tomllib.loads(texts[key]).get("extends")  # load_config has checked the chain already
        key, folder = str(parent), path.parent
    return name, texts


def package_sources() -> dict[str, str]:
    """Every module of the installed package: module name (without `digits.`) -> source text."""
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(Path(__file__).parent.glob("*.py"))}


def start_on_kaggle(accelerator: str | None, environ=None) -> int | str:
    """The kernel's first line: the GPUs it sees; `train`'s members at once ("auto", or one worker per GPU).

    A kernel built for a GPU that gets none (the week's GPU quota is spent, or the account's phone is not
    verified) stops here: training `full` on a CPU would not fit Kaggle's 12 hours and would spend them.
    """
    gpus = dispatch.visible_gpus(environ)
    if accelerator and not gpus:
        raise KaggleError(f"this kernel was built for {GPU_TITLES.get(accelerator, accelerator)} ({accelerator}) "
                          "but Kaggle gave it no GPU: the week's GPU quota is spent (`kaggle quota`, or your "
                          "profile's settings) or the account's phone is not verified. Nothing was trained. Push "
                          "again when the quota is back, or rebuild for the CPU with `make kernel GPU=none` (a "
                          "config's budget, such as `full`'s 11h, is then planned for the CPU's speed)")
    if not gpus:
        print("GPUs: none (built for the CPU)", flush=True)
        return "auto"
    print(f"GPUs: {len(gpus)}: " + ", ".join(dispatch.describe_gpu(g) for g in gpus)
          + (f"; built for {accelerator}" if accelerator else ""), flush=True)
    if len(gpus) == 1:
        return "auto"
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # this parent process must not hold a whole GPU
    return len(gpus)


def log_image_versions() -> None:
    """One line with the versions of the image the kernel runs in (the manifest keeps them too)."""
    from . import manifest

    found = manifest.versions()
    print("image: " + ", ".join(f"{name} {found.get(key) or 'none'}" for name, key in (
        ("Python", "python"), ("TensorFlow", "tensorflow"), ("Keras", "keras"), ("NumPy", "numpy"),
        ("CUDA", "cuda"), ("cuDNN", "cudnn"))), flush=True)  # before `train` sets up logging


def _source(text: str) -> list[str]:
    """A cell's source as Jupyter saves it: its lines, each but the last ending in a newline."""
    return text.strip("\n").splitlines(keepends=True)


def markdown_cell(cell_id: str, text: str) -> dict:
    """A markdown cell of nbformat 4.5 (whose cells carry an id)."""
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": _source(text)}


def code_cell(cell_id: str, text: str, metadata: dict | None = None) -> dict:
    """A code cell of nbformat 4.5, not run yet: no outputs, no execution count."""
    return {"cell_type": "code", "id": cell_id, "execution_count": None, "metadata": metadata or {}, "outputs": [],
            "source": _source(text)}


def loader_source(config_name: str, sources: dict[str, str], configs: dict[str, str], accelerator: str | None) -> str:
    """The notebook's first cell: the package's modules and the configs as string literals, then LOADER."""
    lines = [
        f"# Generated by `make kernel` (digits kernel build --config {config_name}) from src/digits: do not edit;",
        "# rebuild. The whole `digits` package is embedded below as text; the cells after this one call it.",
        "SOURCES = {",
        *(f"    {name!r}: {text!r}," for name, text in sources.items()),
        "}",
        "CONFIGS = {",
        *(f"    {name!r}: {text!r}," for name, text in configs.items()),
        "}",
        f"CONFIG = {config_name!r}",
        f"ACCELERATOR = {accelerator!r}  # the machine_shape it was built for; None: the CPU",
    ]
    return "\n".join(lines) + "\n" + LOADER % {"folder": EMBED_FOLDER}


def machine_title(accelerator: str | None) -> str:
    """What Kaggle's notebook settings call the accelerator: "GPU T4 x2", or the CPU."""
    return GPU_TITLES.get(accelerator, accelerator) if accelerator else "the CPU"


def steps(config_name: str, accelerator: str | None, budget: str) -> list[tuple[str, str, str]]:
    """(cell id, its one line of markdown, its code) for each step of the pipeline after the first cell."""
    at_once = " (two at once on GPU T4 x2, one per GPU)" if accelerator else ""
    first = "First the plan (the nets timed here, what fits the budget), then each" if budget else "Each"
    config = (f"**The config.** `{config_name}`'s settings; its budget of {budget} is planned when training starts: "
              "net, members and epochs are chosen to fit." if budget else
              f"**The config.** `{config_name}`'s settings: members, nets, epochs, batch size, learning-rate schedule.")
    cells = [
        ("start", f"**The machine.** The GPUs this session has (built for {machine_title(accelerator)}; a GPU kernel "
                  "given none stops here) and the versions of Kaggle's image.",
         "session = digits.notebook.start(CONFIG, CONFIGS, ACCELERATOR, STARTED)"),
        ("data", "**The data.** `train.csv` and `test.csv` from `/kaggle/input`, checked (header, 784 pixel columns of "
                 "0-255, every digit), and the training images per digit.",
         "inputs = digits.notebook.check_data(session)"),
        ("holdout", "**The holdout split.** Seeded and stratified by digit: each member holds out its own fold of "
                    "`train.csv` (or, with `holdout = \"shared\"`, one holdout for all) and trains on the rest.",
         "digits.notebook.holdout_split(session, inputs)"),
        ("config", config, "digits.notebook.show_config(session)"),
        ("train", f"**Training.** {first} member{at_once}, one line per epoch (speed, loss, holdout accuracy, "
                  "learning rate, time left), then the ensemble's average.",
         "run_dir = digits.notebook.train_members(session)"),
        ("plan", "**The plan.** What the budget planner timed on this machine, the plan it chose and the runners-up "
                 "(from the run's `manifest.json`).",
         "digits.notebook.show_plan(run_dir)"),
        ("members", "**Each member's curves.** Loss and accuracy per epoch, on the augmented training images and on "
                    "the holdout, and the learning rate (from each member's `state.json`).",
         "digits.notebook.member_curves(run_dir)"),
        ("ensemble", "**The CV.** Each labelled row predicted by the members that held it out (out-of-fold): its "
                     "accuracy and confusion matrix (true digit by row, predicted digit by column).",
         "digits.notebook.ensemble_figures(run_dir)"),
        ("mistakes", "**The worst mistakes.** The out-of-fold images got wrong with the most confidence.",
         "digits.notebook.worst_mistakes(run_dir)"),
        ("submission", "**The submission.** `/kaggle/working/submission.csv`, the file Kaggle's Submit button takes "
                       "(the run folder is in `/kaggle/working/runs/`).",
         "digits.notebook.write_submission(run_dir)"),
    ]
    return [cell for cell in cells if budget or cell[0] != "plan"]  # the plan cell: for a config with a budget


def render_notebook(config_name: str, sources: dict[str, str], configs: dict[str, str],
                    accelerator: str | None = None, budget: str = "") -> dict:
    """The kernel's notebook (nbformat 4.5): a title, the package's hidden cell, then one cell per step."""
    title = (f"# Digit Recognizer: an ensemble of CNNs (config `{config_name}`, {machine_title(accelerator)})\n\n"
             f"Generated by `make kernel` (`digits kernel build --config {config_name}`) from the `digits` package. "
             "The first cell (hidden) holds the package; each cell after it is one step of `digits train`.")
    cells = [markdown_cell("title", title),
             code_cell("package", loader_source(config_name, sources, configs, accelerator), HIDDEN_CELL)]
    for cell_id, text, code in steps(config_name, accelerator, budget):
        cells += [markdown_cell(f"{cell_id}-text", text), code_cell(cell_id, code)]
    metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"}}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def machine_shape(gpu: str | None) -> str | None:
    """Kaggle's name for `gpu` (t4, none, or the name itself); by default T4 x2; p100, retired, becomes T4 x2."""
    if not gpu:
        return MACHINE_SHAPES["t4"]
    if gpu.lower() in NO_GPU:
        return None
    for alias, name in RETIRED_SHAPES.items():
        if gpu.lower() in (alias, name.lower()):
            log.warning(f"warning: GPU={gpu}: Kaggle retired the P100 ({name}); the kaggle CLI warns and Kaggle "
                        f"runs such a session on {GPU_TITLES[MACHINE_SHAPES['t4']]} instead, so the kernel is built "
                        f"for {MACHINE_SHAPES['t4']}")
            return MACHINE_SHAPES["t4"]
    for alias, name in MACHINE_SHAPES.items():
        if gpu.lower() in (alias, name.lower()):
            return name
    raise InputError(f"GPU={gpu!r}: choose t4 (Kaggle's \"GPU T4 x2\", the default: one member per T4) or none "
                     "(CPU only); Kaggle retired the P100 (p100 builds for T4 x2)")


def metadata(owner: str, config_name: str, shape: str | None) -> dict:
    """kernel-metadata.json for `kaggle kernels push`; the title slugifies to the id's slug."""
    slug = slugify(f"digits {config_name}")
    meta = {
        "id": f"{owner}/{slug}",
        "title": slug.replace("-", " "),
        "code_file": NOTEBOOK_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": shape is not None,
        "enable_tpu": False,
        "enable_internet": False,
        "competition_sources": [COMPETITION],
        "dataset_sources": [],
        "kernel_sources": [],
        "model_sources": [],
        "keywords": [],
        "docker_image_pinning_type": IMAGE_PINNING,
    }
    if shape:
        meta["machine_shape"] = shape
    return meta


def build(config: str, out_dir, owner: str | None = None, gpu: str | None = None) -> Path:
    """Write <out_dir>/digits_kernel.ipynb and kernel-metadata.json for `config`, on the accelerator `gpu`."""
    from . import kaggle

    cfg = load_config(config)  # a typo in the config fails here, not an hour into the Kaggle run
    shape = machine_shape(gpu)
    owner = owner or kaggle.username()
    if not owner:
        raise KaggleError("the kernel id needs your Kaggle username: set KAGGLE_USERNAME, or keep it in "
                          "~/.kaggle/kaggle.json (a bare API token does not name the account)")
    name, configs = embedded_configs(config)
    out_dir = Path(out_dir)
    meta = metadata(owner, name, shape)
    notebook = render_notebook(name, package_sources(), configs, shape, cfg.budget)
    atomic.write_text(out_dir / NOTEBOOK_FILE, json.dumps(notebook, indent=1) + "\n")
    atomic.write_text(out_dir / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    log.info(f"wrote {out_dir / NOTEBOOK_FILE} and {METADATA_FILE} (kernel {meta['id']}, config {name}, "
             f"accelerator {shape or 'none'}); next: make kernel-push")
    return out_dir / NOTEBOOK_FILE


def read_metadata(out_dir) -> dict:
    path = Path(out_dir) / METADATA_FILE
    if not path.is_file():
        raise InputError(f"{path}: not found; build the kernel first with `make kernel [CONFIG=...]`")
    return json.loads(path.read_text(encoding="utf-8"))


def _forbidden_hint(meta: dict) -> str:
    return (f"Check that the kernel id {meta['id']!r} belongs to the account of your credentials "
            "(after switching accounts, rebuild with `make kernel`).")


def push(out_dir) -> None:
    """Upload the kernel and start a run on Kaggle."""
    from . import kaggle

    meta = read_metadata(out_dir)
    api = kaggle.client()
    user = kaggle.signed_in_as(api)
    if user and meta["id"].split("/")[0] != user:
        log.warning(f"warning: kernel id {meta['id']} is not under your account {user}; rebuild with make kernel")
    with kaggle.calling(f"kernel push of {meta['id']}", _forbidden_hint(meta)):
        pushed = api.kernels_push(str(out_dir))
    if pushed.error:
        raise KaggleError(f"Kernel push error: {pushed.error} (kernel {meta['id']}). {_forbidden_hint(meta)}")
    if pushed.invalid_competition_sources:
        raise KaggleError(f"kernel push of {meta['id']}: Kaggle did not attach the competition data to the kernel, "
                          "so it would run without data; it reports these as not valid competition sources: "
                          f"{', '.join(pushed.invalid_competition_sources)}\n{kaggle.RULES_HINT}")
    log.info(f"Kernel version {pushed.version_number or '(new)'} successfully pushed as {meta['id']}: {pushed.url}")
    log.info("follow it with `make kernel-status`; when it says KernelWorkerStatus.COMPLETE, `make kernel-output`")


def status(out_dir) -> str:
    """Print the state of the kernel's latest run; return QUEUED, RUNNING or COMPLETE, raise if it failed."""
    from . import kaggle

    meta = read_metadata(out_dir)
    api = kaggle.client()
    with kaggle.calling(f"kernel status of {meta['id']}", _forbidden_hint(meta)):
        answer = api.kernels_status(meta["id"])
    state = answer.status.name
    line = f'{meta["id"]} has status "{answer.status}"'  # KernelWorkerStatus.<state>, as make kernel-push says
    if state in FAILED_STATES:
        raise KaggleError(f"kernel {meta['id']}: the run ended with {state}: {answer.failure_message or '(no message)'}"
                          "\nRead its log on the kernel's page, or with `make kernel-output` (saved in "
                          "build/kernel-output/).")
    log.info(line)
    return state


def fetch_output(out_dir, paths: Paths) -> Path:
    """Download the kernel's submission.csv (and its run's metrics) into submissions/, ready for `make submit`."""
    from . import kaggle

    meta = read_metadata(out_dir)
    api = kaggle.client()
    download_dir = Path(out_dir).parent / f"{Path(out_dir).name}-output"
    shutil.rmtree(download_dir, ignore_errors=True)
    with kaggle.calling("kernel output", _forbidden_hint(meta), files_of=f"kernel {meta['id']}"):
        api.kernels_output(meta["id"], str(download_dir), file_pattern=OUTPUT_PATTERN, force=True, quiet=True)
    found = download_dir / "submission.csv"
    if not found.is_file():
        raise KaggleError(f"the output of kernel {meta['id']} has no submission.csv (yet): `make kernel-status` "
                          "must say KernelWorkerStatus.COMPLETE; whatever came back (the log, if any) is in "
                          f"{download_dir}")
    labels = submission.read(found)
    found_metrics = [json.loads(p.read_text(encoding="utf-8"))
                     for p in sorted(download_dir.glob(f"**/{runs.METRICS_FILE}"))]
    kernel_runs = sorted((m for m in found_metrics if m.get("run_id")),
                         key=lambda m: str(m.get("timings", {}).get("written")))
    name = f"kaggle-{kernel_runs[-1]['run_id']}" if kernel_runs else f"kaggle-{meta['id'].split('/')[-1]}"
    target = paths.submissions_dir / f"{name}.csv"
    atomic.write_bytes(target, found.read_bytes())
    accuracy = ""
    if kernel_runs:
        metrics = {**kernel_runs[-1], "submission": str(target), "kernel": meta["id"]}
        atomic.write_text(runs.metrics_file(paths.models_dir / name), json.dumps(metrics, indent=2))
        cv = runs.cv(metrics)
        accuracy = f", {cv['kind']} accuracy {cv['accuracy']:.4f}" if cv and cv["accuracy"] is not None else ""
    log.info(f"wrote {target} ({len(labels)} rows{accuracy}) from kernel {meta['id']}; send it with `make submit`")
    return target


def command(action: str, config: str = "full", out_dir=Path("build/kernel"), paths: Paths | None = None,
            gpu: str | None = None) -> None:
    """`digits kernel build|push|status|output`."""
    if action == "build":
        build(config, out_dir, gpu=gpu)
    elif action == "push":
        push(out_dir)
    elif action == "status":
        status(out_dir)
    elif action == "output":
        fetch_output(out_dir, paths or Paths())
    else:
        raise InputError(f"kernel: unknown action {action!r} (build, push, status, output)")
