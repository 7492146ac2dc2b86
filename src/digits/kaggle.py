"""Kaggle through the official `kaggle` client used as a library: sign-in, download, submit, scores, error advice."""

import contextlib
import functools
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import data, runs, submission
from .config import COMPETITION, Paths
from .errors import DigitsError, InputError, KaggleError

log = logging.getLogger(__name__)

RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
TOKEN_URL = "https://www.kaggle.com/settings"
RULES_HINT = f"Accept the competition rules at {RULES_URL} (signed in as the account of your API key), then retry."
DATA_FILES = ("train.csv", "test.csv")
EXTRA_FILES = ("sample_submission.csv",)
WAIT_S = 300  # how long `digits submit` waits for the score by default
POLL_S = 5.0  # and how often it asks
PROGRESS_EVERY_S = 30  # a "still being scored" line at most this often
LISTED = 20  # `digits submissions` shows this many of the newest
RETRIES = 5  # how often the client retries a download cut off mid-file (its own default); DIGITS_DOWNLOAD_RETRIES

CREDENTIALS_HELP = f"""no Kaggle credentials found, so nothing was sent to Kaggle: create an API token at \
{TOKEN_URL} (section "API") and set it up in one of these ways:
  - ~/.kaggle/kaggle.json holding {{"username": "...", "key": "..."}} (see kaggle.json.example), then
    `chmod 600 ~/.kaggle/kaggle.json`; or that file in the folder named by KAGGLE_CONFIG_DIR
    (~/.config/kaggle/kaggle.json when ~/.kaggle does not exist)
  - the environment variables KAGGLE_USERNAME and KAGGLE_KEY
  - KAGGLE_API_TOKEN=<token> (or the path of a file holding it), or the token saved in ~/.kaggle/access_token
  - `kaggle auth login` (OAuth; saves ~/.kaggle/credentials.json)
None of these was found (a revoked or expired token counts as none), so nothing was sent to Kaggle."""

_secrets: set[str] = set()  # the key and token the client signed in with: blanked out of any message


@contextlib.contextmanager
def _client_output_hidden():
    """Keep what the client prints (its own help, warnings, progress) off our stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _client_class():
    """The client's KaggleApi class, imported only when Kaggle is used (`digits` starts without it)."""
    try:
        with _client_output_hidden():  # importing `kaggle` signs in once and prints its help if it cannot
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise KaggleError(f"the kaggle client is not installed ({err}): run `make venv` "
                          "(requirements.txt pins it)") from None
    return KaggleApi


def client():
    """A KaggleApi signed in by the client's own credential search; KaggleError (nothing sent) if it finds none."""
    api = _client_class()()
    with calling("signing in to Kaggle"):
        try:
            api.authenticate()
        except SystemExit:  # how the client says that it found no credentials
            raise KaggleError(CREDENTIALS_HELP) from None
    _secrets.update(v for v in (api.get_config_value("key"), api.get_config_value("token")) if isinstance(v, str) and v)
    _warn_if_readable(Path(api.config))
    return api


def _warn_if_readable(config_file: Path) -> None:
    """Warn (on stderr) when the client's kaggle.json can be read by other users."""
    if config_file.is_file() and config_file.stat().st_mode & 0o077:
        print(f"warning: {config_file} is readable by other users; run `chmod 600 {config_file}`", file=sys.stderr)


def signed_in_as(api) -> str | None:
    """The username the client signed in as (None when its credentials do not name one)."""
    return api.get_config_value("username") or None


def username() -> str | None:
    """The Kaggle username: from KAGGLE_USERNAME or kaggle.json as the client reads them, else by signing in."""
    api = _client_class()()
    with _client_output_hidden():
        values = api.read_config_environment(api.read_config_file(quiet=True))
    if values.get("username"):
        return values["username"]
    try:
        return signed_in_as(client())
    except KaggleError:
        return None


