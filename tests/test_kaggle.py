"""Download, submit and list submissions: the real kaggle CLI against the loopback stand-in (no account, no network)."""

import io
import json
import os
import secrets
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, path_args, paths_under, run_cli
from digits import kaggle
from digits.config import Paths
from kaggle_standin import KaggleStandIn, cli_env, port_closed

RULES_URL = "https://www.kaggle.com/competitions/digit-recognizer/rules"
KEY = "k3y" + secrets.token_hex(14)  # the fake API key: must never show up in output or files


def clean_environ() -> dict:
    """os.environ without anything that would change which credentials, proxy or make flags apply."""
    drop = ("KAGGLE_", "DIGITS_KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "MAKE", "MFLAGS")
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(drop) and k != "XDG_CONFIG_HOME"}


@pytest.fixture(autouse=True)
def _no_outside_credentials(monkeypatch):
    """run_cli starts from os.environ: make sure the developer's own Kaggle setup cannot leak in."""
    for name in set(os.environ) - set(clean_environ()):
        monkeypatch.delenv(name)


def env_for(home: Path, proxy: str, **extra) -> dict:
    """Environment of a CLI run: fake HOME, kaggle CLI in LOCALHOST mode reaching the stand-in at `proxy`."""
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


def test_make_download_train_submit_end_to_end(served_zip, small_data, home, tmp_path):
    """`make download train submit submissions` with the real client: data checked in place, exact bytes sent."""
    paths = paths_under(tmp_path / "project")
    args = " ".join(map(str, path_args(paths)))
    with KaggleStandIn(served_zip) as server:
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
        accuracy = json.loads((paths.models_dir / run_id / "metrics.json").read_text())["ensemble"]["holdout_accuracy"]
        assert sent["message"] == f"{run_id}: holdout accuracy {accuracy:.4f}"
        assert server.public_score in proc.stdout  # `make submissions` lists the score
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


@pytest.mark.parametrize("status", [401, 403])
def test_refusals_give_advice(status, served_zip, small_data, home, tmp_path):
    """401 and 403 from Kaggle become plain advice, exit 1, and leave nothing behind."""
    paths = paths_under(tmp_path / "project")
    paths.data_dir.mkdir(parents=True)
    file = valid_submission(small_data, paths.submissions_dir / "run.csv")
    with KaggleStandIn(served_zip) as server:
        env = env_for(home, server.proxy)
        server.fail_with = status
        download = run_cli("download", *path_args(paths), env=env)
        assert list(paths.data_dir.iterdir()) == []  # nothing half-written
        (paths.data_dir / "test.csv").write_bytes((small_data / "test.csv").read_bytes())
        submit = run_cli("submit", file, *path_args(paths), env=env)
    for proc in (download, submit):
        assert proc.returncode == 1, proc.stderr
        if status == 401:
            assert "HTTP 401" in proc.stderr and "Create a new token" in proc.stderr
        else:
            assert "HTTP 403" in proc.stderr and RULES_URL in proc.stderr
            assert "You must accept this competition's rules" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert_no_key(proc.stdout, proc.stderr)
    assert server.submissions == []


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
        for option in ("kaggle.json", "KAGGLE_CONFIG_DIR", "KAGGLE_USERNAME and KAGGLE_KEY", "KAGGLE_API_TOKEN",
                       "~/.kaggle/access_token", "chmod 600"):
            assert option in proc.stderr, option
    assert server.requests == []


