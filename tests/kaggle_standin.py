"""Loopback stand-in for the Kaggle API, for driving the real `kaggle` client (its CLI or its library) in tests.

The kaggle client 2.x talks to http://localhost (port 80) when run with
KAGGLE_API_ENVIRONMENT=LOCALHOST, through `requests`, which honours HTTP_PROXY. The
stand-in listens on a free high port and plays that proxy (HTTP_PROXY=http://127.0.0.1:<port>,
with localhost not in NO_PROXY): it takes the absolute-URI request lines a proxy gets,
so no root and no fixed port are needed. Every API call is a JSON POST to
/api/v1/<service>/<method>; file bodies travel over plain GET/PUT URLs that the
API hands out (the `/_files/`, `/_upload/` and `/_output/` paths below).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
import zipfile
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

COMPETITION_API = "/api/v1/competitions.CompetitionApiService/"
KERNELS_API = "/api/v1/kernels.KernelsApiService/"
OAUTH_API = "/api/v1/security.OAuthService/"

ERROR_MESSAGES = {
    401: "Unauthenticated",
    403: "You must accept this competition's rules before you'll be able to download files.",
}


def cli_env(home: str, proxy: str | None = None, **extra: str) -> dict:
    """Minimal environment for running the kaggle client against the stand-in whose `proxy` URL is given."""
    env = {
        "HOME": home,
        "PATH": "/usr/bin:/bin",
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }
    if proxy:  # both spellings (the lower-case one wins), and no NO_PROXY: it must not cover localhost
        env.update(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="", no_proxy="")
    env.update(extra)
    return env


class KaggleStandIn:
    """Fake Kaggle API server on 127.0.0.1:<free port>, reached as the proxy for http://localhost."""

    def __init__(self, zip_bytes: bytes, competition: str = "digit-recognizer"):
        """Serve `zip_bytes` as the data of `competition`."""
        self.zip_bytes = zip_bytes
        self.port = 0  # set on __enter__
        self.competition = competition
        self.base_url = "http://localhost"  # what the client asks for; it reaches us through HTTP_PROXY
        # Answer every request with this status (401/403/...) and fail_message
        # (default ERROR_MESSAGES[fail_with]) as Kaggle's {"code", "message"} JSON.
        self.fail_with: int | None = None
        self.fail_message: str | None = None
        # Faults of the file links only (the GETs that the API's redirects lead to), as Kaggle's storage shows them:
        # link_fails_with answers them with that status (an XML body, not Kaggle's JSON); the next `cut_downloads`
        # of them send the full Content-Length, half the body, then close the connection; corrupt_zip serves
        # damaged(zip_bytes).
        self.link_fails_with: int | None = None
        self.cut_downloads = 0
        self.corrupt_zip = False
        # Every request: method, path, headers, body (bytes), json, user (Basic auth).
        self.requests: list[dict] = []
        # Completed submissions: ref, competition, file_name, content, message, date, polls, created.
        self.submissions: list[dict] = []
        self.uploads: dict[str, dict] = {}  # upload token -> {file_name, content}
        # Scoring: a submission is PENDING in its first `pending_polls` answers (ListSubmissions, GetSubmission) and
        # for `pending_seconds` after it was made, then COMPLETE with its accuracy on `answers` (an ImageId,Label
        # CSV), else with `public_score`; ERROR with `scoring_error` if that is set or the file does not parse.
        self.answers: bytes | None = None
        self.public_score = "0.98765"
        self.pending_polls = 0
        self.pending_seconds = 0.0
        self.scoring_error: str | None = None
        self.kernel_pushes: list[dict] = []  # SaveKernel request bodies
        self.kernel_status = "COMPLETE"  # QUEUED / RUNNING / COMPLETE / ERROR
        self.kernel_failure_message: str | None = None
        self.kernel_outputs: dict[str, bytes] = {}  # `kernels output` files, by relative path
        self.kernel_log = ""
        self.missing_outputs: set[str] = set()  # listed in kernel_outputs, but their download answers 404
        self.output_pages: list[dict] = []  # ListKernelSessionOutput requests (pageSize, pageToken)
        self.push_error: str | None = None  # SaveKernel answers {"error": ...} with status 200
        self.invalid_competition_sources: list[str] = []  # SaveKernel reports these as not attached
        self.last_modified = formatdate(usegmt=True)  # of every served file
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def proxy(self) -> str:
        """The HTTP_PROXY value that sends the kaggle client (LOCALHOST mode) here."""
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        """Paths of all recorded requests, in order."""
        return [r["path"] for r in self.requests]

    def member(self, name: str) -> bytes:
        """Bytes of one file inside the competition zip."""
        with zipfile.ZipFile(io.BytesIO(self.zip_bytes)) as zf:
            return zf.read(name)

    # -- API method implementations: (json request) -> (status, json body or redirect) --

    def _api(self, path: str, req: dict):
        """Dispatch one JSON API call; returns (status, body dict) or (302, url)."""
        name = path.rsplit("/", 1)[-1]
        if path.startswith(COMPETITION_API):
            if req.get("competitionName") not in (None, self.competition):
                return 404, {"code": 404, "message": "Competition not found"}
            if name == "DownloadDataFiles":
                return 302, f"{self.base_url}/_files/{self.competition}.zip"
            if name == "DownloadDataFile":
                return 302, f"{self.base_url}/_files/{req['fileName']}"
            if name == "StartSubmissionUpload":
                token = f"upload-{len(self.uploads) + 1}"
                self.uploads[token] = {
                    "file_name": req.get("fileName"),
                    "content": None,
                }
                return 200, {
                    "token": token,
                    "createUrl": f"{self.base_url}/_upload/{token}",
                }
            if name == "CreateSubmission":
                return self._create_submission(req)
            if name == "GetSubmissionLimits":
                n = len(self.submissions)
                return 200, {
                    "numToday": n,
                    "numTotal": n,
                    "numAllowedNow": max(0, 5 - n),
                }
            if name == "ListSubmissions":
                start, size = int(req.get("pageToken") or 0), int(req.get("pageSize") or 20)
                newest = list(reversed(self.submissions))
                body = {"submissions": [self._submission_json(s) for s in newest[start:start + size]]}
                if start + size < len(newest):
                    body["nextPageToken"] = str(start + size)
                return 200, body
            if name == "GetSubmission":
                found = [s for s in self.submissions if s["ref"] == int(req.get("ref") or 0)]
                if not found:
                    return 404, {"code": 404, "message": "Submission not found"}
                return 200, self._submission_json(found[0])
        if path.startswith(KERNELS_API):
            if name == "SaveKernel":
                self.kernel_pushes.append(req)
                if self.push_error:
                    return 200, {"error": self.push_error}
                slug = req.get("slug") or f"testuser/kernel-{req.get('id')}"
                return 200, {
                    "ref": f"/code/{slug}",
                    "url": f"{self.base_url}/code/{slug}",
                    "versionNumber": len(self.kernel_pushes),
                    "kernelId": 1,
                    "invalidCompetitionSources": self.invalid_competition_sources,
                }
            if name == "GetKernelSessionStatus":
                body = {"status": self.kernel_status}
                if self.kernel_failure_message:
                    body["failureMessage"] = self.kernel_failure_message
                return 200, body
            if name == "ListKernelSessionOutput":
                return 200, self._output_page(req)
        if path == OAUTH_API + "IntrospectToken":
            return 200, {"active": True, "username": "testuser"}
        return 404, {"code": 404, "message": f"stand-in does not implement {path}"}

    def _output_page(self, req: dict) -> dict:
        """One page of the kernel's output files, `pageSize` at a time, as Kaggle pages them."""
        self.output_pages.append({k: req.get(k) for k in ("pageSize", "pageToken")})
        start, size = int(req.get("pageToken") or 0), int(req.get("pageSize") or 20)
        names = list(self.kernel_outputs)[start:start + size]
        body = {"files": [{"fileName": n, "url": f"{self.base_url}/_output/{n}"} for n in names],
                "log": self.kernel_log or None}
        if start + size < len(self.kernel_outputs):
            body["nextPageToken"] = str(start + size)
        return body

    def _create_submission(self, req: dict):
        """Turn a finished upload into a recorded submission."""
        upload = self.uploads.get(req.get("blobFileTokens", ""))
        if upload is None or upload["content"] is None:
            return 400, {"code": 400, "message": "Invalid blob file token"}
        ref = 1000 + len(self.submissions)
        self.submissions.append(
            {
                "ref": ref,
                "competition": req.get("competitionName"),
                "file_name": upload["file_name"],
                "content": upload["content"],
                "message": req.get("submissionDescription"),
                "date": datetime.now(UTC).replace(tzinfo=None),
                "polls": 0,
                "created": time.monotonic(),
            }
        )
        return 200, {
            "message": "Successfully submitted to Digit Recognizer",
            "ref": ref,
        }

    def _submission_json(self, s: dict) -> dict:
        """One ApiSubmission as Kaggle's JSON, counting this answer as one poll of it.

        Like every proto3 JSON answer it leaves out fields at their default: a PENDING submission (status 0)
        has no "status", and no score until it is scored.
        """
        pending = not s.get("scored") and (s["polls"] < self.pending_polls
                                           or time.monotonic() - s["created"] < self.pending_seconds)
        s["polls"] += 1
        s["scored"] = not pending  # once scored, it stays so
        body = {
            "ref": s["ref"],
            "fileName": s["file_name"],
            "description": s["message"],
            "date": s["date"].isoformat(timespec="milliseconds") + "Z",
            "totalBytes": len(s["content"]),
            "submittedBy": "testuser",
            "teamName": "testuser",
        }
        if pending:
            return body
        score, error = self._score(s["content"])
        if error:
            return {**body, "status": "ERROR", "errorDescription": error}
        return {**body, "status": "COMPLETE", "publicScore": score}

    def _score(self, content: bytes) -> tuple[str | None, str | None]:
        """(public score, None), or (None, why it could not be scored)."""
        if self.scoring_error:
            return None, self.scoring_error
        if self.answers is None:
            return self.public_score, None
        try:
            truth, given = _labels(self.answers), _labels(content)
        except ValueError as err:
            return None, f"Submission file is malformed: {err}"
        if set(given) != set(truth):
            return None, f"Submission must have {len(truth)} rows, one per ImageId of test.csv"
        right = sum(given[image] == label for image, label in truth.items())
        return f"{right / len(truth):.5f}", None


