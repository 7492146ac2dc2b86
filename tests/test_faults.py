"""Faults a real run meets: data the recipe cannot learn from, and a run whose last step was cut short.

Bad data must be refused before TensorFlow loads (exit 2, one line naming what is missing and what is needed);
a run with every member trained but its report, figures or submission missing is repaired without training.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import make_small_data, path_args, paths_under, run_cli
from digits import data, mnist
from digits.errors import InputError

TINY = ["train", "--config", "tiny"]


def _keep_rows(data_dir, keep):
    """Rewrite data_dir/train.csv keeping the rows (0-based, after the header) for which keep(index, label)."""
    path = data_dir / "train.csv"
    header, *rows = path.read_text().splitlines()
    kept = [row for index, row in enumerate(rows) if keep(index, int(row.split(",", 1)[0]))]
    path.write_text("\n".join([header, *kept]) + "\n")
    return len(kept)


def _refused(paths, *extra):
    """Run `digits train` on bad data: it must exit 2 with one line, before TensorFlow or scikit-learn load."""
    result = run_cli(*TINY, *path_args(paths), *extra, env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.splitlines()
    heavy = [line for line in lines if line.startswith("import time:") and ("tensorflow" in line or "sklearn" in line)]
    assert not heavy, f"heavy modules loaded before the data was refused: {heavy[:3]}"
    messages = [line for line in lines if not line.startswith("import time:")]
    assert len(messages) == 1 and messages[0].startswith("error: "), messages
    assert "Traceback" not in result.stderr
    assert not paths.models_dir.exists() or not any(paths.models_dir.iterdir()), "a refused run left a run folder"
    return messages[0]


def test_a_digit_with_one_row_is_refused(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 1000, 50)
    first_seven = None

    def keep(index, label):
        nonlocal first_seven
        if label == 7:
            first_seven = index if first_seven is None else first_seven
            return index == first_seven
        return True

    _keep_rows(paths.data_dir, keep)
    message = _refused(paths)
    assert f"{paths.data_dir / 'train.csv'}: expected at least 2 rows of each digit" in message
    assert "got 1 row of digit 7" in message


def test_too_few_rows_for_the_holdout_are_refused(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 1000, 50)
    counts = np.zeros(10, int)

    def keep(index, label):  # 6 rows of each digit: 60 rows, an 8% holdout of 5 rows cannot hold 10 digits
        counts[label] += 1
        return counts[label] <= 6

    assert _keep_rows(paths.data_dir, keep) == 60
    message = _refused(paths)
    assert "expected at least 12 rows of each digit (one in each of the 12 stratified folds of holdout_fraction " \
           "0.08), got digits 0, 1, 2, 3, 4, 5, 6, 7, 8 and 9 with 6, 6, 6, 6, 6, 6, 6, 6, 6, 6 row(s)" in message
    message = _refused(paths, "--set", "holdout=shared")
    assert "expected at least 113 rows for a stratified holdout of 0.08" in message
    assert "got 60 rows (5 for the holdout, 55 for training)" in message


def test_max_train_rows_too_small_names_the_limit(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 1000, 50)
    message = _refused(paths, "--set", "max_train_rows=40")
    assert "(its first 40 rows: max_train_rows)" in message


def test_missing_digits_are_refused_unless_allowed(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 1000, 50)
    _keep_rows(paths.data_dir, lambda index, label: label == 3)
    message = _refused(paths)
    assert "expected rows of every digit 0..9, got no digits 0, 1, 2, 4, 5, 6, 7, 8 or 9" in message
    assert "--set allow_missing_digits=true" in message

    _, labels, _, _ = data.read_inputs(paths.data_dir)
    data.check_learnable("train.csv", labels, 0.08, allow_missing_digits=True)  # deliberately allowed: accepted
    train_index, holdout_index = data.split_holdout(labels, 0.08, 42)
    assert len(holdout_index) and set(labels[holdout_index]) == {3}


def test_a_test_csv_without_rows_is_refused(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 1000, 50)
    test_csv = paths.data_dir / "test.csv"
    test_csv.write_text(test_csv.read_text().splitlines()[0] + "\n")
    message = _refused(paths)
    assert message.startswith(f"error: {test_csv}, row 2: expected a data row of 784 values, got end of file")


@pytest.mark.parametrize("fraction", [0.08, 0.2, 0.3, 0.49])
def test_the_check_is_exactly_scikit_learns_condition(mnist_idx, fraction):
    """On real MNIST labels, cut and thinned, check_learnable refuses exactly what the stratified split cannot do."""
    _, labels, _, _ = mnist.load_all(mnist_idx)
    cases = [labels[:n] for n in range(10, 240, 3)]
    cases += [np.concatenate([labels[labels == d][:k if d % 2 else 5] for d in range(10)]) for k in (0, 1, 2, 3, 7)]
    refused = accepted = 0
    for case in cases:
        try:
            data.split_holdout(case, fraction, 42)
            split_fails = False
        except ValueError as err:
            assert not isinstance(err, InputError)
            split_fails = True
        try:
            data.check_learnable("train.csv", case, fraction, allow_missing_digits=True)
            check_fails = False
        except InputError:
            check_fails = True
        assert check_fails == split_fails, (len(case), np.bincount(case, minlength=10), fraction)
        refused += check_fails
        accepted += not check_fails
    assert refused and accepted


def _member_files(run_dir):
    return {p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in (run_dir / "members").rglob("*") if p.is_file()}


def test_a_run_cut_short_after_training_is_repaired_without_training(mnist_idx, tmp_path):
    paths = paths_under(tmp_path)
    make_small_data(mnist_idx, paths.data_dir, 800, 100)
    result = run_cli(*TINY, *path_args(paths), check=True, timeout=300)
    submission = Path(result.stdout.strip().splitlines()[-1])
    run_dir = paths.models_dir / submission.stem
    members = _member_files(run_dir)
    report_html = run_dir / "report.html"
    figures = [run_dir / "figures" / name for name in ("confusion_matrix.png", "worst_mistakes.png")]
    page = report_html.read_text()

    # as a kill during the report step leaves it: metrics written, report and two figures not
    for path in (report_html, *figures):
        path.unlink()
    result = run_cli(*TINY, *path_args(paths), check=True, timeout=300)
    assert "rebuilding what is missing: report.html, figures/confusion_matrix.png" in result.stdout, result.stdout
    assert "already finished" not in result.stdout
    assert report_html.is_file() and all(path.is_file() for path in figures)
    assert report_html.read_text() == page
    assert _member_files(run_dir) == members, "the repair retrained a member"

    # a kill before the ensemble was saved: no metrics, no ensemble probabilities, no submission, no report
    for name in ("metrics.json", "oof.npz", "ensemble_test_probs.npy", "report.html"):
        (run_dir / name).unlink()
    submission.unlink()
    result = run_cli(*TINY, *path_args(paths), check=True, timeout=300)
    assert (run_dir / "metrics.json").is_file() and submission.is_file() and report_html.is_file()
    assert _member_files(run_dir) == members, "the repair retrained a member"

    result = run_cli(*TINY, *path_args(paths), check=True, timeout=300)
    assert "already finished" in result.stdout