@contextlib.contextmanager
def calling(what: str, forbidden_hint: str = RULES_HINT, files_of: str = ""):
    """Run client calls with their printing hidden; what they raise becomes a KaggleError with advice.

    `what` starts each message; `files_of` names whose files a failed download was of (e.g. "kernel a/b").
    """
    try:
        with _client_output_hidden():
            yield
    except DigitsError:
        raise
    except Exception as err:
        message = advice(what, err, forbidden_hint, files_of)
        if message is None:
            raise
        raise KaggleError(message) from None


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception inside it: causes, contexts, urllib3's `reason`, exceptions given as arguments."""
    found, todo = [], [err]
    while todo:
        item = todo.pop(0)
        if isinstance(item, BaseException) and not any(item is seen for seen in found):
            found.append(item)
            todo += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
    return found


def advice(what: str, err: BaseException, forbidden_hint: str = RULES_HINT, files_of: str = "") -> str | None:
    """One plain piece of advice for what the client raised, keyed on the HTTP status or the exception's type.

    None for a failure that is not Kaggle's or the network's (a local OSError, such as a full disk).
    """
    import requests

    chain = _chain(err)
    answered = next((e for e in chain if isinstance(e, requests.HTTPError) and e.response is not None), None)
    if answered is not None:
        return _http_advice(what, answered, forbidden_hint, files_of)
    if any(isinstance(e, requests.exceptions.ChunkedEncodingError) for e in chain):  # the body stopped short
        return f"{what}: the connection was cut mid-download, and on every retry. Check the network and run the same " \
               "command again."
    unreachable = next((e for e in chain if isinstance(e, requests.ConnectionError | requests.Timeout)), None)
    if unreachable is not None:
        return f"{what}: {_network_problem(unreachable, chain)}"
    if isinstance(err, OSError) and not isinstance(err, requests.RequestException):
        return None
    if isinstance(err, ValueError):  # the client's checks of its arguments, the kernel's metadata among them
        return f"{what}: {_redact(str(err))}"
    return f"{what}: the kaggle client failed ({type(err).__name__}: {_clip(_redact(str(err)), 150)}); run the same " \
           "command again."


def _http_advice(what: str, err, forbidden_hint: str, files_of: str) -> str:
    """Advice keyed on an HTTP error status from Kaggle, or from a file's download link that it handed out."""
    code = err.response.status_code
    said = _server_message(err.response)
    link = err.request is not None and err.request.method == "GET"  # a file's link, not an API call (those POST)
    if link:
        name = unquote(urlsplit(err.response.url or err.request.url or "").path.rsplit("/", 1)[-1]) or "a file"
        what = f"{what}: {name}{f' of {files_of}' if files_of else ''} could not be downloaded"
    if code == 401:
        return (f"{what}: Kaggle rejected the credentials (HTTP 401): create a new API token at {TOKEN_URL} (section "
                "\"API\") and put it where the old one was, then retry.\nThe one used is wrong, revoked or expired; "
                "the client uses the first it finds of KAGGLE_API_TOKEN (or ~/.kaggle/access_token), KAGGLE_USERNAME "
                "and KAGGLE_KEY, ~/.kaggle/kaggle.json.")
    if code == 403 and link:
        return f"{what}: the link Kaggle handed out was refused (HTTP 403; links expire): run the same command again."
    if code == 403:
        return f"{what}: Kaggle refused (HTTP 403). {forbidden_hint}\nKaggle said: {said}"
    if code == 404 and link:
        return f"{what}: nothing is at the link Kaggle handed out (HTTP 404): run the same command again later."
    if code == 404:
        return f"{what}: Kaggle found no such thing (HTTP 404: {said}); check the name, and that your account sees it."
    if code == 429:
        return f"{what}: Kaggle is limiting this account's requests (HTTP 429): wait a few minutes, then retry."
    if code >= 500:
        return f"{what}: Kaggle failed on its side (HTTP {code}: {said}); retry in a few minutes."
    return f"{what}: Kaggle answered HTTP {code} ({said}); run the same command again later."