def damaged(zip_bytes: bytes) -> bytes:
    """`zip_bytes` with a run of its first member's compressed bytes inverted: the zip opens, that member does not."""
    name_length, extra_length = int.from_bytes(zip_bytes[26:28], "little"), int.from_bytes(zip_bytes[28:30], "little")
    start, size = 30 + name_length + extra_length, int.from_bytes(zip_bytes[18:22], "little")
    first, last = start + size // 4, start + size // 4 + max(1, min(64, size // 2))
    return zip_bytes[:first] + bytes(b ^ 0xFF for b in zip_bytes[first:last]) + zip_bytes[last:]


def _labels(csv_bytes: bytes) -> dict[int, int]:
    """ImageId -> Label of an ImageId,Label CSV (ValueError if it is not one)."""
    lines = csv_bytes.decode().split()
    if not lines or lines[0].strip().lower() != "imageid,label":
        raise ValueError("the header must be ImageId,Label")
    rows = [line.split(",") for line in lines[1:]]
    if any(len(row) != 2 for row in rows):
        raise ValueError("every row must be ImageId,Label")
    return {int(image): int(label) for image, label in rows}


@contextlib.contextmanager
def port_closed():
    """A free 127.0.0.1 port, held bound but not listening: connections to it are refused. Yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _handler_for(standin: KaggleStandIn):
    """Build a request handler class bound to one stand-in instance."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            """Keep pytest output quiet."""

        def parse_request(self) -> bool:
            """Accept a proxy's absolute-URI request line (GET http://localhost/x): keep only the path."""
            if not super().parse_request():
                return False
            self.target = self.path
            if self.path.startswith(("http://", "https://")):
                parts = urlsplit(self.path)
                self.path = parts.path + (f"?{parts.query}" if parts.query else "")
            return True

        def _read_body(self) -> bytes:
            """Read a Content-Length or chunked request body."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _record(self, body: bytes) -> dict:
            """Append this request to standin.requests."""
            auth = self.headers.get("Authorization", "")
            user = None
            if auth.startswith("Basic "):
                user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            entry = {
                "method": self.command,
                "path": self.path,
                "target": self.target,  # the request line's target: absolute when sent through the proxy
                "headers": dict(self.headers),
                "body": body,
                "json": parsed,
                "user": user,
            }
            with standin._lock:
                standin.requests.append(entry)
            return entry

        def _send(
            self,
            status: int,
            body: bytes = b"",
            ctype: str = "application/json",
            cut: bool = False,
            **headers,
        ) -> None:
            """Write a complete response; `cut`: only the first half of its body, then close the connection."""
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body[: len(body) // 2] if cut else body)
            self.close_connection = self.close_connection or cut

        def _send_json(self, status: int, obj: dict) -> None:
            """Write a JSON response."""
            self._send(status, json.dumps(obj).encode())

        def _maybe_fail(self) -> bool:
            """Answer with standin.fail_with if it is set."""
            code = standin.fail_with
            if not code:
                return False
            message = standin.fail_message or ERROR_MESSAGES.get(code, "Error")
            self._send_json(code, {"code": code, "message": message})
            return True

        def do_POST(self) -> None:
            """JSON API calls."""
            entry = self._record(self._read_body())
            if self._maybe_fail():
                return
            with standin._lock:
                status, result = standin._api(self.path, entry["json"] or {})
            if status == 302:
                self._send(302, b"", Location=result)
            else:
                self._send_json(status, result)

        def do_GET(self) -> None:
            """File downloads handed out by the API."""
            self._record(b"")
            if self._maybe_fail():
                return
            if standin.link_fails_with:
                code = standin.link_fails_with
                self._send(code, f"<Error><Code>{code}</Code></Error>".encode(), "application/xml")
                return
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            data = None
            if self.path.startswith("/_files/"):
                data = (
                    standin.zip_bytes if name == f"{standin.competition}.zip" else None
                )
                if data is not None and standin.corrupt_zip:
                    data = damaged(data)
                if data is None:
                    try:
                        data = standin.member(name)
                    except KeyError:
                        pass
            elif self.path.startswith("/_output/"):
                # output names may have folders (runs/<id>/metrics.json)
                name = self.path.split("?")[0][len("/_output/"):]
                data = None if name in standin.missing_outputs else standin.kernel_outputs.get(name)
            if data is None:
                self._send_json(404, {"code": 404, "message": "Not found"})
                return
            ctype = (
                "application/zip"
                if name.endswith(".zip")
                else "application/octet-stream"
            )
            with standin._lock:
                cut = standin.cut_downloads > 0
                if cut:
                    standin.cut_downloads -= 1
            self._send(200, data, ctype, cut, Last_Modified=standin.last_modified)

        def do_PUT(self) -> None:
            """Blob uploads of submission files."""
            body = self._read_body()
            self._record(body)
            if self._maybe_fail():
                return
            upload = standin.uploads.get(self.path.rsplit("/", 1)[-1])
            if not self.path.startswith("/_upload/") or upload is None:
                self._send_json(404, {"code": 404, "message": "Upload URL not found"})
                return
            upload["content"] = body
            self._send_json(200, {})

        def do_CONNECT(self) -> None:
            """Record proxy tunnel attempts (HTTPS_PROXY pointed here) and refuse them."""
            self._record(b"")
            self._send(502, b"stand-in is not a proxy", "text/plain")
            self.close_connection = True

    return Handler
