"""Download, submit, scores and errors: the real kaggle client (as a library) against the loopback stand-in."""

import ast
import contextlib
import importlib.util
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli
from digits import kaggle, submission
from digits.config import Paths, load_config
from digits.errors import InputError
from kaggle_standin import KaggleStandIn, cli_env, port_closed

RULES_URL = "https://www.kaggle.com/competitions/digit-recognizer/rules"
KEY = "k3y" + secrets.token_hex(14)  # the fake API key: must never show up in output or files


def clean_environ() -> dict:
    """os.environ without anything that would change which credentials, proxy or make flags apply."""
    drop = ("KAGGLE_", "DIGITS_KAGGLE_", "DIGITS_DOWNLOAD_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
            "MAKE", "MFLAGS")
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(drop) and k != "XDG_CONFIG_HOME"}


@pytest.fixture(autouse=True)
def _no_outside_credentials(monkeypatch):
    """run_cli starts from os.environ: make sure the developer's own Kaggle setup cannot leak in."""
    for name in set(os.environ) - set(clean_environ()):
        monkeypatch.delenv(name)


def env_for(home: Path, proxy: str, **extra) -> dict:
    """Environment of a `digits` run: fake HOME, the kaggle client in LOCALHOST mode, the stand-in at `proxy`."""
    env = cli_env(str(home), proxy, MPLCONFIGDIR=str(PROJECT_ROOT / ".cache" / "matplotlib"), **extra)
    env.pop("PATH")  # keep the caller's PATH (make, the venv)
    return env


