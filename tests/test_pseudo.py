"""Pseudo-labels for real: a tiny two-round run never opens answers.csv, and a kill in its second round resumes to
that run's bytes."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli
from test_resume import kill_when, member_bytes

ARGS = ["train", "--config", "tiny", "--jobs", "1", "--set", "epochs=2", "--set", "pseudo_label=true",
        "--set", "pseudo_threshold=0.9"]
# `digits ARGS` under an audit hook that ends the process on any open of a file named answers.csv
WATCHED = """import os, runpy, sys
def hook(event, args):
    if event == "open" and str(args[0]).endswith("answers.csv"):
        print("OPENED", args[0], flush=True)
        os._exit(3)
sys.addaudithook(hook)
sys.argv = ["digits", *sys.argv[1:]]
runpy.run_module("digits", run_name="__main__")
"""


def test_a_pseudo_labelled_run_never_opens_the_answers_and_resumes_to_the_same_bytes(small_data, tmp_path):
    paths = paths_under(tmp_path / "reference")
    result = subprocess.run([sys.executable, "-c", WATCHED, *ARGS, *map(str, path_args(paths)), "--data-dir",
                             str(small_data)], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pseudo-labels:" in result.stdout
    run_dir = next(paths.models_dir.glob("tiny-*"))
    record = json.loads((run_dir / "manifest.json").read_text())["pseudo_label"]
    chosen = np.load(run_dir / "pseudo.npz")
    assert record["first_round"] == 1 and record["threshold"] == 0.9 and record["test_rows"] == 500
    assert record["test_images"] == len(chosen["index"]) > 100
    answers = pd.read_csv(small_data / "answers.csv")["Label"].to_numpy()
    assert np.mean(answers[chosen["index"]] == chosen["label"]) > 0.9  # the labels are mostly right
    assert f"{record['test_images']:,} of the 500 test images" in (run_dir / "report.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fold = np.load(run_dir / "holdout.npz")["fold"]
    assert metrics["cv"]["members"] == [0] and metrics["cv"]["rows"] == np.sum(fold == 0)  # the first round's only
    assert [m["index"] for m in metrics["members"]] == [0, 1]  # the submission averages both rounds

    reference, reference_csv = paths, open(result.stdout.strip().splitlines()[-1], "rb").read()
    paths = paths_under(tmp_path / "killed")
    assert kill_when(paths, small_data, "m01", 1, 0.1, ARGS), "the run finished before it could be interrupted"
    assert (next(paths.models_dir.glob("tiny-*")) / "pseudo.npz").is_file()
    result = run_cli(*ARGS, *path_args(paths), "--data-dir", small_data, check=True)
    assert "member 2/2: resuming after epoch" in result.stdout
    assert "member 1/2 epoch" not in result.stdout  # the first round was not retrained
    assert member_bytes(paths) == member_bytes(reference)
    assert open(result.stdout.strip().splitlines()[-1], "rb").read() == reference_csv
    pseudo = [(next(p.models_dir.glob("tiny-*")) / "pseudo.npz").read_bytes() for p in (reference, paths)]
    assert pseudo[0] == pseudo[1]