def test_bad_download_leaves_data_as_it_was(small_data, home, tmp_path):
    """A zip whose train.csv fails the checks: error, and the files already in data/ are untouched."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.csv").write_text("label,pixel0\n1,0\n")  # invalid: --force must still not replace it
    bad = zip_of(small_data, train_csv=(small_data / "train.csv").read_bytes().replace(b"\n7,", b"\n17,", 1))
    with KaggleStandIn(bad) as server:
        proc = run_cli("download", "--data-dir", data_dir, env=env_for(home, server.proxy))
    assert proc.returncode == 1 and "failed the checks" in proc.stderr and "expected an integer 0..9" in proc.stderr
    assert sorted(p.name for p in data_dir.iterdir() if p.name != "cache") == ["train.csv"]
    assert (data_dir / "train.csv").read_text() == "label,pixel0\n1,0\n"


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
    assert "s3cretpw" not in proxied.stderr


# -- credentials, in-process --


def write_json(path: Path, value: dict, mode=0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("way", ["kaggle.json", "config_dir", "xdg", "env_key", "api_token", "access_token",
                                 "oauth", "none"])
def test_every_credential_source_is_found(way, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    environ = {"HOME": str(home)}
    expected_user = "alice"
    if way == "kaggle.json":
        write_json(home / ".kaggle" / "kaggle.json", {"username": "alice", "key": KEY})
    elif way == "config_dir":
        write_json(tmp_path / "cfg" / "kaggle.json", {"username": "alice", "key": KEY})
        environ["KAGGLE_CONFIG_DIR"] = str(tmp_path / "cfg")
    elif way == "xdg":  # the CLI uses ~/.config/kaggle when ~/.kaggle does not exist
        write_json(home / ".config" / "kaggle" / "kaggle.json", {"username": "alice", "key": KEY})
    elif way == "env_key":
        environ.update(KAGGLE_USERNAME="alice", KAGGLE_KEY=KEY)
    elif way == "api_token":
        environ["KAGGLE_API_TOKEN"] = KEY
        expected_user = None
    elif way == "access_token":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "access_token").write_text(KEY)
        expected_user = None
    elif way == "oauth":
        write_json(home / ".kaggle" / "credentials.json", {"refresh_token": KEY, "username": "alice"})
    found = kaggle.find_credentials(environ)
    if way == "none":
        assert found is None
        with pytest.raises(kaggle.KaggleError, match="no Kaggle credentials found"):
            kaggle.require_credentials(environ)
        return
    assert found is not None and found.username == expected_user
    assert KEY not in repr(found)


def test_loose_kaggle_json_permissions_warn(tmp_path):
    home = tmp_path / "home"
    config = write_json(home / ".kaggle" / "kaggle.json", {"username": "alice", "key": KEY}, mode=0o644)
    warnings = []
    kaggle.require_credentials({"HOME": str(home)}, warn=warnings.append)
    assert warnings == [f"warning: {config} is readable by other users; run `chmod 600 {config}`"]
    config.chmod(0o600)
    warnings.clear()
    kaggle.require_credentials({"HOME": str(home)}, warn=warnings.append)
    assert warnings == []


def test_advice_for_known_cli_failures():
    dns = ("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: /api/v1/x "
           "(Caused by NameResolutionError(\"Failed to resolve 'api.kaggle.com'\"))")
    assert "could not reach api.kaggle.com:443: its name does not resolve" in kaggle.advice("x", dns, 1, {})
    assert "set HTTPS_PROXY" in kaggle.advice("x", dns, 1, {})
    assert "the proxy proxy.corp:3128 from HTTPS_PROXY" in kaggle.advice(
        "x", dns, 1, {"HTTPS_PROXY": "http://me:secret@proxy.corp:3128"})
    refused = ("HTTPConnectionPool(host='localhost', port=80): Max retries exceeded with url: /api/v1/x (Caused by "
               "NewConnectionError(\"...: Failed to establish a new connection: [Errno 111] Connection refused\"))")
    assert "could not reach localhost:80: the connection was refused" in kaggle.advice("x", refused, 1, {})
    assert kaggle.advice("x", "boom", 2, {}) == "x: the kaggle CLI failed (exit 2):\nboom"


def test_default_message_names_the_run_and_its_accuracy(tmp_path):
    paths = paths_under(tmp_path)
    write_json(paths.models_dir / "quick-1234abcd" / "metrics.json", {"ensemble": {"holdout_accuracy": 0.99125}})
    write_json(paths.models_dir / "quick-1234abcd" / "metrics-m0_2.json", {"ensemble": {"holdout_accuracy": 0.985}})
    message = kaggle.default_message
    assert message(Path("quick-1234abcd.csv"), paths) == "quick-1234abcd: holdout accuracy 0.9912"
    assert message(Path("quick-1234abcd-m0_2.csv"), paths) == "quick-1234abcd-m0_2: holdout accuracy 0.9850"
    assert message(Path("mine.csv"), paths) == "mine"
