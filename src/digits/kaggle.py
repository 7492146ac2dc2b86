"""Kaggle through its official `kaggle` CLI (run as a subprocess): credentials, download, submit, list submissions."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import data, runs, submission
from .config import COMPETITION, Paths
from .errors import InputError, KaggleError

log = logging.getLogger(__name__)

RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
TOKEN_URL = "https://www.kaggle.com/settings"
RULES_HINT = f"Accept the competition rules at {RULES_URL} (signed in as the account of your API key), then retry."
DATA_FILES = ("train.csv", "test.csv")
EXTRA_FILES = ("sample_submission.csv",)
TIMEOUT_S = 30 * 60
# The CLI prints these and still exits 0.
SOFT_FAILURES = ("Kernel push error", "Could not submit to competition", "Could not find competition",
                 "are not valid competition sources", "are not valid dataset sources",
                 "are not valid kernel sources")

CREDENTIALS_HELP = f"""no Kaggle credentials found, so nothing was sent to Kaggle. Set up one of these
(create an API token at {TOKEN_URL}, section "API"):
  - ~/.kaggle/kaggle.json holding {{"username": "...", "key": "..."}} (see kaggle.json.example), then
    `chmod 600 ~/.kaggle/kaggle.json`; or that file in the folder named by KAGGLE_CONFIG_DIR
    (~/.config/kaggle/kaggle.json when ~/.kaggle does not exist)
  - the environment variables KAGGLE_USERNAME and KAGGLE_KEY
  - KAGGLE_API_TOKEN=<token> (or the path of a file holding it), or the token saved in ~/.kaggle/access_token
  - `kaggle auth login` (OAuth; saves ~/.kaggle/credentials.json)"""


@dataclass(frozen=True)
class Credentials:
    """Where the kaggle CLI will find credentials (a description, never the secret) and the username if known."""

    source: str
    username: str | None = None
    config_file: Path | None = None


def _home(environ) -> Path:
    return Path(environ.get("HOME") or Path.home())


def config_dir(environ=None) -> Path:
    """The folder the kaggle CLI reads kaggle.json from."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    legacy = _home(environ) / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(environ.get("XDG_CONFIG_HOME") or _home(environ) / ".config") / "kaggle"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_file(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except OSError:
        return False


def find_credentials(environ=None) -> Credentials | None:
    """Every way kaggle CLI 2.x accepts credentials, in its order; None when there are none."""
    environ = os.environ if environ is None else environ
    home = _home(environ)
    config_file = config_dir(environ) / "kaggle.json"
    values = _read_json(config_file)
    username = environ.get("KAGGLE_USERNAME") or values.get("username")
    if environ.get("KAGGLE_API_TOKEN"):
        return Credentials("KAGGLE_API_TOKEN", username)
    for name in ("access_token", "access_token.txt"):
        if _token_file(home / ".kaggle" / name):
            return Credentials(f"~/.kaggle/{name}", username)
    if username and environ.get("KAGGLE_KEY"):
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", username)
    if username and values.get("key"):
        return Credentials(str(config_file), username, config_file)
    oauth = _read_json(home / ".kaggle" / "credentials.json")
    if oauth.get("refresh_token"):
        return Credentials("~/.kaggle/credentials.json (kaggle auth login)", username or oauth.get("username"))
    return None


def require_credentials(environ=None, warn=None) -> Credentials:
    """The credentials to use, or a KaggleError listing the ways to set them up (before any network call)."""
    environ = os.environ if environ is None else environ
    found = find_credentials(environ)
    if found is None:
        raise KaggleError(CREDENTIALS_HELP)
    config_file = config_dir(environ) / "kaggle.json"
    if config_file.is_file() and config_file.stat().st_mode & 0o077:
        (warn or _stderr)(f"warning: {config_file} is readable by other users; run `chmod 600 {config_file}`")
    return found


def _stderr(message: str):
    print(message, file=sys.stderr)


def username(environ=None) -> str | None:
    """The Kaggle username from KAGGLE_USERNAME or the credential files (a bare token does not name it)."""
    environ = os.environ if environ is None else environ
    found = find_credentials(environ)
    return (found and found.username) or environ.get("KAGGLE_USERNAME") or None


def _secrets(environ) -> list[str]:
    """Secret values to blank out of any CLI output we relay."""
    values = [environ.get("KAGGLE_KEY"), environ.get("KAGGLE_API_TOKEN"),
              _read_json(config_dir(environ) / "kaggle.json").get("key")]
    return [v for v in values if isinstance(v, str) and len(v) >= 6]


def _redact(text: str, environ) -> str:
    for secret in _secrets(environ):
        text = text.replace(secret, "***")
    return text


