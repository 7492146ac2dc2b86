"""Smoke tests: the real kaggle CLI (2.2.x) against the loopback KaggleStandIn, reached through HTTP_PROXY."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kaggle_standin import KaggleStandIn, cli_env, damaged, port_closed

KAGGLE = str(Path(sys.executable).with_name("kaggle"))  # the client installed beside this Python
AUTH_HELP = "Authentication required to call the Kaggle API."
RULES_403 = (
    "You must accept this competition's rules before you'll be able to download files."
)


def make_zip() -> bytes:
    """A tiny stand-in for the digit-recognizer data zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.csv", "label,pixel0,pixel1\n1,0,255\n7,12,0\n")
        zf.writestr("test.csv", "pixel0,pixel1\n0,0\n3,4\n")
    return buf.getvalue()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Temporary HOME whose ~/.kaggle/kaggle.json holds fake legacy credentials."""
    cfg = tmp_path / "home" / ".kaggle"
    cfg.mkdir(parents=True)
    (cfg / "kaggle.json").write_text(
        json.dumps({"username": "testuser", "key": secrets.token_hex(16)})
    )
    (cfg / "kaggle.json").chmod(0o600)
    return tmp_path / "home"


def kaggle(proxy: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the real kaggle CLI through the stand-in at `proxy`, isolated; echo its output for -s runs."""
    env.setdefault("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    env = {k: v for k, v in env.items() if v}  # an empty value means "leave unset"
    proc = subprocess.run(
        [KAGGLE, *args],
        env=cli_env(str(home), proxy, **env),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(
        f"$ kaggle {' '.join(args)}  -> rc={proc.returncode}\n--stdout--\n{proc.stdout}\n--stderr--\n{proc.stderr}"
    )
    return proc


def test_download_all_and_single_file(home: Path, tmp_path: Path) -> None:
    """`competitions download` saves <competition>.zip byte-identical; `-f` saves the member."""
    data = make_zip()
    with KaggleStandIn(data) as server:
        proc = kaggle(
            server.proxy, home,
            "competitions",
            "download",
            "digit-recognizer",
            "-p",
            str(tmp_path / "dl"),
        )
        assert proc.returncode == 0
        assert os.listdir(tmp_path / "dl") == ["digit-recognizer.zip"]
        assert (tmp_path / "dl" / "digit-recognizer.zip").read_bytes() == data
        assert "Downloading digit-recognizer.zip to" in proc.stdout

        proc = kaggle(
            server.proxy, home,
            "competitions",
            "download",
            "digit-recognizer",
            "-f",
            "train.csv",
            "-p",
            str(tmp_path / "one"),
        )
        assert proc.returncode == 0
        assert (tmp_path / "one" / "train.csv").read_bytes() == server.member(
            "train.csv"
        )

    api = [r for r in server.requests if r["method"] == "POST"]
    assert [r["json"] for r in api] == [
        {"competitionName": "digit-recognizer"},
        {"competitionName": "digit-recognizer", "fileName": "train.csv"},
    ]
    # Basic auth on the API call and on the redirected GET
    assert {r["user"] for r in server.requests} == {"testuser"}


def test_submit_and_list_submissions(home: Path) -> None:
    """`competitions submit` uploads the exact bytes with the message; `submissions` lists the score."""
    sub = home / "submission.csv"
    sub.write_bytes(b"ImageId,Label\r\n1,2\r\n2,0\r\n")
    with KaggleStandIn(make_zip()) as server:
        proc = kaggle(
            server.proxy, home,
            "competitions",
            "submit",
            "digit-recognizer",
            "-f",
            str(sub),
            "-m",
            "cnn v1: 5 epochs",
        )
        assert proc.returncode == 0
        assert "Successfully submitted to Digit Recognizer" in proc.stdout
        assert len(server.submissions) == 1
        got = server.submissions[0]
        assert got["content"] == sub.read_bytes()
        assert got["message"] == "cnn v1: 5 epochs"
        assert got["file_name"] == "submission.csv"

        proc = kaggle(server.proxy, home, "competitions", "submissions", "digit-recognizer")
        assert proc.returncode == 0
        assert "submission.csv" in proc.stdout and server.public_score in proc.stdout
        assert "cnn v1: 5 epochs" in proc.stdout


def test_submissions_are_pending_then_scored(home: Path) -> None:
    """A submission is PENDING for `pending_polls` answers, then COMPLETE with its accuracy on the answers."""
    sub = home / "submission.csv"
    sub.write_text("ImageId,Label\n1,2\n2,0\n3,7\n4,1\n")
    with KaggleStandIn(make_zip()) as server:
        server.answers = b"ImageId,Label\n1,2\n2,0\n3,7\n4,4\n"
        server.pending_polls = 1
        submitted = kaggle(server.proxy, home, "competitions", "submit", "digit-recognizer", "-f", str(sub), "-m", "v1")
        pending = kaggle(server.proxy, home, "competitions", "submission", "1000")
        scored = kaggle(server.proxy, home, "competitions", "submissions", "digit-recognizer", "-v")
        server.scoring_error = "Evaluation Exception: bad file"
        server.pending_polls = 0
        kaggle(server.proxy, home, "competitions", "submit", "digit-recognizer", "-f", str(sub), "-m", "v2")
        failed = kaggle(server.proxy, home, "competitions", "submission", "1001")
        server.scoring_error = None
        waited = kaggle(server.proxy, home, "competitions", "submit", "digit-recognizer", "-f", str(sub), "-m", "v3",
                        "--wait", "30")
    assert submitted.returncode == 0 and "Submission ref: 1000" in submitted.stdout
    assert pending.returncode == 0 and "PENDING" in pending.stdout and "0.75000" not in pending.stdout
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    assert [(r["ref"], r["status"], r["publicScore"]) for r in rows] == [
        ("1000", "SubmissionStatus.COMPLETE", "0.75000")]
    assert "ERROR" in failed.stdout and "Evaluation Exception: bad file" in failed.stdout
    assert waited.returncode == 0 and "Public score: 0.75000" in waited.stdout
    get = [r for r in server.requests if r["path"].endswith("/GetSubmission")]
    assert [r["json"] for r in get] == [{"ref": 1000}, {"ref": 1001}, {"ref": 1002}]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_exit_nonzero(home: Path, tmp_path: Path, status: int) -> None:
    """401 prints the CLI's generic auth help on stdout; 403 prints the server's message first on stderr."""
    sub = home / "submission.csv"
    sub.write_text("ImageId,Label\n1,2\n")
    with KaggleStandIn(make_zip()) as server:
        server.fail_with = status
        download = kaggle(
            server.proxy, home,
            "competitions",
            "download",
            "digit-recognizer",
            "-p",
            str(tmp_path / "dl"),
        )
        submit = kaggle(
            server.proxy, home,
            "competitions",
            "submit",
            "digit-recognizer",
            "-f",
            str(sub),
            "-m",
            "x",
        )
    for proc in (download, submit):
        assert proc.returncode == 1
        if status == 401:
            assert (
                proc.stdout.startswith(AUTH_HELP) and proc.stdout.count(AUTH_HELP) == 1
            )
            assert proc.stderr == ""
        else:  # Kaggle's message first, then the client's own hint (2.2.5)
            assert proc.stdout == ""
            assert proc.stderr.startswith(RULES_403 + "\n")
    assert not (tmp_path / "dl").exists()
    # nothing is attempted after the first refusal
    assert server.submissions == [] and len(server.requests) == 2


def test_file_link_faults(home: Path, tmp_path: Path) -> None:
    """A body cut short is retried by the client (a Range request) and saved whole; a status on the file link fails
    the download with no retry; a corrupt zip is saved as sent (the client does not open it)."""
    data = make_zip()
    download = ("competitions", "download", "digit-recognizer", "-p")
    with KaggleStandIn(data) as server:
        server.cut_downloads = 1
        cut = kaggle(server.proxy, home, *download, str(tmp_path / "cut"))
        cut_requests = [(r["method"], r["headers"].get("Range")) for r in server.requests]
        server.requests.clear()
        server.link_fails_with = 429
        refused = kaggle(server.proxy, home, *download, str(tmp_path / "refused"))
        refused_requests = [r["method"] for r in server.requests]
        server.link_fails_with, server.corrupt_zip = None, True
        corrupt = kaggle(server.proxy, home, *download, str(tmp_path / "corrupt"))
    assert cut.returncode == 0 and (tmp_path / "cut" / "digit-recognizer.zip").read_bytes() == data
    assert cut_requests == [("POST", None), ("GET", None), ("GET", "bytes=0-")]
    assert refused.returncode == 1 and "429" in refused.stdout + refused.stderr and refused_requests == ["POST", "GET"]
    saved = (tmp_path / "corrupt" / "digit-recognizer.zip").read_bytes()
    assert corrupt.returncode == 0 and saved == damaged(data) != data
    with zipfile.ZipFile(io.BytesIO(saved)) as zf, pytest.raises((zipfile.BadZipFile, zlib.error)):
        zf.read("train.csv")


def test_no_credentials_makes_no_network_call(tmp_path: Path) -> None:
    """Without any credentials the CLI prints its auth help twice and exits 1 before any request."""
    bare = tmp_path / "bare"
    bare.mkdir()
    with KaggleStandIn(make_zip()) as server:
        proc = kaggle(
            server.proxy, bare,
            "competitions",
            "download",
            "digit-recognizer",
            "-p",
            str(tmp_path / "dl"),
            KAGGLE_CONFIG_DIR="",
        )
    assert proc.returncode == 1
    # printed once by `import kaggle` and once more by main()
    assert proc.stdout.count(AUTH_HELP) == 2
    assert proc.stderr == ""
    assert server.requests == []
    # side effect: the CLI creates its XDG config dir
    assert (bare / ".config" / "kaggle").is_dir()


@pytest.mark.parametrize(
    "source", ["kaggle_config_dir", "username_key_env", "api_token_env"]
)
def test_credential_sources(tmp_path: Path, source: str) -> None:
    """KAGGLE_CONFIG_DIR/kaggle.json and KAGGLE_USERNAME+KAGGLE_KEY give Basic auth; KAGGLE_API_TOKEN gives Bearer."""
    bare = tmp_path / "bare"
    bare.mkdir()
    env = {"KAGGLE_CONFIG_DIR": ""}
    if source == "kaggle_config_dir":
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        (cfg / "kaggle.json").write_text(
            json.dumps({"username": "cfguser", "key": "k1"})
        )
        (cfg / "kaggle.json").chmod(0o600)
        env["KAGGLE_CONFIG_DIR"] = str(cfg)
    elif source == "username_key_env":
        env.update(KAGGLE_USERNAME="envuser", KAGGLE_KEY="k2")
    else:
        env["KAGGLE_API_TOKEN"] = "KGAT_" + secrets.token_hex(8)
    with KaggleStandIn(make_zip()) as server:
        proc = kaggle(server.proxy, bare, "competitions", "submissions", "digit-recognizer", **env)
    assert proc.returncode == 0
    auth = [r["headers"].get("Authorization") for r in server.requests]
    if source == "api_token_env":
        # the token is introspected once (at `import kaggle`) before the real call
        assert server.paths()[0] == "/api/v1/security.OAuthService/IntrospectToken"
        assert set(auth) == {"Bearer " + env["KAGGLE_API_TOKEN"]}
    else:
        assert {r["user"] for r in server.requests} == {
            "cfguser" if source == "kaggle_config_dir" else "envuser"
        }


def test_connection_refused_and_https_proxy(home: Path, tmp_path: Path) -> None:
    """A refusing HTTP_PROXY makes the CLI exit 1 with urllib3's text; in PROD mode it honours HTTPS_PROXY."""
    with port_closed() as port:
        proxy = f"http://127.0.0.1:{port}"
        proc = kaggle(proxy, home, "competitions", "download", "digit-recognizer", "-p", str(tmp_path / "dl"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"HTTPConnectionPool(host='127.0.0.1', port={port}): Max retries exceeded "
                                  "with url: http://localhost/api/v1/")
    assert "Unable to connect to proxy" in proc.stderr and "Connection refused" in proc.stderr

    # the stand-in now plays a (refusing) HTTPS proxy for api.kaggle.com
    with KaggleStandIn(make_zip()) as server:
        proc = kaggle(
            server.proxy,
            home,
            "competitions",
            "download",
            "digit-recognizer",
            "-p",
            str(tmp_path / "dl"),
            KAGGLE_API_ENVIRONMENT="PROD",
            HTTPS_PROXY=server.proxy,
        )
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("CONNECT", "api.kaggle.com:443")
    ]
    assert proc.returncode == 1
    assert "Tunnel connection failed: 502" in proc.stderr


def test_kernels_push_status_output(home: Path, tmp_path: Path) -> None:
    """`kernels push`, `kernels status` and `kernels output` round-trip through the stand-in."""
    kdir = tmp_path / "kernel"
    kdir.mkdir()
    (kdir / "run.py").write_text("print('hello')\n")
    (kdir / "kernel-metadata.json").write_text(
        json.dumps(
            {
                "id": "testuser/digits-run",
                "title": "digits run",
                "code_file": "run.py",
                "language": "python",
                "kernel_type": "script",
                "competition_sources": ["digit-recognizer"],
                "enable_gpu": True,
            }
        )
    )
    with KaggleStandIn(make_zip()) as server:
        proc = kaggle(server.proxy, home, "kernels", "push", "-p", str(kdir))
        assert (
            proc.returncode == 0
            and "Kernel version 1 successfully pushed." in proc.stdout
        )
        assert server.kernel_pushes[0]["text"] == "print('hello')\n"
        assert all(r["target"].startswith("http://localhost/") for r in server.requests)  # proxied
        assert server.kernel_pushes[0]["competitionDataSources"] == ["digit-recognizer"]

        server.kernel_status = "RUNNING"
        proc = kaggle(server.proxy, home, "kernels", "status", "testuser/digits-run")
        assert (
            proc.stdout
            == 'testuser/digits-run has status "KernelWorkerStatus.RUNNING"\n'
        )

        server.kernel_outputs = {"submission.csv": b"ImageId,Label\n1,7\n"}
        proc = kaggle(
            server.proxy, home,
            "kernels",
            "output",
            "testuser/digits-run",
            "-p",
            str(tmp_path / "out"),
        )
        assert proc.returncode == 0
        assert (
            tmp_path / "out" / "submission.csv"
        ).read_bytes() == b"ImageId,Label\n1,7\n"

        # more files than one page (the CLI asks 20 at a time): every page is fetched
        server.kernel_outputs = {f"runs/r/m{i:02}.json": str(i).encode() for i in range(45)}
        proc = kaggle(server.proxy, home, "kernels", "output", "testuser/digits-run", "-p", str(tmp_path / "paged"))
        assert proc.returncode == 0
        assert [p["pageToken"] or "" for p in server.output_pages[-3:]] == ["", "20", "40"]
        assert {p["pageSize"] for p in server.output_pages} == {20}
        assert len(list((tmp_path / "paged" / "runs" / "r").iterdir())) == 45

        # soft failures: the CLI prints them and still exits 0
        server.invalid_competition_sources = ["digit-recognizer"]
        proc = kaggle(server.proxy, home, "kernels", "push", "-p", str(kdir))
        assert proc.returncode == 0
        assert "not valid competition sources" in proc.stdout and "digit-recognizer" in proc.stdout
        server.push_error = "Notebook not found"
        proc = kaggle(server.proxy, home, "kernels", "push", "-p", str(kdir))
        assert proc.returncode == 0 and proc.stdout == "Kernel push error: Notebook not found\n"
