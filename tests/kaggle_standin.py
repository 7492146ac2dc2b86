"""Loopback stand-in for the Kaggle API, for driving the real `kaggle` CLI in tests.

The kaggle CLI 2.x talks to http://localhost (port 80) when run with
KAGGLE_API_ENVIRONMENT=LOCALHOST. Every API call is a JSON POST to
/api/v1/<service>/<method>; file bodies travel over plain GET/PUT URLs that the
API hands out (the `/_files/`, `/_upload/` and `/_output/` paths below).
"""

from __future__ import annotations

import base64
import contextlib
import errno
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

COMPETITION_API = "/api/v1/competitions.CompetitionApiService/"
KERNELS_API = "/api/v1/kernels.KernelsApiService/"
OAUTH_API = "/api/v1/security.OAuthService/"

ERROR_MESSAGES = {
    401: "Unauthenticated",
    403: "You must accept this competition's rules before you'll be able to download files.",
}


def cli_env(home: str, **extra: str) -> dict:
    """Minimal environment for running the kaggle CLI against the stand-in."""
    env = {
        "HOME": home,
        "PATH": "/usr/bin:/bin",
        "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
        "NO_PROXY": "localhost,127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


class KaggleStandIn:
    """Fake Kaggle API server on 127.0.0.1:<port>, used as a context manager."""

    def __init__(
        self,
        zip_bytes: bytes,
        port: int = 80,
        competition: str = "digit-recognizer",
        wait_s: float = 60.0,
    ):
        """Serve `zip_bytes` as the data of `competition`; wait up to `wait_s` for a port another run holds."""
        self.zip_bytes = zip_bytes
        self.port = port
        self.wait_s = wait_s
        self.competition = competition
        self.base_url = "http://localhost" if port == 80 else f"http://localhost:{port}"
        # Answer every request with this status (401/403/...) and fail_message
        # (default ERROR_MESSAGES[fail_with]) as Kaggle's {"code", "message"} JSON.
        self.fail_with: int | None = None
        self.fail_message: str | None = None
        # Every request: method, path, headers, body (bytes), json, user (Basic auth).
        self.requests: list[dict] = []
        # Completed submissions: ref, competition, file_name, content, message, date.
        self.submissions: list[dict] = []
        self.uploads: dict[str, dict] = {}  # upload token -> {file_name, content}
        self.public_score = "0.98765"  # score of every listed submission
        self.kernel_pushes: list[dict] = []  # SaveKernel request bodies
        self.kernel_status = "COMPLETE"  # QUEUED / RUNNING / COMPLETE / ERROR
        self.kernel_failure_message: str | None = None
        self.kernel_outputs: dict[str, bytes] = {}  # `kernels output` files, by relative path
        self.kernel_log = ""
        self.last_modified = formatdate(usegmt=True)  # of every served file
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        """Bind 127.0.0.1:<port> and serve in a background thread."""
        self._httpd = _bind(
            lambda: ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self)),
            self.port,
            self.wait_s,
        )
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

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
                return 200, {
                    "submissions": [
                        self._submission_json(s) for s in reversed(self.submissions)
                    ]
                }
        if path.startswith(KERNELS_API):
            if name == "SaveKernel":
                self.kernel_pushes.append(req)
                slug = req.get("slug") or f"testuser/kernel-{req.get('id')}"
                return 200, {
                    "ref": f"/code/{slug}",
                    "url": f"{self.base_url}/code/{slug}",
                    "versionNumber": len(self.kernel_pushes),
                    "kernelId": 1,
                }
            if name == "GetKernelSessionStatus":
                body = {"status": self.kernel_status}
                if self.kernel_failure_message:
                    body["failureMessage"] = self.kernel_failure_message
                return 200, body
            if name == "ListKernelSessionOutput":
                files = [
                    {"fileName": n, "url": f"{self.base_url}/_output/{n}"}
                    for n in self.kernel_outputs
                ]
                return 200, {"files": files, "log": self.kernel_log or None}
        if path == OAUTH_API + "IntrospectToken":
            return 200, {"active": True, "username": "testuser"}
        return 404, {"code": 404, "message": f"stand-in does not implement {path}"}

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
            }
        )
        return 200, {
            "message": "Successfully submitted to Digit Recognizer",
            "ref": ref,
        }

    def _submission_json(self, s: dict) -> dict:
        """One ApiSubmission as Kaggle's JSON."""
        return {
            "ref": s["ref"],
            "fileName": s["file_name"],
            "description": s["message"],
            "date": s["date"].isoformat(timespec="milliseconds") + "Z",
            "status": "COMPLETE",
            "publicScore": self.public_score,
            "privateScore": "",
            "totalBytes": len(s["content"]),
            "submittedBy": "testuser",
            "teamName": "testuser",
        }


_stuck_ports: set[int] = set()  # ports that stayed busy for a whole wait: later binds fail at once


def _bind(make, port: int, wait_s: float):
    """Call `make()` until the port is free (another test run may hold it) or `wait_s` has passed."""
    deadline = time.monotonic() + (0 if port in _stuck_ports else wait_s)
    while True:
        try:
            return make()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if exc.errno == errno.EADDRINUSE:
                _stuck_ports.add(port)
            raise RuntimeError(
                f"KaggleStandIn cannot bind 127.0.0.1:{port} ({exc}); the kaggle CLI in "
                "LOCALHOST mode only talks to http://localhost:80, so these tests need port 80 "
                "(run as root or grant CAP_NET_BIND_SERVICE) and nothing else listening there"
            ) from exc


@contextlib.contextmanager
def port_closed(port: int = 80, wait_s: float = 60.0):
    """Hold 127.0.0.1:<port> bound but not listening: connections are refused, and no other run's
    stand-in can answer them meanwhile."""

    def make():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    sock = _bind(make, port, wait_s)
    try:
        yield
    finally:
        sock.close()


def _handler_for(standin: KaggleStandIn):
    """Build a request handler class bound to one stand-in instance."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            """Keep pytest output quiet."""

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
            **headers,
        ) -> None:
            """Write a complete response."""
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

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
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            data = None
            if self.path.startswith("/_files/"):
                data = (
                    standin.zip_bytes if name == f"{standin.competition}.zip" else None
                )
                if data is None:
                    try:
                        data = standin.member(name)
                    except KeyError:
                        pass
            elif self.path.startswith("/_output/"):
                # output names may have folders (runs/<id>/metrics.json)
                data = standin.kernel_outputs.get(self.path.split("?")[0][len("/_output/"):])
            if data is None:
                self._send_json(404, {"code": 404, "message": "Not found"})
                return
            ctype = (
                "application/zip"
                if name.endswith(".zip")
                else "application/octet-stream"
            )
            self._send(200, data, ctype, Last_Modified=standin.last_modified)

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
