"""Submission files are checked like the data (file, row, column, what was expected); scoring, averaging, splitting."""

import numpy as np
import pytest

from conftest import run_cli
from digits import data, ensemble, submission
from digits.errors import InputError

TEST_ROWS = 500  # rows of the small_data fixture's test.csv and answers.csv


def _good_lines(answers_text: str) -> list[str]:
    return answers_text.rstrip("\n").split("\n")  # a perfect submission: the answers themselves


def _swap_rows(lines, a, b):
    lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
    return lines


# id -> (edit the lines of a good submission, the message's start after the file's path)
BAD = {
    "bad header": (lambda lines: ["ImageId,label", *lines[1:]],
                   ", row 1 (header): expected 'ImageId,Label', got 'ImageId,label'"),
    "wrong id": (lambda lines: [*lines[:2], "7,3", *lines[3:]], ", row 3, column 'ImageId': expected 2, got '7'"),
    "ids out of order": (lambda lines: _swap_rows(lines, 10, 11), ", row 10, column 'ImageId': expected 9, got '10'"),
    "label 10": (lambda lines: [*lines[:4], "4,10", *lines[5:]],
                 ", row 5, column 'Label': expected a digit 0..9, got '10'"),
    "label x": (lambda lines: [*lines[:5], "5,x", *lines[6:]],
                ", row 6, column 'Label': expected a digit 0..9, got 'x'"),
    "three fields": (lambda lines: [*lines[:6], "6,1,2", *lines[7:]],
                     ", row 7: expected 2 fields (ImageId,Label), got 3: '6,1,2'"),
    "too few rows": (lambda lines: lines[:-1],
                     ", row 501: expected ImageId 500 (500 rows, one per row of {against}), got end of file after "
                     "499 row(s)"),
    "too many rows": (lambda lines: [*lines, "501,3"],
                      ", row 502: expected end of file (500 rows, one per row of {against}), got 1 more row(s)"),
    "empty": (lambda lines: [], ", row 1: expected the header 'ImageId,Label', got an empty file"),
    "header only": (lambda lines: lines[:1],
                    ", row 2: expected ImageId 1 (500 rows, one per row of {against}), got end of file after 0 row(s)"),
}


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_submission_is_named(case, small_data, tmp_path):
    edit, expected = BAD[case]
    path = tmp_path / "submission.csv"
    path.write_text("\n".join(edit(_good_lines((small_data / "answers.csv").read_text()))) + "\n")
    test_rows = len(data.read_test(data.find_csv(small_data, "test.csv")))
    assert test_rows == TEST_ROWS

    with pytest.raises(InputError) as caught:  # as `digits submit` checks it: against test.csv
        submission.read(path, expected_rows=test_rows)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{path}{expected.format(against='test.csv')}"), str(caught.value)

    result = run_cli("evaluate", path, "--answers", small_data / "answers.csv", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}{expected.format(against='answers.csv')}"), lines


def test_submission_header_only_without_a_row_count(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ImageId,Label\n")
    with pytest.raises(InputError, match=r"s\.csv, row 2: expected a data row 'ImageId,Label', got end of file"):
        submission.read(path)
    with pytest.raises(InputError, match=r"s\.csv: file not found \(expected a submission CSV"):
        submission.read(tmp_path / "missing" / "s.csv")


def test_accepted_submission_variants(tmp_path):
    good = [1, 0, 9, 3]
    for name, text in {
        "plain": "ImageId,Label\n1,1\n2,0\n3,9\n4,3\n",
        "crlf": "ImageId,Label\r\n1,1\r\n2,0\r\n3,9\r\n4,3\r\n",
        "bom, no final newline": "\ufeffImageId,Label\n1,1\n2,0\n3,9\n4,3",
        "spaces, blank line at end": "ImageId, Label\n1, 1\n2 ,0\n3,9\n4,3\n\n",
    }.items():
        path = tmp_path / "s.csv"
        path.write_bytes(text.encode())
        assert submission.read(path, expected_rows=4).tolist() == good, name


def test_write_then_read_round_trip(tmp_path):
    labels = np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    path = submission.write(tmp_path / "sub" / "s.csv", labels)
    assert path.read_text().splitlines()[:3] == ["ImageId,Label", "1,7", "2,2"]
    np.testing.assert_array_equal(submission.read(path, expected_rows=10), labels)


def test_accuracy_against_a_hand_built_example(tmp_path):
    answers = tmp_path / "answers.csv"
    answers.write_text("ImageId,Label\n1,1\n2,2\n3,3\n4,4\n5,5\n")
    guess = tmp_path / "guess.csv"
    guess.write_text("ImageId,Label\n1,1\n2,2\n3,0\n4,4\n5,0\n")  # 3 of 5 right
    assert submission.accuracy(guess, answers) == pytest.approx(0.6)
    assert submission.accuracy(answers, answers) == 1.0
    result = run_cli("evaluate", guess, "--answers", answers, check=True, timeout=120)
    assert result.stdout.strip() == f"{guess}: accuracy 0.60000"


def test_ensemble_average_against_a_hand_computed_example():
    member_a = np.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7]], dtype=np.float32)
    member_b = np.array([[0.2, 0.8, 0.0], [0.3, 0.3, 0.4]], dtype=np.float32)
    member_c = np.array([[0.1, 0.0, 0.9], [0.2, 0.1, 0.7]], dtype=np.float32)
    mean = ensemble.average([member_a, member_b, member_c])
    assert mean.dtype == np.float32 and mean.shape == (2, 3)
    np.testing.assert_allclose(mean, [[0.3, 0.4, 0.3], [0.2, 0.2, 0.6]], atol=1e-6)
    np.testing.assert_array_equal(mean.argmax(1), [1, 2])  # no member alone picks class 1 for row 1 with 0.4
    np.testing.assert_array_equal(ensemble.average([member_a]), member_a)
    with pytest.raises(ValueError):
        ensemble.average([])


def test_split_holdout_is_stratified_and_seeded():
    counts = [101, 230, 57, 300, 12, 88, 150, 199, 64, 43]
    labels = np.repeat(np.arange(10), counts)
    np.random.default_rng(0).shuffle(labels)
    fraction = 0.1
    train_idx, holdout_idx = data.split_holdout(labels, fraction, seed=42)

    assert np.array_equal(np.sort(np.concatenate([train_idx, holdout_idx])), np.arange(len(labels)))
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(holdout_idx) > 0)
    per_class = np.bincount(labels[holdout_idx], minlength=10)
    for digit, (got, total) in enumerate(zip(per_class, counts, strict=True)):
        assert abs(got - total * fraction) <= 1, f"class {digit}: {got} held out of {total}"

    again = data.split_holdout(labels, fraction, seed=42)
    assert np.array_equal(again[0], train_idx) and np.array_equal(again[1], holdout_idx)
    other = data.split_holdout(labels, fraction, seed=7)
    assert not np.array_equal(other[1], holdout_idx)
    with pytest.raises(ValueError):
        data.split_holdout(labels, 0.0, seed=42)