def kaggle_command() -> str:
    """The kaggle CLI of this Python environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("kaggle")
    if beside.is_file():
        return str(beside)
    found = shutil.which("kaggle")
    if not found:
        raise KaggleError("the kaggle command-line client is not installed: run `pip install kaggle` "
                          "(requirements.txt pins it) or `make venv`")
    return found


def run_kaggle(*args: str, what: str, forbidden_hint: str = RULES_HINT) -> str:
    """Run `kaggle ARGS`; return its stdout, or raise a KaggleError with advice (never showing a key)."""
    environ = os.environ
    try:
        proc = subprocess.run([kaggle_command(), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        raise KaggleError(f"{what}: no answer from Kaggle within {TIMEOUT_S // 60} minutes; "
                          "check the network (and HTTPS_PROXY) and retry") from None
    output = _redact(f"{proc.stdout}\n{proc.stderr}".strip(), environ)
    if proc.returncode != 0 or any(mark in output for mark in SOFT_FAILURES):
        raise KaggleError(advice(what, output, proc.returncode, environ, forbidden_hint))
    return _redact(proc.stdout, environ)


def advice(what: str, output: str, code: int, environ=None, forbidden_hint: str = RULES_HINT) -> str:
    """Turn the kaggle CLI's failure output into one plain piece of advice."""
    environ = os.environ if environ is None else environ
    if "Authentication required" in output or re.search(r"\b401\b|Unauthenticated|Unauthorized", output):
        return (f"{what}: Kaggle rejected the credentials (HTTP 401): the API key or token is wrong, revoked or "
                f"stale. Create a new token at {TOKEN_URL} (section \"API\"), put it where the old one was "
                "(~/.kaggle/kaggle.json, KAGGLE_KEY or KAGGLE_API_TOKEN), and retry.")
    invalid = [line.strip() for line in output.splitlines() if "are not valid competition sources" in line]
    if invalid:
        return (f"{what}: Kaggle did not attach the competition data to the kernel, so it would run without "
                f"data: {invalid[0]}\n{RULES_HINT}")
    if re.search(r"\b403\b|Forbidden|accept .*rules|[Pp]ermission", output):
        return f"{what}: Kaggle refused (HTTP 403): {_last_line(output)}\n{forbidden_hint}"
    network = _network_problem(output, environ)
    if network:
        return f"{what}: {network}"
    return f"{what}: the kaggle CLI failed (exit {code}):\n{_tail(output)}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def proxy_in_use(environ=None) -> str | None:
    """host:port of the HTTPS proxy the CLI will use (never the proxy's user or password)."""
    environ = os.environ if environ is None else environ
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if environ.get(name):
            parts = urlsplit(environ[name] if "://" in environ[name] else f"http://{environ[name]}")
            return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return None


def _network_problem(output: str, environ) -> str | None:
    """Name the unreachable host and why, from the urllib3 error text the CLI prints."""
    match = re.search(r"HTTPS?ConnectionPool\(host='([^']+)', port=(\d+)\)", output)
    absolute = re.search(r"with url: (https?)://([^/:\s]+)(?::(\d+))?", output)  # sent through an HTTP proxy
    proxy_failed = re.search(r"ProxyError|Tunnel connection failed|Unable to connect to proxy", output)
    if not match and not proxy_failed and "Max retries exceeded" not in output:
        return None
    host = f"{match[1]}:{match[2]}" if match else "api.kaggle.com:443"
    proxy = proxy_in_use(environ)
    if absolute:  # the pool is the proxy's; the URL names the host
        proxy, host = host, f"{absolute[2]}:{absolute[3] or (443 if absolute[1] == 'https' else 80)}"
    if proxy_failed:
        return (f"could not reach {host} through the proxy {proxy or '(from the environment)'}: the proxy refused "
                "or could not be reached. Check HTTPS_PROXY and HTTP_PROXY (they are honoured) and that the proxy "
                f"allows {host.split(':')[0]}.")
    if re.search(r"NameResolution|Name or service not known|nodename nor servname|getaddrinfo failed|"
                 r"Temporary failure in name resolution", output):
        reason = "its name does not resolve (offline, or no DNS)"
    elif re.search(r"Connection refused|ConnectionRefused", output):
        reason = "the connection was refused"
    elif re.search(r"timed out|Timeout", output):
        reason = "the connection timed out"
    elif re.search(r"SSLError|CERTIFICATE_VERIFY_FAILED", output):
        reason = ("its TLS certificate did not verify (an inspecting proxy? point REQUESTS_CA_BUNDLE at its "
                  "CA file)")
    else:
        reason = "no connection"
    hint = (f"the proxy {proxy} from HTTPS_PROXY was used" if proxy
            else "behind a proxy, set HTTPS_PROXY=http://HOST:PORT (it is honoured)")
    return f"could not reach {host}: {reason}. Check the internet connection; {hint}."


