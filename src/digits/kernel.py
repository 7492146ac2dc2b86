"""The Kaggle kernel: one generated script with the package inside, pushed, polled and fetched with the kaggle CLI."""

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
SCRIPT_FILE = "digits_kernel.py"
METADATA_FILE = "kernel-metadata.json"
EMBED_ROOT = "/digits-kernel-embedded/src/digits"  # the embedded modules' __file__ prefix; nothing is read there
OUTPUT_PATTERN = rf"(^|/)(submission\.csv|{re.escape(runs.METRICS_FILE)})$"  # what `kernel output` fetches, not models
# Kaggle's GPU for `machine_shape`: "GPU T4 x2", the default (a single T4 is not offered). The kaggle CLI 2.2.5
# lists NvidiaTeslaP100 as retired: it still sends it, with a warning, and Kaggle runs the session on the T4s.
MACHINE_SHAPES = {"t4": "NvidiaTeslaT4"}
RETIRED_SHAPES = {"p100": "NvidiaTeslaP100"}  # alias -> the retired name; built as MACHINE_SHAPES["t4"], warned
NO_GPU = ("none", "cpu")
GPU_TITLES = {"NvidiaTeslaT4": "GPU T4 x2"}  # what Kaggle's notebook settings call each shape
# "original": every later version of the kernel runs in the image its first version ran in ("latest" follows
# Kaggle's image updates); the kaggle CLI accepts these two values.
IMAGE_PINNING = "original"
# `kaggle kernels status` prints: <id> has status "KernelWorkerStatus.COMPLETE"
STATUS_LINE = r'has status "(?:KernelWorkerStatus\.)?([A-Z_]+)"'
FAILED_STATES = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")

