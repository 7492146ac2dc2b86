"""The run report: figures and report.html from a real run's saved files, without retraining."""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from digits import report
from digits.cli import main
from digits.errors import InputError

FIGURES = ["train_samples.png", "class_distribution.png", "member_m00.png", "member_m01.png",
           "confusion_matrix.png", "worst_mistakes.png"]  # with folds: no one holdout for "accuracy by size"


def check_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG", path
        width, height = image.size
        image.verify()
    assert 400 <= width <= 2500 and 150 <= height <= 2000, (path, width, height)
    assert path.stat().st_size > 5_000, path  # not an empty canvas


def test_training_writes_the_report(trained_run):
    _, run_dir = trained_run
    assert (run_dir / "report.html").is_file()
    for name in FIGURES:
        check_png(run_dir / "figures" / name)
    samples = np.load(run_dir / "train_samples.npz")
    fold = np.load(run_dir / "holdout.npz")["fold"]
    assert int(samples["counts"].sum()) == np.sum(fold != 0)  # member 0's train rows
    assert np.bincount(samples["labels"], minlength=10).tolist() == [10] * 10
    assert samples["pixels"].shape == (100, 784)


def test_report_command_rebuilds_from_saved_files(trained_run, tmp_path, capsys):
    _, run_dir = trained_run
    copy = tmp_path / run_dir.name  # no models, no old figures: everything is redrawn from saved files
    # nor oof.npz, as in a run finished before it existed
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.keras", "figures", "report.html", "oof.npz"))
    assert main(["report", str(copy)]) == 0
    rebuilt, saved = np.load(copy / "oof.npz"), np.load(run_dir / "oof.npz")
    assert all(np.array_equal(rebuilt[key], saved[key]) for key in saved.files) and rebuilt.files == saved.files
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    for name in FIGURES:
        check_png(copy / "figures" / name)
    page = (copy / "report.html").read_text()
    for name in FIGURES:
        assert f'href="figures/{name}"' in page, name
    sources = re.findall(r'src="([^"]{0,40})', page)
    assert len(sources) == len(FIGURES) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page  # self-contained: one file, images embedded
    metrics = json.loads((copy / "metrics.json").read_text())
    assert f"CV {metrics['cv']['accuracy']:.4f} +- {metrics['cv']['standard_error']:.4f} (out-of-fold" in page
    for row in metrics["ensemble"]["per_class"]:
        assert f"<td>{row['label']}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>" in page


def test_confusion_matrix_sums_to_the_out_of_fold_rows(trained_run):
    _, run_dir = trained_run
    run = report.load_run(run_dir)
    matrix = report.confusion_matrix(run["labels"], run["probs"].argmax(1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ensemble, cv = metrics["ensemble"], metrics["cv"]
    assert matrix.sum() == cv["rows"] == np.sum(np.load(run_dir / "holdout.npz")["fold"] <= 1)  # folds 0 and 1
    assert np.trace(matrix) / matrix.sum() == pytest.approx(cv["accuracy"])
    recall = np.diag(matrix) / matrix.sum(1)
    assert recall == pytest.approx([row["recall"] for row in ensemble["per_class"]])


def test_report_errors_name_the_problem(trained_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "no-such-run")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    _, run_dir = trained_run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "holdout.npz"):
        shutil.copy(run_dir / name, unfinished / name)
    with pytest.raises(InputError, match="metrics.json: file not found; the run has not finished"):
        report.build(unfinished)
