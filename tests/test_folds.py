"""A fold per member: every labelled row gets an out-of-fold (OOF) prediction from members that never trained on it;
`holdout = "shared"` keeps the single holdout that runs had before folds; old runs read as they were written."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import path_args, paths_under, run_cli
from digits import data, mnist, runs, split
from digits.config import load_config
from digits.errors import InputError

QUARTERS = ["train", "--config", "tiny", "--set", "holdout_fraction=0.25"]  # K = 4 folds of 500 rows


@pytest.fixture(scope="module")
def five_members(small_data, tmp_path_factory):
    """K + 1 = 5 members on 4 folds, two at once: member 4 holds out fold 0 again."""
    paths = paths_under(tmp_path_factory.mktemp("folds"))
    result = run_cli(*QUARTERS, "--set", "members=5", "--jobs", "2", *path_args(paths), "--data-dir", small_data,
                     check=True)
    return paths, paths.models_dir / Path(result.stdout.strip().splitlines()[-1]).stem, result


def test_every_labelled_row_is_scored_only_by_members_that_held_it_out(five_members, small_data):
    paths, run_dir, result = five_members
    labels = data.read_train(data.find_csv(small_data, "train.csv"))[1]
    the_split = split.load(run_dir)
    assert the_split.folds == 4 and np.array_equal(the_split.labels, labels)
    for index in range(5):
        train_rows, held_rows = the_split.member_rows(index)
        assert not np.intersect1d(train_rows, held_rows).size
        assert np.array_equal(np.union1d(train_rows, held_rows), np.arange(2000))
        assert np.array_equal(held_rows, np.flatnonzero(the_split.fold == index % 4))
        done = runs.member_info(run_dir, index)
        member_probs = np.load(runs.member_dir(run_dir, index) / runs.HOLDOUT_PROBS_FILE)
        assert len(member_probs) == len(held_rows)
        assert done["holdout_accuracy"] == float(np.mean(member_probs.argmax(1) == labels[held_rows]))
    counts = np.array([np.bincount(labels[the_split.fold == k], minlength=10) for k in range(4)])
    assert (counts.max(0) - counts.min(0) <= 1).all()  # stratified: each digit's rows spread evenly

    oof = np.load(run_dir / "oof.npz")
    assert np.array_equal(oof["row"], np.arange(2000)) and np.array_equal(oof["label"], labels)
    expected = np.zeros((2000, 10))
    for index in range(5):
        expected[the_split.member_rows(index)[1]] += np.load(runs.member_dir(run_dir, index) / runs.HOLDOUT_PROBS_FILE)
    counts = np.where(the_split.fold == 0, 2, 1)
    assert np.array_equal(oof["members"], counts)
    assert np.allclose(oof["probs"], expected / counts[:, None], atol=1e-6)

    cv = json.loads((run_dir / "metrics.json").read_text())["cv"]
    assert (cv["kind"], cv["rows"], cv["labelled_rows"], cv["folds"]) == ("out-of-fold", 2000, 2000, 4)
    assert cv["accuracy"] == float(np.mean(oof["probs"].argmax(1) == labels))
    assert cv["standard_error"] == pytest.approx(np.sqrt(cv["accuracy"] * (1 - cv["accuracy"]) / 2000))
    assert f"CV {cv['accuracy']:.4f} +- {cv['standard_error']:.4f} (out-of-fold on all 2,000 labelled rows" \
           in result.stdout
    assert "it estimates one member, not the ensemble" in result.stdout


def test_an_ensemble_of_some_members_is_scored_on_their_folds_only(five_members):
    paths, run_dir, _ = five_members
    result = run_cli("ensemble", run_dir.name, "--members", "1,2", *path_args(paths), check=True)
    cv = json.loads((run_dir / "metrics-m1_2.json").read_text())["cv"]
    fold = split.load(run_dir).fold
    assert cv["rows"] == np.sum((fold == 1) | (fold == 2)) and cv["members"] == [1, 2]
    assert f"out-of-fold on {cv['rows']:,} of 2,000 labelled rows" in result.stdout
    assert np.array_equal(np.load(run_dir / "oof-m1_2.npz")["row"], np.flatnonzero((fold == 1) | (fold == 2)))


def test_a_shared_holdout_reproduces_the_single_split(small_data, tmp_path):
    paths = paths_under(tmp_path)
    result = run_cli("train", "--config", "tiny", "--set", "holdout=shared", *path_args(paths), "--data-dir",
                     small_data, check=True)
    run_dir = paths.models_dir / Path(result.stdout.strip().splitlines()[-1]).stem
    labels = data.read_train(data.find_csv(small_data, "train.csv"))[1]
    train_index, holdout_index = data.split_holdout(labels, 0.08, 42)
    saved = np.load(run_dir / "holdout.npz")
    assert np.array_equal(saved["train_index"], train_index) and np.array_equal(saved["holdout_index"], holdout_index)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["cv"]["kind"], metrics["cv"]["rows"], metrics["cv"]["labelled_rows"]) == ("holdout", 160, 2000)
    assert len(metrics["ensemble"]["accuracy_by_size"]) == 2
    assert metrics["ensemble"]["accuracy_by_size"][-1] == metrics["cv"]["accuracy"]
    assert (run_dir / "figures" / "accuracy_by_size.png").is_file()
    for index in range(2):
        assert np.array_equal(split.load(run_dir).member_rows(index)[1], holdout_index)
    listed = run_cli("runs", *path_args(paths), "--data-dir", small_data, check=True).stdout
    assert f"{metrics['cv']['accuracy']:.4f} (holdout)" in listed


def test_a_run_saved_before_folds_reads_as_a_shared_holdout(tmp_path):
    config = load_config("tiny").to_dict()
    del config["holdout"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert runs.read_config(tmp_path)["holdout"] == "shared"
    assert runs.saved_config(tmp_path).holdout == "shared"


@pytest.mark.parametrize("overrides, expected", [
    ({"holdout": "kfold"}, "key 'holdout' must be 'folds' or 'shared', got 'kfold'"),
    ({"holdout_fraction": "0.4"}, "key 'holdout_fraction' must be at most 1/3 with holdout 'folds' (at least 3 "
                                  "folds), or use holdout 'shared', got 0.4"),
])
def test_bad_fold_settings_are_refused(overrides, expected):
    with pytest.raises(InputError) as caught:
        load_config("tiny", overrides)
    assert expected in str(caught.value)


def test_a_shared_holdout_may_be_larger_than_a_third():
    assert load_config("tiny", {"holdout_fraction": "0.4", "holdout": "shared"}).holdout_fraction == 0.4


@pytest.mark.parametrize("fraction", [0.08, 0.1, 0.25])
def test_the_fold_check_accepts_only_what_every_fold_can_hold(mnist_idx, fraction):
    """On real MNIST labels, thinned: where check_learnable accepts folds, every fold holds every digit."""
    _, labels, _, _ = mnist.load_all(mnist_idx)
    k = data.fold_count(fraction)
    accepted = refused = 0
    for few in range(k - 2, k + 3):
        case = np.concatenate([labels[labels == d][:few if d == 4 else 3 * k] for d in range(10)])
        try:
            data.check_learnable("train.csv", case, fraction, folds=True)
        except InputError as err:
            assert few < k and f"expected at least {k} rows of each digit" in str(err)
            refused += 1
            continue
        fold = data.split_folds(case, fraction, 42)
        assert all(set(case[fold == f]) == set(range(10)) for f in range(k))
        accepted += 1
    assert accepted and refused
