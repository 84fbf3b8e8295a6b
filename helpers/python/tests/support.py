"""Test support: a scriptable fault server and helpers to find free loopback ports.

The fault server listens on 127.0.0.1 only.  A test queues the answers it wants
(status, JSON body, headers, an optional delay before answering) and reads back
every request the server received.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> as is; None -> empty body
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def ok(data: Any = None, with_data: bool = True) -> Answer:
    body: Dict[str, Any] = {"success": True}
    if with_data:
        body["data"] = data
    return Answer(200, body)


def fail(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> Answer:
    reason = {
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
        409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
        503: "Service Unavailable", 504: "Gateway Timeout",
    }.get(status, "Error")
    body = {"success": False, "error": reason, "message": message, "code": code}
    return Answer(status, body, dict(headers or {}))


class FaultServer:
    """A threaded HTTP server answering from a queue; the default answer is ``ok()``."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._answers: List[Answer] = []
        self.requests: List[Seen] = []
        self.default = ok(None, with_data=False)
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.requests.append(seen)
                    answer = outer._answers.pop(0) if outer._answers else outer.default
                if answer.delay and outer.stopping.wait(answer.delay):
                    return
                if isinstance(answer.body, bytes):
                    payload = answer.body
                    ctype = "text/html"
                elif answer.body is None:
                    payload = b""
                    ctype = "application/json"
                else:
                    payload = json.dumps(answer.body).encode()
                    ctype = "application/json"
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self._server = Server(("127.0.0.1", port), Handler)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def queue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