def _server_message(response) -> str:
    """The "message" of Kaggle's JSON error body, else the status line's reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    text = message if isinstance(message, str) and message.strip() else response.reason or "no message"
    return _clip(_redact(text), 150)


def _clip(text: str, most: int) -> str:
    """`text` on one line, cut to `most` characters (ending in "...") if it is longer."""
    text = " ".join(text.split())
    return text if len(text) <= most else f"{text[:most - 3]}..."


def _redact(text: str) -> str:
    """`text` without the signed-in key or token, nor any user:password in a URL."""
    for secret in _secrets | {os.environ.get("KAGGLE_KEY") or "", os.environ.get("KAGGLE_API_TOKEN") or ""}:
        if len(secret) >= 6:
            text = text.replace(secret, "***")
    return re.sub(r"(\w+://)[^/\s@]+@", r"\1***@", text)


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def proxy_for(url: str) -> str | None:
    """host:port of the proxy that `requests` uses for `url` from the environment (never its user or password)."""
    import requests

    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    return _host_port(proxy if "://" in proxy else f"http://{proxy}") if proxy else None


def _network_problem(err, chain: list[BaseException]) -> str:
    """Name the host that could not be reached and why, from the types of the exceptions raised."""
    import socket
    import ssl

    import requests
    import urllib3

    url = err.request.url if getattr(err, "request", None) is not None else "https://api.kaggle.com/"
    host, proxy = _host_port(url), proxy_for(url)
    if any(isinstance(e, requests.exceptions.ProxyError | urllib3.exceptions.ProxyError) for e in chain):
        return (f"could not reach {host} through the proxy {proxy or '(from the environment)'}: the proxy refused "
                "or could not be reached. Check HTTPS_PROXY and HTTP_PROXY (they are honoured) and that the proxy "
                f"allows {host.split(':')[0]}.")
    if any(isinstance(e, socket.gaierror) for e in chain):
        reason = "its name does not resolve (offline, or no DNS)"
    elif any(isinstance(e, ConnectionRefusedError) for e in chain):
        reason = "the connection was refused"
    elif any(isinstance(e, requests.exceptions.SSLError | ssl.SSLError) for e in chain):
        reason = "its TLS certificate did not verify (an inspecting proxy? point REQUESTS_CA_BUNDLE at its CA file)"
    elif any(isinstance(e, requests.Timeout | TimeoutError) for e in chain):
        reason = "the connection timed out"
    else:
        reason = "no connection"
    hint = (f"the proxy {proxy} from the environment was used" if proxy
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
    retries = _retries()
    api = client()
    # competition_download_files leaves download_file's retries at the client's default: pass ours
    api.download_file = functools.partial(api.download_file, max_retries=retries)
    doing = f"downloading the {COMPETITION} data (nothing in {data_dir.resolve().name}/ changed)"
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=data_dir))
    try:
        log.info(f"downloading the {COMPETITION} data from Kaggle ...")
        with calling(doing), _retries_told(retries):
            api.competition_download_files(COMPETITION, path=str(staging), force=True, quiet=True)
        try:
            names = _unpack(staging)
            train_rows, test_rows = _validate(staging, cache_dir)
        except InputError as err:
            sent = str(err).replace(str(staging / data.COMPETITION_ZIP), f"the {data.COMPETITION_ZIP} that Kaggle sent")
            sent = sent.replace(f"{staging}{os.sep}", "Kaggle's ").replace(str(staging), "the download")
            raise KaggleError(f"{doing}: {_clip(sent, 180)}; run the same command again.") from None
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


def _retries() -> int:
    """How often a download cut off mid-file is retried: DIGITS_DOWNLOAD_RETRIES, else RETRIES."""
    text = os.environ.get("DIGITS_DOWNLOAD_RETRIES", str(RETRIES)).strip()
    if not text.isdigit():
        raise InputError(f"DIGITS_DOWNLOAD_RETRIES={text!r}: expected a whole number of retries, such as {RETRIES}")
    return int(text)


@contextlib.contextmanager
def _retries_told(retries: int):
    """Log a line each time the client retries a download: it retries silently, but urllib3 logs every request it
    sends (at DEBUG), and a second GET of the same link is a retry."""
    fetched = []

    class Told(logging.Handler):
        def emit(self, record):
            link = re.search(r'"GET (\S+) ', record.getMessage())
            if link:
                if link[1] in fetched:
                    log.info(f"connection lost, retrying the download ({fetched.count(link[1])} of {retries}) ...")
                fetched.append(link[1])

    urllib3_log, told = logging.getLogger("urllib3.connectionpool"), Told()
    level = urllib3_log.level
    urllib3_log.addHandler(told)
    urllib3_log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        urllib3_log.removeHandler(told)
        urllib3_log.setLevel(level)


def _unpack(staging: Path) -> list[str]:
    """Write the competition CSVs as plain files in `staging` (from the zip the client saved, or as saved)."""
    names = []
    for name in DATA_FILES + EXTRA_FILES:
        try:
            source = data.find_csv(staging, name)
        except InputError:
            if name in EXTRA_FILES:
                continue
            raise
        if source.member is not None:
            (staging / name).write_bytes(source.read_bytes())
        names.append(name)
    return names


def _test_rows(paths: Paths) -> int:
    try:
        source = data.find_csv(paths.data_dir, "test.csv")
    except InputError as err:
        raise InputError(f"cannot check the submission without test.csv: {err}") from None
    return len(data.read_test(source, paths.cache_dir))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def default_message(path: Path, paths: Paths) -> str:
    """'<run-id>: CV 0.9912' (or 'holdout accuracy 0.9912', a shared holdout's) from the run's metrics, else the file
    name."""
    stem = Path(path).stem
    run, tag = runs.split_subset(stem)
    candidates = [runs.metrics_file(paths.models_dir / stem)]
    if tag:
        candidates.append(runs.metrics_file(paths.models_dir / run, tag))
    for candidate in candidates:
        cv = runs.cv(_read_json(candidate))
        if cv and isinstance(cv["accuracy"], (int, float)):
            return f"{stem}: {'CV' if cv['kind'] == 'out-of-fold' else 'holdout accuracy'} {cv['accuracy']:.4f}"
    return stem


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _score(value) -> float | str | None:
    """Kaggle's score text as a number (as text if it is not one; None if there is none)."""
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _record(folder: Path, entry: dict) -> Path:
    """Add `entry` to the folder's kaggle_submissions.json, or update the one with its ref."""
    records = [r for r in runs.kaggle_submissions(folder) if r.get("ref") != entry["ref"]]
    return runs.save_kaggle_submissions(folder, [*records, entry])


def _scored(entry: dict, found) -> dict:
    """`entry` updated with what Kaggle says of the submission now (an ApiSubmission)."""
    state = found.status.name.lower()  # pending, complete or error
    updated = {**entry, "status": state, "public_score": _score(found.public_score),
               "private_score": _score(found.private_score)}
    if state == "error":
        updated["error"] = _redact((found.error_description or "").strip()) or "(Kaggle gave no reason)"
    if state != "pending":
        updated["scored"] = _now()
    return updated


def submit(paths: Paths, file=None, message: str | None = None, wait: float = WAIT_S,
           poll_interval: float = POLL_S) -> dict:
    """Check a submission against test.csv, send it, wait up to `wait` seconds for its public score; record it."""
    path = Path(file) if file else runs.latest_submission(paths.submissions_dir)
    labels = submission.read(path, expected_rows=_test_rows(paths))
    message = message or default_message(path, paths)
    api = client()
    log.info(f"submitting {path} ({len(labels)} rows) to {COMPETITION} with message {message!r}")
    with calling(f"submitting {path.name} to {COMPETITION}"):
        sent = api.competition_submit(str(path), message, COMPETITION, quiet=True)
    if not sent.ref:  # the client reports a failed upload with an answer that carries no submission
        raise KaggleError(f"submitting {path.name} to {COMPETITION}: the upload did not complete, so nothing was "
                          "submitted; check the network and retry")
    folder = runs.submission_owner(path, paths.models_dir)
    entry = {"ref": sent.ref, "file": str(path), "submitted": _now(), "message": message, "status": "pending",
             "public_score": None, "private_score": None}
    record = _record(folder, entry)
    log.info(f"sent: submission {sent.ref}, recorded in {record}")
    if wait <= 0:
        log.info(f"scores appear in a minute or two: {_command('submissions')} shows them and records them with "
                 "the run")
        return entry
    found = wait_for_score(api, sent.ref, wait, poll_interval)
    if found is not None:
        entry = _scored(entry, found)
        _record(folder, entry)
    return _report(entry, wait)


def _command(name: str) -> str:
    """The command `name` as the user runs it: `make NAME` under make (it exports MAKELEVEL), else `digits NAME`."""
    return f"`{'make' if 'MAKELEVEL' in os.environ else 'digits'} {name}`"


def _report(entry: dict, wait: float) -> dict:
    """Say how the submission's scoring ended; KaggleError if Kaggle could not score it."""
    name = Path(entry["file"]).name
    if entry["status"] == "error":
        raise KaggleError(f"Kaggle could not score submission {entry['ref']} ({name}): {entry['error']}")
    if entry["status"] == "complete":
        log.info(f"public score {entry['public_score']}: submission {entry['ref']} ({name})")
    else:
        log.info(f"submission {entry['ref']} ({name}) is still being scored after {wait:g} s; run "
                 f"{_command('submissions')} later to get its score (it is recorded with the run)")
    return entry


def _find(api, ref: int):
    """Kaggle's ApiSubmission with this ref among your newest submissions, or None if it is not listed (yet)."""
    with calling(f"asking Kaggle for the score of submission {ref}"):
        listed = api.competition_submissions(COMPETITION, page_size=LISTED) or []
    return next((s for s in listed if s is not None and s.ref == ref), None)


def wait_for_score(api, ref: int, wait: float, poll_interval: float):
    """Poll until submission `ref` is scored (or failed) or `wait` seconds passed; its last ApiSubmission, if any."""
    started = time.monotonic()
    log.info(f"waiting up to {wait:g} s for Kaggle to score submission {ref} (every {poll_interval:g} s; "
             "--no-wait skips this) ...")
    noted, found = started, None
    try:
        while True:
            found = _find(api, ref) or found
            if found is not None and found.status.name != "PENDING":
                return found
            now = time.monotonic()
            if now - started >= wait:
                return found
            if now - noted >= PROGRESS_EVERY_S:
                log.info(f"submission {ref}: still being scored ({now - started:.0f} s)")
                noted = now
            time.sleep(min(poll_interval, max(0.0, wait - (now - started))))
    except KeyboardInterrupt:  # stop waiting; the submission is made and recorded as pending
        print(file=sys.stderr)
        return found


def list_submissions(paths: Paths) -> list[dict]:
    """Print your newest submissions and their scores; fill in the scores of the pending ones recorded in runs."""
    api = client()
    with calling(f"listing your {COMPETITION} submissions"):
        listed = [s for s in api.competition_submissions(COMPETITION, page_size=LISTED) or [] if s is not None]
    print(submissions_table(listed))
    return update_records(paths.models_dir, listed)


def submissions_table(listed) -> str:
    """The submissions as an aligned text table, newest first."""
    if not listed:
        return f"no submissions to {COMPETITION} yet; send one with {_command('submit')}"
    rows = [("DATE (UTC)", "REF", "FILE", "STATUS", "PUBLIC", "MESSAGE")]
    for s in listed:
        date = s.date.strftime("%Y-%m-%d %H:%M") if s.date else "-"
        rows.append((date, str(s.ref), s.file_name or "-", s.status.name.lower(), s.public_score or "-",
                     s.description or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def update_records(models_dir, listed) -> list[dict]:
    """Fill in the scores of recorded pending submissions that Kaggle has scored since; return those updated."""
    by_ref = {s.ref: s for s in listed}
    updated = []
    for folder in runs.kaggle_submission_folders(models_dir):
        records = runs.kaggle_submissions(folder)
        changed = [_scored(r, by_ref[r["ref"]]) if r.get("status") == "pending" and r.get("ref") in by_ref else r
                   for r in records]
        fresh = [new for old, new in zip(records, changed, strict=True) if new != old and new["status"] != "pending"]
        if fresh:
            path = runs.save_kaggle_submissions(folder, changed)
            for entry in fresh:
                score = entry["public_score"] if entry["status"] == "complete" else f"error: {entry['error']}"
                log.info(f"{Path(entry['file']).name}: submission {entry['ref']} scored {score}; recorded in {path}")
            updated += fresh
    return updated