def _validate(folder: Path, cache_dir: Path) -> tuple[int, int]:
    """Check train.csv and test.csv in `folder` with the project's reader; return their row counts."""
    _, labels, test, _ = data.read_inputs(folder, cache_dir)
    return len(labels), len(test)


def _already_there(data_dir: Path, cache_dir: Path) -> bool:
    try:
        train_rows, test_rows = _validate(data_dir, cache_dir)
    except InputError as err:
        if any((data_dir / name).exists() for name in (*DATA_FILES, data.COMPETITION_ZIP)):
            log.info(f"the data in {data_dir} is not usable ({err}); downloading it again")
        return False
    if (data_dir / "answers.csv").exists():
        log.info(f"{data_dir} holds the offline MNIST files of `make demo` (answers.csv); replacing them with Kaggle's")
        return False
    log.info(f"{data_dir}: train.csv ({train_rows} rows) and test.csv ({test_rows} rows) are already there and valid; "
             "nothing to do (FORCE=1, or --force, downloads Kaggle's again)")
    return True


def download(data_dir, force: bool = False) -> Path:
    """Fetch the competition data into `data_dir`: download and unzip beside it, check, then rename into place."""
    data_dir = Path(data_dir)
    cache_dir = Paths(data_dir=data_dir).cache_dir
    if not force and _already_there(data_dir, cache_dir):
        return data_dir
    require_credentials()
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=data_dir))
    try:
        log.info(f"downloading the {COMPETITION} data from Kaggle ...")
        run_kaggle("competitions", "download", COMPETITION, "-p", str(staging),
                   what=f"kaggle competitions download {COMPETITION}")
        names = _unpack(staging)
        try:
            train_rows, test_rows = _validate(staging, cache_dir)
        except InputError as err:
            raise KaggleError(f"the downloaded data failed the checks; {data_dir} was left as it was: {err}") from None
        for name in names:
            os.replace(staging / name, data_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    answers = data_dir / "answers.csv"
    if answers.exists():
        answers.unlink()
        log.info(f"removed {answers}: it held the answers to the offline test.csv it replaced")
    log.info(f"{data_dir}: train.csv ({train_rows} rows) and test.csv ({test_rows} rows) from Kaggle, checked")
    return data_dir


def _unpack(staging: Path) -> list[str]:
    """Write the competition CSVs as plain files in `staging` (from the zip the CLI saved, or as saved)."""
    names = []
    for name in DATA_FILES + EXTRA_FILES:
        try:
            source = data.find_csv(staging, name)
            content = source.read_bytes() if source.member is not None else None
        except InputError as err:
            if name in EXTRA_FILES:
                continue
            raise KaggleError(f"the download from Kaggle is unusable: {err}") from None
        if content is not None:
            (staging / name).write_bytes(content)
        names.append(name)
    return names


def _test_rows(paths: Paths) -> int:
    try:
        source = data.find_csv(paths.data_dir, "test.csv")
    except InputError as err:
        raise InputError(f"cannot check the submission without test.csv: {err}") from None
    return len(data.read_test(source, paths.cache_dir))


def default_message(path: Path, paths: Paths) -> str:
    """'<run-id>: holdout accuracy 0.9912' from the run's metrics, else the file name."""
    stem = Path(path).stem
    candidates = [runs.metrics_file(paths.models_dir / stem)]
    subset = re.fullmatch(r"(.+)(-m\d+(?:_\d+)*)", stem)  # `make ensemble MEMBERS=...` writes <run>-m0_2.csv
    if subset:
        candidates.append(runs.metrics_file(paths.models_dir / subset[1], subset[2]))
    for candidate in candidates:
        metrics = _read_json(candidate)
        accuracy = metrics.get("ensemble", {}).get("holdout_accuracy")
        if isinstance(accuracy, (int, float)):
            return f"{stem}: holdout accuracy {accuracy:.4f}"
    return stem


def submit(paths: Paths, file=None, message: str | None = None) -> None:
    """Check a submission against test.csv, then send it with `kaggle competitions submit`."""
    path = Path(file) if file else runs.latest_submission(paths.submissions_dir)
    labels = submission.read(path, expected_rows=_test_rows(paths))
    message = message or default_message(path, paths)
    require_credentials()
    log.info(f"submitting {path} ({len(labels)} rows) to {COMPETITION} with message {message!r}")
    out = run_kaggle("competitions", "submit", COMPETITION, "-f", str(path), "-m", message,
                     what=f"kaggle competitions submit {COMPETITION}")
    log.info(out.strip())
    log.info("scores appear in a minute or two: `make submissions`")


def list_submissions() -> None:
    """Print your recent submissions and their scores."""
    require_credentials()
    log.info(run_kaggle("competitions", "submissions", COMPETITION,
                   what=f"kaggle competitions submissions {COMPETITION}").rstrip())