# The part of the generated script after SOURCES, CONFIGS and CONFIG: a meta-path finder that serves
# `import digits` from SOURCES, ahead of any installed copy, then the training command.
BOOTSTRAP = '''
import importlib.abc
import importlib.util
import sys

ROOT = "%(root)s"


class EmbeddedDigits(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve the `digits` package and its modules from SOURCES."""

    def _key(self, fullname):
        if fullname == "digits":
            return "__init__"
        head, _, tail = fullname.partition(".")
        return tail if head == "digits" and tail in SOURCES and tail != "__init__" else None

    def find_spec(self, fullname, path=None, target=None):
        key = self._key(fullname)
        if key is None:
            return None
        locations = [ROOT] if fullname == "digits" else None
        return importlib.util.spec_from_file_location(fullname, f"{ROOT}/{key}.py", loader=self,
                                                      submodule_search_locations=locations)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(SOURCES[self._key(module.__name__)], module.__file__, "exec"), module.__dict__)

    def get_source(self, fullname):
        return SOURCES[self._key(fullname)]


sys.meta_path.insert(0, EmbeddedDigits())
import digits.cli  # noqa: E402
import digits.config  # noqa: E402
import digits.errors  # noqa: E402
import digits.kernel  # noqa: E402

try:
    extra = digits.kernel.start_on_kaggle(ACCELERATOR)  # its first line: the GPUs, or why it stops
except digits.errors.DigitsError as err:
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)
digits.config.EMBEDDED_CONFIGS.update(CONFIGS)
print(f"digits {digits.__version__} from {digits.__file__}, config {CONFIG}", flush=True)
digits.kernel.log_image_versions()
code = digits.cli.main(["train", "--kaggle", "--config", CONFIG, *extra])
if code:
    sys.exit(code)
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


def start_on_kaggle(accelerator: str | None, environ=None) -> list[str]:
    """The kernel's first line: the GPUs it sees; `train`'s extra arguments (one worker per GPU).

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
        return []
    print(f"GPUs: {len(gpus)}: " + ", ".join(dispatch.describe_gpu(g) for g in gpus)
          + (f"; built for {accelerator}" if accelerator else ""), flush=True)
    if len(gpus) == 1:
        return []
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # this parent process must not hold a whole GPU
    return ["--jobs", str(len(gpus))]


def log_image_versions() -> None:
    """One line with the versions of the image the kernel runs in (the manifest keeps them too)."""
    from . import manifest

    found = manifest.versions()
    print("image: " + ", ".join(f"{name} {found.get(key) or 'none'}" for name, key in (
        ("Python", "python"), ("TensorFlow", "tensorflow"), ("Keras", "keras"), ("NumPy", "numpy"),
        ("CUDA", "cuda"), ("cuDNN", "cudnn"))), flush=True)  # before `train` sets up logging


def render_script(config_name: str, sources: dict[str, str], configs: dict[str, str],
                  accelerator: str | None = None) -> str:
    """The kernel's single code file: the sources and configs as string literals, then BOOTSTRAP."""
    lines = [
        f"# Generated by `make kernel` (digits kernel build --config {config_name}) from src/digits: do not edit;",
        "# rebuild. Kaggle runs one code file, so the whole `digits` package is embedded below as text.",
        "# Reads the competition data under /kaggle/input, writes /kaggle/working/submission.csv.",
        "SOURCES = {",
        *(f"    {name!r}: {text!r}," for name, text in sources.items()),
        "}",
        "CONFIGS = {",
        *(f"    {name!r}: {text!r}," for name, text in configs.items()),
        "}",
        f"CONFIG = {config_name!r}",
        f"ACCELERATOR = {accelerator!r}  # the machine_shape it was built for; None: the CPU",
    ]
    return "\n".join(lines) + "\n" + BOOTSTRAP % {"root": EMBED_ROOT}


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
        "code_file": SCRIPT_FILE,
        "language": "python",
        "kernel_type": "script",
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
    """Write <out_dir>/digits_kernel.py and kernel-metadata.json for `config`, on the accelerator `gpu`."""
    from . import kaggle

    load_config(config)  # a typo in the config fails here, not an hour into the Kaggle run
    shape = machine_shape(gpu)
    owner = owner or kaggle.username()
    if not owner:
        raise KaggleError("the kernel id needs your Kaggle username: set KAGGLE_USERNAME, or keep it in "
                          "~/.kaggle/kaggle.json (a bare API token does not name the account)")
    name, configs = embedded_configs(config)
    out_dir = Path(out_dir)
    meta = metadata(owner, name, shape)
    atomic.write_text(out_dir / SCRIPT_FILE, render_script(name, package_sources(), configs, shape))
    atomic.write_text(out_dir / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    log.info(f"wrote {out_dir / SCRIPT_FILE} and {METADATA_FILE} (kernel {meta['id']}, config {name}, "
             f"accelerator {shape or 'none'}); next: make kernel-push")
    return out_dir / SCRIPT_FILE


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
    found = kaggle.require_credentials()
    if found.username and meta["id"].split("/")[0] != found.username:
        log.warning(f"warning: kernel id {meta['id']} is not under your account {found.username}; "
                    "rebuild with make kernel")
    out = kaggle.run_kaggle("kernels", "push", "-p", str(out_dir), what="kaggle kernels push",
                            forbidden_hint=_forbidden_hint(meta))
    log.info(out.strip())
    log.info("follow it with `make kernel-status`; when it says KernelWorkerStatus.COMPLETE, `make kernel-output`")


def status(out_dir) -> str:
    """Print the state of the kernel's latest run; return QUEUED, RUNNING or COMPLETE, raise if it failed."""
    from . import kaggle

    meta = read_metadata(out_dir)
    kaggle.require_credentials()
    out = kaggle.run_kaggle("kernels", "status", meta["id"], what="kaggle kernels status",
                            forbidden_hint=_forbidden_hint(meta)).strip()
    found = re.search(STATUS_LINE, out)
    if not found:
        raise KaggleError(f"kaggle kernels status: no status in the CLI's answer:\n{out or '(no output)'}")
    if found[1] in FAILED_STATES:
        raise KaggleError(f"kernel {meta['id']}: the run ended with {found[1]}:\n{out}\nRead its log on the "
                          "kernel's page, or with `make kernel-output` (saved in build/kernel-output/).")
    log.info(out)
    return found[1]


def fetch_output(out_dir, paths: Paths) -> Path:
    """Download the kernel's submission.csv (and its run's metrics) into submissions/, ready for `make submit`."""
    from . import kaggle

    meta = read_metadata(out_dir)
    kaggle.require_credentials()
    download_dir = Path(out_dir).parent / f"{Path(out_dir).name}-output"
    shutil.rmtree(download_dir, ignore_errors=True)
    kaggle.run_kaggle("kernels", "output", meta["id"], "-p", str(download_dir), "--force",
                      "--file-pattern", OUTPUT_PATTERN, what="kaggle kernels output",
                      forbidden_hint=_forbidden_hint(meta))
    found = download_dir / "submission.csv"
    _check_downloads(download_dir, meta)
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
        value = metrics.get("ensemble", {}).get("holdout_accuracy")
        accuracy = f", holdout accuracy {value:.4f}" if isinstance(value, (int, float)) else ""
    log.info(f"wrote {target} ({len(labels)} rows{accuracy}) from kernel {meta['id']}; send it with `make submit`")
    return target


def _error_answer(head: bytes) -> bool:
    """Kaggle's JSON error ({"code", "message"}) or a storage service's XML error, saved in place of a file."""
    if head.startswith(b"<?xml"):
        return b"<Error>" in head
    try:
        answer = json.loads(head)
    except ValueError:
        return False
    return isinstance(answer, dict) and set(answer) == {"code", "message"}


def _check_downloads(download_dir: Path, meta: dict) -> None:
    """The CLI saves an error answer in place of a file it could not fetch, and exits 0: raise instead."""
    for path in sorted(p for p in download_dir.rglob("*") if p.is_file()):
        head = path.read_bytes()[:4096]
        if _error_answer(head):
            raise KaggleError(f"kaggle kernels output: {path.relative_to(download_dir)} of kernel {meta['id']} "
                              f"could not be downloaded; Kaggle answered {head[:300].decode(errors='replace')!r}. "
                              "Retry `make kernel-output`.")


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