def make(*targets, env: dict, **variables) -> subprocess.CompletedProcess:
    """`make TARGETS VAR=value` in the project, without reinstalling the venv."""
    command = ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-o", ".venv/bin/.installed", *targets,
               *(f"{k}={v}" for k, v in variables.items())]
    proc = subprocess.run(command, capture_output=True, text=True, env={**clean_environ(), **env}, timeout=600)
    print(f"$ {' '.join(command)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def zip_of(folder: Path, names=("train.csv", "test.csv", "sample_submission.csv"), **replace: bytes) -> bytes:
    """The competition zip as Kaggle serves it, built from real MNIST-derived CSVs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(name, replace.get(name.replace(".", "_")) or (folder / name).read_bytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def served_zip(small_data) -> bytes:
    return zip_of(small_data)


@pytest.fixture
def home(tmp_path) -> Path:
    """HOME with ~/.kaggle/kaggle.json (username testuser, the fake KEY), mode 600."""
    config = tmp_path / "home" / ".kaggle"
    config.mkdir(parents=True)
    (config / "kaggle.json").write_text(json.dumps({"username": "testuser", "key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    return tmp_path / "home"


def assert_no_key(*texts_or_dirs):
    """KEY appears in no output and in no file under the given folders."""
    for item in texts_or_dirs:
        if isinstance(item, Path):
            for path in item.rglob("*"):
                assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
        else:
            assert KEY not in item


def valid_submission(small_data: Path, path: Path) -> Path:
    """A well-formed submission for small_data's test.csv (its true answers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((small_data / "answers.csv").read_bytes())
    return path


def staging_left(data_dir: Path) -> list:
    return list(data_dir.glob(".download-*")) if data_dir.exists() else []


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The first line of a failed command's stderr: `error: ...`, under 300 characters, no traceback or repr."""
    first = proc.stderr.splitlines()[0]
    assert proc.returncode == 1 and first.startswith("error: ") and len(first) < 300, (len(first), proc.stderr)
    for dump in ("Traceback", "Error(", "Error: (", "IncompleteRead", ".download-"):
        assert dump not in proc.stdout + proc.stderr, dump
    return first


def download_requests(server: KaggleStandIn) -> list[tuple[str, str]]:
    return [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in server.requests]


def expected_score(file: Path, answers: Path) -> float:
    """The public score the stand-in gives `file` when it scores against `answers`: its accuracy, 5 decimals."""
    return round(submission.accuracy(file, answers), 5)


def records(folder: Path) -> list[dict]:
    return json.loads((folder / "kaggle_submissions.json").read_text())


def polls(server: KaggleStandIn) -> int:
    return sum(path.endswith("/ListSubmissions") for path in server.paths())


@pytest.fixture
def run_folder(small_data, tmp_path) -> tuple[Paths, Path, Path]:
    """(paths, run folder, its submission): a finished run's files written by hand, no training.

    Its submission is small_data's answers with every 8th label wrong: it scores below 1.
    """
    paths = Paths(data_dir=small_data, models_dir=tmp_path / "models", submissions_dir=tmp_path / "submissions")
    run_dir = paths.models_dir / "tiny-0123abcd"
    run_dir.mkdir(parents=True)
    lines = (small_data / "answers.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    labels = [f"{i},{(int(label) + 1) % 10 if int(i) % 8 == 0 else label}" for i, label in rows]
    file = paths.submissions_dir / f"{run_dir.name}.csv"
    file.parent.mkdir()
    file.write_text("\n".join([lines[0], *labels]) + "\n")
    (run_dir / "config.json").write_text(json.dumps(load_config("tiny").to_dict()))
    (run_dir / "metrics.json").write_text(json.dumps({"run_id": run_dir.name, "submission": str(file),
                                                      "ensemble": {"holdout_accuracy": 0.9321}}))
    return paths, run_dir, file


def scoring_server(small_data: Path, served_zip: bytes, **settings) -> KaggleStandIn:
    """A stand-in that scores submissions against small_data's answers, with `settings` (pending_polls=...)."""
    server = KaggleStandIn(served_zip)
    server.answers = (small_data / "answers.csv").read_bytes()
    for name, value in settings.items():
        setattr(server, name, value)
    return server


def runs_table(paths: Paths, env: dict) -> dict[str, str]:
    """`digits runs`: the PUBLIC cell of each run's row."""
    lines = run_cli("runs", *path_args(paths), env=env, check=True).stdout.splitlines()
    assert lines[0].split()[-1] == "PUBLIC", lines
    return {line.split()[0]: line.split()[-1] for line in lines[1:]}


def test_make_download_train_submit_end_to_end(served_zip, small_data, home, tmp_path):
    """`make download train submit submissions`, the real client: data checked in place, exact bytes sent, scored."""
    paths = paths_under(tmp_path / "project")
    args = " ".join(map(str, path_args(paths)))
    with scoring_server(small_data, served_zip) as server:
        env = env_for(home, server.proxy)
        proc = make("download", "train", "submit", "submissions", env=env, CONFIG="tiny", ARGS=args)
        assert proc.returncode == 0
        for name in ("train.csv", "test.csv", "sample_submission.csv"):
            assert (paths.data_dir / name).read_bytes() == server.member(name), name
        assert not staging_left(paths.data_dir) and not (paths.data_dir / "digit-recognizer.zip").exists()

        (sent,) = server.submissions
        (file,) = paths.submissions_dir.glob("*.csv")
        assert sent["content"] == file.read_bytes() and sent["file_name"] == file.name
        run_id = file.stem
        accuracy = json.loads((paths.models_dir / run_id / "metrics.json").read_text())["cv"]["accuracy"]
        assert sent["message"] == f"{run_id}: CV {accuracy:.4f}"
        score = expected_score(file, small_data / "answers.csv")
        assert f"public score {score}: submission 1000 ({file.name})" in proc.stdout  # `make submit` waited
        (record,) = records(paths.models_dir / run_id)
        assert (record["ref"], record["status"], record["public_score"]) == (1000, "complete", score)
        assert f"{score:.5f}" in proc.stdout.split("DATE (UTC)")[-1]  # `make submissions` lists it
        assert_no_key(proc.stdout, proc.stderr, paths.models_dir, paths.submissions_dir, paths.data_dir)

        # valid files already there: a no-op that asks nothing of the server; --force fetches again
        before = len(server.requests)
        again = run_cli("download", *path_args(paths), env=env, check=True)
        assert "already there and valid" in again.stdout and len(server.requests) == before
        forced = run_cli("download", "--force", *path_args(paths), env=env, check=True)
        assert "from Kaggle, checked" in forced.stdout
        assert server.paths()[before].endswith("/DownloadDataFiles")

        # the offline files of `make demo` (they come with answers.csv) are replaced by Kaggle's, answers removed
        (paths.data_dir / "answers.csv").write_text("ImageId,Label\n1,0\n")
        replaced = run_cli("download", *path_args(paths), env=env, check=True)
        assert "offline MNIST files" in replaced.stdout and "from Kaggle, checked" in replaced.stdout
        assert not (paths.data_dir / "answers.csv").exists()


def test_submit_waits_for_the_public_score_and_runs_shows_it(run_folder, small_data, served_zip, home):
    """Pending for two polls, then scored: `digits submit` prints the score and records it; `digits runs` shows it."""
    paths, run_dir, file = run_folder
    score = expected_score(file, small_data / "answers.csv")
    with scoring_server(small_data, served_zip, pending_polls=2) as server:
        env = env_for(home, server.proxy)
        before = runs_table(paths, env)
        proc = run_cli("submit", "--poll-interval", "0.05", *path_args(paths), env=env, check=True)
        (sent,) = server.submissions
    assert before == {run_dir.name: "-"}
    assert sent["content"] == file.read_bytes() and sent["message"] == f"{run_dir.name}: holdout accuracy 0.9321"
    assert polls(server) == 3  # pending, pending, scored
    assert "waiting up to 300 s for Kaggle to score submission 1000" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"public score {score}: submission 1000 ({file.name})")
    (record,) = records(run_dir)
    assert record["ref"] == 1000 and record["file"] == str(file) and record["message"] == sent["message"]
    assert (record["status"], record["public_score"]) == ("complete", score)
    assert datetime.fromisoformat(record["submitted"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert runs_table(paths, env) == {run_dir.name: str(score)}
    listed = json.loads(run_cli("runs", "--json", *path_args(paths), env=env, check=True).stdout)
    assert listed[0]["public_score"] == score
    assert_no_key(proc.stdout, proc.stderr, paths.models_dir)


def test_a_submission_still_pending_is_scored_by_submissions_later(run_folder, small_data, served_zip, home):
    """The wait ends first: exit 0, reported pending; `digits submissions` later fills the score in."""
    paths, run_dir, file = run_folder
    score = expected_score(file, small_data / "answers.csv")
    with scoring_server(small_data, served_zip, pending_seconds=3600) as server:
        env = env_for(home, server.proxy)
        waited = run_cli("submit", file, "--wait", "0.3", "--poll-interval", "0.1", *path_args(paths), env=env,
                         check=True)
        pending = records(run_dir)
        table_then = runs_table(paths, env)
        server.pending_seconds = 0
        listed = run_cli("submissions", *path_args(paths), env=env, check=True)
        again = run_cli("submissions", *path_args(paths), env=env, check=True)
    assert 2 <= polls(server) - 2 <= 5  # the waiting polls (0.3 s every 0.1 s), then one per `submissions`
    assert "submission 1000 (tiny-0123abcd.csv) is still being scored after 0.3 s" in waited.stdout
    assert "run `digits submissions` later" in waited.stdout and "public score" not in waited.stdout
    assert [(r["ref"], r["status"], r["public_score"]) for r in pending] == [(1000, "pending", None)]
    assert table_then == {run_dir.name: "-"}
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["DATE", "(UTC)", "REF", "FILE", "STATUS", "PUBLIC", "MESSAGE"]
    assert row.split()[2:6] == ["1000", file.name, "complete", f"{score:.5f}"]
    assert f"submission 1000 scored {score}; recorded in {run_dir / 'kaggle_submissions.json'}" in listed.stdout
    assert "recorded in" not in again.stdout  # nothing left to fill in
    (record,) = records(run_dir)
    assert (record["status"], record["public_score"]) == ("complete", score) and "scored" in record
    assert runs_table(paths, env) == {run_dir.name: str(score)}


def test_no_wait_sends_and_returns(run_folder, small_data, served_zip, home):
    """`make submit ARGS=--no-wait`: sent and recorded as pending, no poll."""
    paths, run_dir, file = run_folder
    with scoring_server(small_data, served_zip) as server:
        proc = make("submit", env=env_for(home, server.proxy), FILE=file,
                    ARGS=" ".join(map(str, ["--no-wait", *path_args(paths)])))
    assert proc.returncode == 0
    assert len(server.submissions) == 1 and polls(server) == 0
    assert "`make submissions` shows them" in proc.stdout and "waiting" not in proc.stdout
    assert [(r["ref"], r["status"]) for r in records(run_dir)] == [(1000, "pending")]


def test_a_submission_kaggle_cannot_score_is_an_error(run_folder, small_data, served_zip, home):
    paths, run_dir, file = run_folder
    with scoring_server(small_data, served_zip, scoring_error="Submission file has the wrong number of rows") as server:
        proc = run_cli("submit", file, "--poll-interval", "0.05", *path_args(paths), env=env_for(home, server.proxy))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Kaggle could not score submission 1000 (tiny-0123abcd.csv): Submission file has the wrong" in proc.stderr
    (record,) = records(run_dir)
    assert record["status"] == "error" and record["error"].startswith("Submission file has the wrong")


@pytest.mark.parametrize("status, message", [(401, None), (403, None), (401, "Nope."), (403, "Go away.")])
def test_refusals_give_advice(status, message, served_zip, small_data, home, tmp_path):
    """401 and 403 become plain advice keyed on the status (whatever Kaggle's words), exit 1, nothing left behind."""
    paths = paths_under(tmp_path / "project")
    paths.data_dir.mkdir(parents=True)
    file = valid_submission(small_data, paths.submissions_dir / "run.csv")
    with KaggleStandIn(served_zip) as server:
        env = env_for(home, server.proxy)
        server.fail_with, server.fail_message = status, message
        download = run_cli("download", *path_args(paths), env=env)
        assert list(paths.data_dir.iterdir()) == []  # nothing half-written
        (paths.data_dir / "test.csv").write_bytes((small_data / "test.csv").read_bytes())
        submit = run_cli("submit", file, *path_args(paths), env=env)
        listing = run_cli("submissions", *path_args(paths), env=env)
    for proc in (download, submit, listing):
        first = error_line(proc)
        if status == 401:
            assert "Kaggle rejected the credentials (HTTP 401): create a new API token at" in first
        else:
            assert "HTTP 403" in proc.stderr and RULES_URL in proc.stderr
            assert (message or "You must accept this competition's rules") in proc.stderr  # Kaggle's words, relayed
        assert "Traceback" not in proc.stderr
        assert_no_key(proc.stdout, proc.stderr)
    assert server.submissions == []
    assert not (paths.models_dir / "kaggle_submissions.json").exists()


def test_invalid_submissions_never_reach_the_server(served_zip, small_data, home, tmp_path):
    paths = Paths(data_dir=small_data, models_dir=tmp_path / "models", submissions_dir=tmp_path / "subs")
    short = tmp_path / "short.csv"
    short.write_text("ImageId,Label\n1,3\n2,5\n")
    bad_label = valid_submission(small_data, tmp_path / "bad_label.csv")
    bad_label.write_text(bad_label.read_text().replace("\n3,", "\n3,x", 1))
    with KaggleStandIn(served_zip) as server:
        env = env_for(home, server.proxy)
        results = [run_cli("submit", file, *path_args(paths), env=env) for file in (short, bad_label)]
    assert results[0].returncode == 2 and "short.csv, row 4" in results[0].stderr and "500" in results[0].stderr
    assert results[1].returncode == 2 and "bad_label.csv, row 4, column 'Label'" in results[1].stderr
    assert server.requests == []


def test_no_credentials_lists_the_options_and_sends_nothing(served_zip, small_data, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    paths = Paths(data_dir=tmp_path / "data", models_dir=tmp_path / "models", submissions_dir=tmp_path / "subs")
    file = valid_submission(small_data, paths.submissions_dir / "run.csv")
    with KaggleStandIn(served_zip) as server:
        download = run_cli("download", *path_args(paths), env=env_for(bare, server.proxy))
        paths.data_dir.mkdir()
        (paths.data_dir / "test.csv").write_bytes((small_data / "test.csv").read_bytes())
        submit = make("submit", env=env_for(bare, server.proxy), FILE=file,
                      ARGS=" ".join(map(str, path_args(paths))))
    for proc in (download, submit):
        assert proc.returncode != 0
        for option in ("no Kaggle credentials found", "kaggle.json", "KAGGLE_CONFIG_DIR",
                       "KAGGLE_USERNAME and KAGGLE_KEY", "KAGGLE_API_TOKEN", "~/.kaggle/access_token", "chmod 600"):
            assert option in proc.stderr, option
        assert "Traceback" not in proc.stderr
    assert server.requests == []
    assert error_line(download).startswith("error: no Kaggle credentials found, so nothing was sent to Kaggle: create "
                                           "an API token at https://www.kaggle.com/settings")
    assert download.stderr.splitlines()[-1] == ("None of these was found (a revoked or expired token counts as none), "
                                                "so nothing was sent to Kaggle.")


def test_bad_download_leaves_data_as_it_was(small_data, home, tmp_path):
    """A zip whose train.csv fails the checks: error, and the files already in data/ are untouched."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.csv").write_text("label,pixel0\n1,0\n")  # invalid: --force must still not replace it
    bad = zip_of(small_data, train_csv=(small_data / "train.csv").read_bytes().replace(b"\n7,", b"\n17,", 1))
    with KaggleStandIn(bad) as server:
        proc = run_cli("download", "--data-dir", data_dir, env=env_for(home, server.proxy))
    assert error_line(proc).startswith("error: downloading the digit-recognizer data (nothing in data/ changed): "
                                       "Kaggle's train.csv, row ")
    assert "column 'label': expected an integer 0..9, got '17'; run the same command again." in proc.stderr
    assert sorted(p.name for p in data_dir.iterdir() if p.name != "cache") == ["train.csv"]
    assert (data_dir / "train.csv").read_text() == "label,pixel0\n1,0\n"


@pytest.fixture
def data_dir(small_data, tmp_path) -> Path:
    """A data folder holding valid files already, with a long path: `download --force` must leave it as it is."""
    folder = tmp_path / ("a-long-folder-name-" * 10) / "data"
    folder.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        (folder / name).write_bytes((small_data / name).read_bytes())
    return folder


def test_a_cut_download_is_retried_and_says_so(served_zip, home, data_dir):
    """The connection breaks off mid-file once: the client's retry (a Range request) is announced, then succeeds."""
    with KaggleStandIn(served_zip) as server:
        server.cut_downloads = 1
        proc = run_cli("download", "--force", "--data-dir", data_dir, env=env_for(home, server.proxy), check=True)
    assert "connection lost, retrying the download (1 of 5) ...\n" in proc.stdout
    assert download_requests(server) == [("POST", "DownloadDataFiles"), ("GET", "digit-recognizer.zip"),
                                         ("GET", "digit-recognizer.zip")]
    assert "Range" in server.requests[2]["headers"]
    kept = {name: data for name, data in snapshot(data_dir).items() if not name.startswith("cache/")}
    assert kept == {name: server.member(name) for name in ("sample_submission.csv", "test.csv", "train.csv")}


def test_a_download_cut_on_every_retry_leaves_data_as_it_was(served_zip, home, data_dir):
    """Cut every time (DIGITS_DOWNLOAD_RETRIES=1 keeps it short): one line per retry, then one line of advice."""
    before = snapshot(data_dir)
    with KaggleStandIn(served_zip) as server:
        server.cut_downloads = 10
        proc = run_cli("download", "--force", "--data-dir", data_dir,
                       env=env_for(home, server.proxy, DIGITS_DOWNLOAD_RETRIES="1"))
    assert proc.stdout.splitlines()[1:] == ["connection lost, retrying the download (1 of 1) ..."]
    assert proc.stderr == ("error: downloading the digit-recognizer data (nothing in data/ changed): the connection "
                           "was cut mid-download, and on every retry. Check the network and run the same command "
                           "again.\n")
    error_line(proc)
    assert len(server.requests) == 3 and server.cut_downloads == 8
    assert snapshot(data_dir) == before


LINK_ADVICE = {
    401: "Kaggle rejected the credentials (HTTP 401): create a new API token at https://www.kaggle.com/settings "
         "(section \"API\") and put it where the old one was, then retry.",
    403: "the link Kaggle handed out was refused (HTTP 403; links expire): run the same command again.",
    404: "nothing is at the link Kaggle handed out (HTTP 404): run the same command again later.",
    429: "Kaggle is limiting this account's requests (HTTP 429): wait a few minutes, then retry.",
    503: "Kaggle failed on its side (HTTP 503: Service Unavailable); retry in a few minutes.",
}


@pytest.mark.parametrize("status", sorted(LINK_ADVICE))
def test_a_refused_file_link_gets_advice_keyed_on_its_status(status, served_zip, home, data_dir):
    """The API hands out the link, the link answers an error status: advice for that status, asked once."""
    before = snapshot(data_dir)
    with KaggleStandIn(served_zip) as server:
        server.link_fails_with = status
        link = run_cli("download", "--force", "--data-dir", data_dir, env=env_for(home, server.proxy))
        server.link_fails_with, server.fail_with = None, status
        api = run_cli("download", "--force", "--data-dir", data_dir, env=env_for(home, server.proxy))
    doing = "error: downloading the digit-recognizer data (nothing in data/ changed): "
    assert error_line(link) == f"{doing}digit-recognizer.zip could not be downloaded: {LINK_ADVICE[status]}"
    if status not in (403, 404):  # the same advice as for the API call; there they mean rules, or a wrong name
        assert error_line(api).startswith(f"{doing}{LINK_ADVICE[status].split(' (HTTP')[0]} (HTTP {status}")
    assert download_requests(server) == [("POST", "DownloadDataFiles"), ("GET", "digit-recognizer.zip"),
                                         ("POST", "DownloadDataFiles")]
    assert snapshot(data_dir) == before


def test_a_corrupt_zip_names_what_kaggle_sent(served_zip, home, data_dir):
    """The zip opens but its train.csv does not: named as what Kaggle sent (the staging copy is gone), one line."""
    before = snapshot(data_dir)
    with KaggleStandIn(served_zip) as server:
        server.corrupt_zip = True
        proc = run_cli("download", "--force", "--data-dir", data_dir, env=env_for(home, server.proxy))
    first = error_line(proc)
    assert first.startswith("error: downloading the digit-recognizer data (nothing in data/ changed): the "
                            "digit-recognizer.zip that Kaggle sent: expected a zip file holding train.csv, got one "
                            "that cannot be read")
    assert first.endswith("; run the same command again.") and proc.stderr == first + "\n"
    assert str(data_dir) not in proc.stderr
    assert download_requests(server) == [("POST", "DownloadDataFiles"), ("GET", "digit-recognizer.zip")]
    assert snapshot(data_dir) == before


def test_the_pending_message_names_the_command_the_user_ran(run_folder, small_data, served_zip, home):
    """Still being scored when the wait ends: `digits submit` points to `digits submissions`, `make submit` to make."""
    paths, _, file = run_folder
    with scoring_server(small_data, served_zip, pending_seconds=3600) as server:
        env = env_for(home, server.proxy)
        typed = run_cli("submit", file, "--wait", "0.1", "--poll-interval", "0.1", *path_args(paths), env=env,
                        check=True)
        made = make("submit", env=env, FILE=file, WAIT="0.1",
                    ARGS=" ".join(map(str, ["--poll-interval", "0.1", *path_args(paths)])))
    assert made.returncode == 0 and len(server.submissions) == 2
    assert "still being scored after 0.1 s; run `digits submissions` later" in typed.stdout
    assert "still being scored after 0.1 s; run `make submissions` later" in made.stdout
    assert "make submissions" not in typed.stdout and "digits submissions" not in made.stdout


def test_unreachable_host_and_proxy_are_named(served_zip, home, tmp_path):
    with port_closed() as port:  # a proxy port that refuses connections
        refused = run_cli("download", "--data-dir", tmp_path / "a", env=env_for(home, f"http://127.0.0.1:{port}"))
    assert refused.returncode == 1
    assert f"could not reach localhost:80 through the proxy 127.0.0.1:{port}: the proxy refused" in refused.stderr
    with KaggleStandIn(served_zip) as server:  # now it plays an HTTPS proxy that refuses the tunnel
        proxied = run_cli("download", "--data-dir", tmp_path / "b", env=env_for(
            home, server.proxy, KAGGLE_API_ENVIRONMENT="PROD",
            HTTPS_PROXY=f"http://user:s3cretpw@127.0.0.1:{server.port}"))
    assert [(r["method"], r["path"]) for r in server.requests] == [("CONNECT", "api.kaggle.com:443")]
    assert proxied.returncode == 1
    assert f"could not reach api.kaggle.com:443 through the proxy 127.0.0.1:{server.port}" in proxied.stderr
    assert "s3cretpw" not in proxied.stderr and "Traceback" not in proxied.stderr


def raised(call) -> BaseException:
    """What `call()` raised."""
    try:
        call()
    except Exception as err:
        return err
    raise AssertionError("nothing was raised")


@contextlib.contextmanager
def silent_server():
    """A port that accepts connections and never answers. Yields the port."""
    sock = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        sock.close()
        for conn in held:
            conn.close()


def test_network_failures_are_named_by_type(served_zip, monkeypatch):
    """Real `requests` failures (what the client raises) become advice keyed on the exception's type."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    dns = raised(lambda: requests.post("https://digits-test.invalid/api/v1/x", timeout=5))
    assert kaggle.advice("x", dns) == ("x: could not reach digits-test.invalid:443: its name does not resolve "
                                       "(offline, or no DNS). Check the internet connection; behind a proxy, set "
                                       "HTTPS_PROXY=http://HOST:PORT (it is honoured).")
    monkeypatch.setenv("HTTPS_PROXY", "http://me:secret@proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "digits-test.invalid")
    assert "the proxy proxy.corp:3128 from the environment was used" not in kaggle.advice("x", dns)  # NO_PROXY
    monkeypatch.delenv("NO_PROXY")
    assert "the proxy proxy.corp:3128 from the environment was used" in kaggle.advice("x", dns)
    monkeypatch.delenv("HTTPS_PROXY")
    with port_closed() as port:
        refused = raised(lambda: requests.post(f"http://127.0.0.1:{port}/api/v1/x", timeout=5))
    assert f"x: could not reach 127.0.0.1:{port}: the connection was refused." in kaggle.advice("x", refused)
    with silent_server() as port:
        slow = raised(lambda: requests.post(f"http://127.0.0.1:{port}/api/v1/x", timeout=0.2))
    assert f"x: could not reach 127.0.0.1:{port}: the connection timed out." in kaggle.advice("x", slow)
    with KaggleStandIn(served_zip) as server:  # it speaks plain HTTP: TLS to it fails
        tls = raised(lambda: requests.post(f"https://127.0.0.1:{server.port}/api/v1/x", timeout=5))
    assert f"x: could not reach 127.0.0.1:{server.port}: its TLS certificate did not verify" in kaggle.advice("x", tls)
    assert kaggle.advice("x", OSError(28, "No space left on device")) is None  # not Kaggle's: the CLI reports it


def test_digits_starts_without_the_kaggle_client():
    """Importing the CLI (and digits.kaggle) loads neither the client nor requests: bad input fails before them."""
    code = ("import sys, digits.cli, digits.kaggle, digits.kernel\n"
            "print(sorted({'kaggle', 'requests'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def client_texts() -> set[str]:
    """Every line of text in the kaggle client's source (its messages), 20 characters or more, of 3 words or more."""
    texts = set()
    for package in ("kaggle", "kagglesdk"):
        folder = Path(importlib.util.find_spec(package).origin).parent
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    texts |= {line.strip() for line in node.value.splitlines()}
    return {text for text in texts if len(text) >= 20 and len(text.split()) >= 3}


def test_messages_are_not_keyed_on_the_client_wording():
    """digits.kaggle reads status codes and exception types, so none of the client's messages appears in it."""
    source = (PROJECT_ROOT / "src" / "digits" / "kaggle.py").read_text(encoding="utf-8")
    found = client_texts()
    assert len(found) > 1000  # the client's source was read
    assert [text for text in found if text in source] == []


# -- credentials: the client's own search, through `digits submissions` --


def write_json(path: Path, value: dict, mode=0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("way", ["kaggle.json", "config_dir", "xdg", "env_key", "api_token", "access_token",
                                 "oauth", "none"])
def test_every_credential_source_is_used(way, served_zip, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    extra = {}
    auth = ("user", "alice")
    if way == "kaggle.json":
        write_json(home / ".kaggle" / "kaggle.json", {"username": "alice", "key": KEY})
    elif way == "config_dir":
        write_json(tmp_path / "cfg" / "kaggle.json", {"username": "alice", "key": KEY})
        extra["KAGGLE_CONFIG_DIR"] = str(tmp_path / "cfg")
    elif way == "xdg":  # the client uses ~/.config/kaggle when ~/.kaggle does not exist
        write_json(home / ".config" / "kaggle" / "kaggle.json", {"username": "alice", "key": KEY})
    elif way == "env_key":
        extra.update(KAGGLE_USERNAME="alice", KAGGLE_KEY=KEY)
    elif way == "api_token":
        extra["KAGGLE_API_TOKEN"] = KEY
        auth = ("bearer", KEY)
    elif way == "access_token":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "access_token").write_text(KEY)
        auth = ("bearer", KEY)
    elif way == "oauth":  # `kaggle auth login` saved it; its access token is still fresh
        expires = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
        write_json(home / ".kaggle" / "credentials.json", {"refresh_token": "r" + KEY, "access_token": KEY,
                                                           "access_token_expiration": expires, "username": "alice"})
        auth = ("bearer", KEY)
    with KaggleStandIn(served_zip) as server:
        proc = run_cli("submissions", "--models-dir", tmp_path / "models", env=env_for(home, server.proxy, **extra))
    assert KEY not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    if way == "none":
        assert proc.returncode == 1 and "no Kaggle credentials found" in proc.stderr and server.requests == []
        return
    assert proc.returncode == 0, proc.stderr
    assert "no submissions to digit-recognizer yet" in proc.stdout
    listing = [r for r in server.requests if r["path"].endswith("/ListSubmissions")]
    assert len(listing) == 1
    if auth[0] == "user":
        assert listing[0]["user"] == "alice"
    else:
        assert listing[0]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_loose_kaggle_json_permissions_warn(served_zip, tmp_path):
    home = tmp_path / "home"
    config = write_json(home / ".kaggle" / "kaggle.json", {"username": "alice", "key": KEY}, mode=0o644)
    with KaggleStandIn(served_zip) as server:
        loose = run_cli("submissions", "--models-dir", tmp_path / "models", env=env_for(home, server.proxy))
        config.chmod(0o600)
        tight = run_cli("submissions", "--models-dir", tmp_path / "models", env=env_for(home, server.proxy))
    assert loose.returncode == 0 and tight.returncode == 0
    assert f"warning: {config} is readable by other users; run `chmod 600 {config}`" in loose.stderr
    assert "readable by other users" not in tight.stderr


def test_default_message_names_the_run_and_its_accuracy(tmp_path):
    paths = paths_under(tmp_path)
    write_json(paths.models_dir / "quick-1234abcd" / "metrics.json", {"ensemble": {"holdout_accuracy": 0.99125}})
    write_json(paths.models_dir / "quick-1234abcd" / "metrics-m0_2.json",
               {"cv": {"kind": "out-of-fold", "accuracy": 0.985}})
    message = kaggle.default_message
    assert message(Path("quick-1234abcd.csv"), paths) == "quick-1234abcd: holdout accuracy 0.9912"  # an older run
    assert message(Path("quick-1234abcd-m0_2.csv"), paths) == "quick-1234abcd-m0_2: CV 0.9850"
    assert message(Path("mine.csv"), paths) == "mine"


def test_a_bad_retry_count_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("DIGITS_DOWNLOAD_RETRIES", "many")
    with pytest.raises(InputError, match=r"DIGITS_DOWNLOAD_RETRIES='many': expected a whole number of retries, such "
                                         r"as 5"):
        kaggle._retries()
