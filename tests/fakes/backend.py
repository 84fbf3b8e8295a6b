#!/usr/bin/python3
"""A fake of the Cronium backend's internal API, for cronium-runtime's tests.

By default it is the real Cronium app as observed (its Next.js internal API on
PostgreSQL): the same paths, bodies, status codes and error bodies, variable
values stored as *text* the way node-postgres writes a JS value into a `text`
column, and only the routes the real app has -- no DELETE on variables (405),
no tools/execute (the app's JSON catch-all 404), no read of an output or a
condition.  The richer backend the API contract allows (DELETE, tool actions)
is opt-in: ``FakeBackend(**RICH)`` or ``--rich``.  On top of that it lets a
test inject faults (status codes for the next calls, dropped connections,
delays, a stop and a restart on the same port) and inspect every request it
received.

Two ways to use it:

* in-process (pytest)::

      from fakes.backend import FakeBackend      # with tests/ on sys.path
      fb = FakeBackend(token="t").start()
      fb.seed_execution({"executionId": "e1", "userId": "u1"})
      fb.fail_next(2, status=503, retry_after=1)
      ...
      fb.stop()

* as a process, for a local stack::

      /usr/bin/python3 tests/fakes/backend.py --host 127.0.0.1 --port 8080 --token T --seed seed.json

  driven over HTTP through the control endpoints under ``/_fake/``.

Standard library only.  Not shipped with the service.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import decimal
import fnmatch
import json
import math
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "FakeBackend",
    "RecordedRequest",
    "js_number_text",
    "js_stringify",
    "pg_array_literal",
    "stored_text_of",
    "NotNullViolation",
    "RICH",
    "MAX_KEY_CHARS",
]

DELETE_MODES = ("supported", 404, 405)

# The opt-in richer backend: variables can be deleted, tool actions exist.
RICH = {"delete_mode": "supported", "tools_route": True}

# The real `variables.key` column is varchar(255): a longer key is a 500.
MAX_KEY_CHARS = 255

# The real app's keep-alive timeout (Node's http server: `Keep-Alive: timeout=5`).
REAL_IDLE_TIMEOUT = 5.0

# ---------------------------------------------------------------------------
# How the real backend turns a JSON value into the text it stores.
#
# PUT /api/internal/variables/{userId}/{key} does `request.json()` (so every
# number is an IEEE double), then drizzle hands `body.value` unchanged to
# node-postgres, whose parameter preparation gives: strings as they are,
# numbers and booleans through JS `toString()`, objects through
# `JSON.stringify`, arrays as a Postgres array literal, and null/undefined as
# SQL NULL (which the NOT NULL column refuses: a 500).
# ---------------------------------------------------------------------------


class NotNullViolation(ValueError):
    """The value would be stored as SQL NULL; the real column refuses it."""


def js_number_text(x: float) -> str:
    """`String(x)` for a JS number (ECMAScript Number::toString, radix 10)."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # also -0
    if x < 0:
        return "-" + js_number_text(-x)
    # repr() gives the shortest digit string that round-trips, like JS does.
    _, digit_tuple, exp = decimal.Decimal(repr(x)).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).lstrip("0")
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = exp + k  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    if k == 1:
        return "%se%s%d" % (digits, sign, abs(e))
    return "%s.%se%s%d" % (digits[0], digits[1:], sign, abs(e))


def _js_string_literal(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    # JSON.stringify escapes lone surrogates (well-formed JSON.stringify).
    if any(0xD800 <= ord(c) <= 0xDFFF for c in out):
        out = "".join("\\u%04x" % ord(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def _is_array_index(k: str) -> bool:
    return k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1


def js_stringify(v: Any) -> str:
    """`JSON.stringify(v)` for a value parsed from JSON (compact, JS key order)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if abs(v) < 2**53:
            return str(v)
        try:
            return js_number_text(float(v))
        except OverflowError:  # JS: Infinity, which JSON.stringify writes as null
            return "null"
    if isinstance(v, float):
        return js_number_text(v) if math.isfinite(v) else "null"
    if isinstance(v, str):
        return _js_string_literal(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(js_stringify(e) for e in v) + "]"
    if isinstance(v, dict):
        keys = [str(k) for k in v]
        # JS objects list integer-like ("array index") keys first, ascending.
        index_keys = sorted((k for k in keys if _is_array_index(k)), key=int)
        other_keys = [k for k in keys if not _is_array_index(k)]
        items = {str(k): val for k, val in v.items()}
        return "{" + ",".join(
            _js_string_literal(k) + ":" + js_stringify(items[k]) for k in index_keys + other_keys
        ) + "}"
    raise TypeError("not a JSON value: %r" % (v,))


def _pg_element_text(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return js_number_text(float(v))
    if isinstance(v, str):
        return v
    return js_stringify(v)


def pg_array_literal(values: list) -> str:
    """The Postgres array literal node-postgres builds from a JS array."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, list):
            parts.append(pg_array_literal(v))
        else:
            text = _pg_element_text(v).replace("\\", "\\\\").replace('"', '\\"')
            parts.append('"' + text + '"')
    return "{" + ",".join(parts) + "}"


def stored_text_of(value: Any) -> str:
    """The text the real backend stores for `{"value": value}`.

    `value` is the JS view of the JSON (numbers as floats; see
    `_parse_json_js`), though Python ints are accepted too.
    Raises NotNullViolation for null and for an empty object (both 500s).
    """
    if value is None:
        raise NotNullViolation("null value in column \"value\" violates not-null constraint")
    if isinstance(value, dict) and not value:
        # Observed: `{"value":{}}` is a 500 on the real backend (drizzle takes
        # the empty object for "no value"), unlike any other object.
        raise NotNullViolation("an empty object as the value is refused")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return pg_array_literal(value)
    if isinstance(value, dict):
        return js_stringify(value)
    return _pg_element_text(value)


def _reject_constant(name: str) -> Any:
    raise ValueError("invalid JSON constant %s" % name)


def _js_int(s: str) -> float:
    try:
        return float(int(s))
    except OverflowError:
        return -math.inf if s.startswith("-") else math.inf


def _parse_json_js(raw: bytes) -> Any:
    """Parse a body the way `request.json()` does: every number is a double."""
    return json.loads(raw.decode("utf-8", errors="replace"),
                      parse_int=_js_int, parse_constant=_reject_constant)


def _parse_json(raw: bytes) -> Any:
    """Parse a body keeping Python's own types (ints stay ints), for records."""
    return json.loads(raw.decode("utf-8", errors="replace"), parse_constant=_reject_constant)


def _iso_now() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


# ---------------------------------------------------------------------------
# Records and rules
# ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the fake received (control requests under /_fake/ excluded)."""

    method: str
    target: str          # request-target as sent (path and query, still encoded)
    path: str            # the path part, still percent-encoded
    query: str
    version: str         # "HTTP/1.1"
    headers: List[Tuple[str, str]]  # in order, names as sent
    body: bytes          # the whole body (chunked bodies de-chunked)
    connection: int      # id of the TCP connection it came on (1, 2, ...)
    client_port: int
    received_at: float   # time.time()
    status: Optional[int] = None   # status answered, None if no answer was sent
    fault: Optional[str] = None    # "status:503", "drop", "drop-after", "stopped", "stream", or None
    streamed: int = 0              # stream faults: body bytes written before the end or the client left

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """First value of header `name` (case-insensitive)."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def header_values(self, name: str) -> List[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self) -> Any:
        """The body parsed as JSON (ints kept as ints)."""
        return _parse_json(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.method, "target": self.target, "path": self.path,
            "query": self.query, "version": self.version,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.text, "bodyBase64": base64.b64encode(self.body).decode("ascii"),
            "connection": self.connection, "clientPort": self.client_port,
            "receivedAt": self.received_at, "status": self.status, "fault": self.fault,
        }


@dataclass
class _FaultRule:
    kind: str                    # "status" or "drop"
    remaining: Optional[int]     # None: forever
    path: Optional[str] = None   # fnmatch glob on the raw path
    method: Optional[str] = None
    status: int = 503
    body: Any = None             # dict/list -> JSON, str/bytes -> as is, None -> default
    headers: Dict[str, str] = field(default_factory=dict)
    retry_after: Any = None
    close: bool = False
    mode: str = "close"          # drop: "close" (FIN) or "reset" (RST)
    when: str = "before"         # drop: "before" or "after" the request is processed
    size: Optional[int] = None   # stream: body bytes to send (filler JSON) instead of `body`
    chunk: int = 65536           # stream: bytes per write
    interval: float = 0.0        # stream: pause between writes (a slow drip)
    declare_length: bool = True  # stream: send Content-Length (else close-delimited)

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> Dict[str, Any]:
        d = {"type": self.kind, "count": self.remaining, "path": self.path, "method": self.method}
        if self.kind == "status":
            d.update(status=self.status, retryAfter=self.retry_after, body=self.body if not isinstance(self.body, bytes) else self.body.decode("utf-8", "replace"))
        elif self.kind == "stream":
            d.update(status=self.status, size=self.size, chunk=self.chunk, interval=self.interval,
                     declareLength=self.declare_length)
        else:
            d.update(mode=self.mode, when=self.when)
        return d


@dataclass
class _DelayRule:
    seconds: float
    remaining: Optional[int]
    path: Optional[str] = None
    method: Optional[str] = None
    when: str = "before"         # "before" handling, or "after" it (state read/changed, answer late)

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> Dict[str, Any]:
        return {"type": "delay", "seconds": self.seconds, "count": self.remaining,
                "path": self.path, "method": self.method, "when": self.when}


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: Optional[str] = "application/json"
    headers: List[Tuple[str, str]] = field(default_factory=list)


def _json_reply(status: int, obj: Any, headers: Optional[List[Tuple[str, str]]] = None) -> _Reply:
    return _Reply(status, js_stringify(obj).encode("utf-8"), "application/json", headers or [])


_NOT_FOUND_HTML = (
    b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"/>"
    b"<title>404: This page could not be found.</title></head>"
    b"<body><h1>404</h1><h2>This page could not be found.</h2></body></html>"
)

def _catch_all_reply(path: str) -> _Reply:
    """The app's `src/app/api/[...notfound]` route: JSON, not Next's HTML page."""
    return _json_reply(404, {"error": "Not Found", "message": "API endpoint '%s' does not exist" % path,
                             "statusCode": 404, "timestamp": _iso_now()})


_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}

_MAX_BODY = 64 * 1024 * 1024


class _BadRequest(Exception):
    pass


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False       # FakeBackend.stop() joins the connection threads itself
    allow_reuse_address = True   # restart on the same port right after stop()
    request_queue_size = 128     # the default 5 drops SYNs under a burst of new connections

    def __init__(self, address, fake: "FakeBackend"):
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind() resolves the host name (getfqdn), which can
        # stall where DNS is unreachable; the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port

    def process_request(self, request, client_address):
        # Runs on the accept thread, so a connection is tracked before stop()
        # can look for it.
        conn_id = self.fake._track_connection(request)
        t = threading.Thread(target=self._serve_connection, args=(request, client_address, conn_id),
                             name="fake-backend-conn-%d" % conn_id, daemon=True)
        self.fake._track_thread(t)
        t.start()

    def _serve_connection(self, request, client_address, conn_id):
        try:
            self.finish_request(request, client_address)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:  # a bug in the fake: keep it visible to the tests
            self.fake._note_error(traceback.format_exc())
        finally:
            self.fake._untrack_connection(request)
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        self.fake._note_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeCroniumBackend/1.0"

    def version_string(self):
        return self.server_version

    def setup(self):
        self.timeout = self.server.fake.idle_timeout
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.conn_id = self.server.fake._connection_id(self.request)

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = "HTTP/1.1"
            self.command = ""
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():  # it answered the error itself
            return
        self.server.fake._handle(self)
        try:
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002 (signature from the base class)
        if self.server.fake.verbose:
            sys.stderr.write("fake-backend: %s - %s\n" % (self.address_string(), format % args))


# ---------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------


class FakeBackend:
    """A fake Cronium backend internal API on 127.0.0.1.

    Constructor options:

    The defaults are the real backend; `FakeBackend(**RICH)` opts in to the
    richer one the API contract allows (DELETE on variables, tool actions).

    token         the expected `BACKEND_TOKEN` (None: no auth check at all).
    host, port    where to listen; port 0 picks a free port on the first
                  start() and the same port is reused by later start() calls.
    delete_mode   405 (default, real: the route has no DELETE: 405, empty
                  body, no Allow), "supported" (DELETE answers 200, or 404 if
                  missing), or 404 (the Next.js not-found page).  Settable at
                  any time.
    tools_route   False (default, real): /api/internal/tools/execute does not
                  exist (the app's JSON catch-all 404).  True: it does.
    strict_auth   True: the header must be exactly `Bearer <token>`.  False:
                  the real backend's check (the first "Bearer " is removed,
                  so a bare token is also accepted).
    idle_timeout  seconds an idle keep-alive connection is kept (real: 5).
    control_api   serve the /_fake/ control endpoints.
    """

    def __init__(self, token: Optional[str] = "test-backend-token", host: str = "127.0.0.1",
                 port: int = 0, *, delete_mode: Any = 405, tools_route: bool = False,
                 strict_auth: bool = True, idle_timeout: float = REAL_IDLE_TIMEOUT, control_api: bool = True,
                 verbose: bool = False):
        self.token = token
        self.host = host
        self._port = port
        self.delete_mode = delete_mode
        self.tools_route = tools_route
        self.strict_auth = strict_auth
        self.idle_timeout = idle_timeout
        self.control_api = control_api
        self.verbose = verbose

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._conns: Dict[Any, int] = {}
        self._threads: List[threading.Thread] = []
        self._conn_counter = 0

        self._executions: Dict[str, Dict[str, Any]] = {}
        self._variables: Dict[Tuple[str, str], Dict[str, str]] = {}
        self._tool_results: Dict[Tuple[str, Optional[str]], Tuple[int, Any]] = {}
        self._faults: List[_FaultRule] = []
        self._delays: List[_DelayRule] = []
        self._reset_records()

    def _reset_records(self) -> None:
        self._requests: List[RecordedRequest] = []
        self._outputs: Dict[str, List[Dict[str, Any]]] = {}
        self._conditions: Dict[str, List[Dict[str, Any]]] = {}
        self._audit: List[Any] = []
        self._tool_calls: List[Any] = []
        self._variable_writes: List[Dict[str, Any]] = []
        self._variable_deletes: List[Dict[str, Any]] = []
        self._errors: List[str] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "FakeBackend":
        """Listen (again).  State, seeds and pending faults are kept."""
        with self._lock:
            if self._server is not None:
                return self
            self._stop_event.clear()
            server = _Server((self.host, self._port), self)
            self._port = server.server_address[1]
            self._server = server
            self._serve_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                                  name="fake-backend-accept", daemon=True)
            self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close every connection, idle keep-alive ones too.

        After it returns a connect is refused.  Requests waiting in a delay are
        dropped without an answer.  All recorded state is kept for start().
        """
        with self._lock:
            server, thread = self._server, self._serve_thread
            self._server = self._serve_thread = None
        if server is None:
            return
        self._stop_event.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._cond.notify_all()

    def restart(self) -> "FakeBackend":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (host, self._port)

    def __enter__(self) -> "FakeBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- seeding and configuration ----------------------------------------

    def seed_execution(self, context: Dict[str, Any], *, complete: bool = True) -> str:
        """Store an execution context; GET .../context answers it.

        With complete=True (default) it gets the real route's shape: the keys
        it always sends, in its order (executionId, jobId "job-1", eventId,
        userId "user-1", metadata {}, event, user), then any extra keys the
        test gave, except `startTime`/`startedAt` (the real route has none).
        `eventId` is always a string: the event's id, or "-1" when there is
        no event (the real job row's default, never null).  An event object
        gets the fields the real route selects that it lacks (content "",
        runLocation "LOCAL", serverId null); `user` defaults to
        {"id": userId, "email": null, "name": null}.  complete=False stores
        the context verbatim.  Returns the executionId.
        """
        if "executionId" not in context:
            raise ValueError("an execution context needs an executionId")
        ctx = json.loads(json.dumps(context))  # a private deep copy
        if complete:
            ctx = self._real_context_shape(ctx)
        with self._lock:
            self._executions[str(ctx["executionId"])] = ctx
        return str(ctx["executionId"])

    @staticmethod
    def _real_context_shape(ctx: Dict[str, Any]) -> Dict[str, Any]:
        event = ctx.get("event")
        if isinstance(event, dict):
            event = {**event}
            for k, v in (("content", ""), ("runLocation", "LOCAL"), ("serverId", None)):
                event.setdefault(k, v)
        event_id = ctx.get("eventId")
        if event_id is None:
            event_id = event.get("id") if isinstance(event, dict) and event.get("id") is not None else "-1"
        user_id = ctx.get("userId", "user-1")
        user = ctx["user"] if "user" in ctx else {"id": user_id, "email": None, "name": None}
        full = {"executionId": ctx["executionId"], "jobId": ctx.get("jobId", "job-1"),
                "eventId": event_id if isinstance(event_id, str) else js_stringify(event_id),
                "userId": user_id, "metadata": ctx.get("metadata", {}), "event": event, "user": user}
        full.update((k, v) for k, v in ctx.items() if k not in full and k not in ("startTime", "startedAt"))
        return full

    def remove_execution(self, execution_id: str) -> None:
        with self._lock:
            self._executions.pop(execution_id, None)

    def seed_variable(self, user_id: str, key: str, value: Any, updated_at: Optional[str] = None) -> None:
        """Store a variable.  A non-string value is stored as the real backend would store it."""
        text = value if isinstance(value, str) else stored_text_of(value)
        with self._lock:
            self._variables[(user_id, key)] = {"value": text, "updatedAt": updated_at or _iso_now()}

    def set_tool_result(self, tool: str, body: Any, *, action: Optional[str] = None, status: int = 200) -> None:
        """What POST /api/internal/tools/execute answers for `tool` (and `action`).

        `body` is a JSON value, or a callable taking the request body (dict)
        and returning one.  An action-specific result wins over a tool-wide one.
        """
        with self._lock:
            self._tool_results[(tool, action)] = (status, body)

    def apply_seed(self, data: Any) -> None:
        """Seed from the JSON form used by --seed and POST /_fake/seed (see README)."""
        if isinstance(data, dict) and "executionId" in data:
            data = {"executions": [data]}
        if not isinstance(data, dict):
            raise ValueError("seed must be a JSON object")
        executions = data.get("executions", [])
        if isinstance(executions, dict):
            executions = list(executions.values())
        for ctx in executions:
            self.seed_execution(ctx, complete=bool(data.get("complete", True)))
        for v in data.get("variables", []):
            self.seed_variable(v["userId"], v["key"], v["value"], v.get("updatedAt"))
        for t in data.get("toolResults", []):
            self.set_tool_result(t["tool"], t.get("body"), action=t.get("action"), status=int(t.get("status", 200)))
        if "config" in data:
            self.configure(data["config"])
        for rule in data.get("faults", []):
            self.add_fault(rule)

    def configure(self, cfg: Dict[str, Any]) -> None:
        """Set options from JSON: rich, deleteMode, toolsRoute, strictAuth, token, idleTimeout."""
        with self._lock:
            if "rich" in cfg:  # first, so that deleteMode / toolsRoute can refine it
                rich = bool(cfg["rich"])
                self.delete_mode = RICH["delete_mode"] if rich else 405
                self.tools_route = rich
            if "deleteMode" in cfg:
                mode = cfg["deleteMode"]
                if isinstance(mode, str) and mode.isdigit():
                    mode = int(mode)
                if mode not in DELETE_MODES:
                    raise ValueError("deleteMode must be one of %r" % (DELETE_MODES,))
                self.delete_mode = mode
            if "toolsRoute" in cfg:
                self.tools_route = bool(cfg["toolsRoute"])
            if "strictAuth" in cfg:
                self.strict_auth = bool(cfg["strictAuth"])
            if "token" in cfg:
                self.token = cfg["token"]
            if "idleTimeout" in cfg:
                self.idle_timeout = float(cfg["idleTimeout"])

    # -- faults ------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503, *, path: Optional[str] = None,
                  method: Optional[str] = None, retry_after: Any = None, body: Any = None,
                  headers: Optional[Dict[str, str]] = None, close: bool = False) -> None:
        """Answer the next `n` matching requests with `status`, without processing them.

        `path` is an fnmatch glob on the raw (still percent-encoded) path,
        e.g. "/api/internal/variables/*"; `method` e.g. "PUT".  `retry_after`
        adds a Retry-After header.  `body` defaults to {"error": <reason>}.
        """
        self.fail_sequence([status] * n, path=path, method=method, retry_after=retry_after,
                           body=body, headers=headers, close=close)

    def fail_sequence(self, statuses: List[int], **kw: Any) -> None:
        """Answer the next matching requests with these statuses, in order, then normally."""
        with self._lock:
            for st in statuses:
                self._faults.append(self._status_rule(st, 1, **kw))

    def respond(self, status: int, body: Any = None, *, count: Optional[int] = None, **kw: Any) -> None:
        """Answer matching requests with this status and body (`count` times, or forever)."""
        with self._lock:
            self._faults.append(self._status_rule(status, count, body=body, **kw))

    @staticmethod
    def _status_rule(status: int, count: Optional[int], *, path=None, method=None, retry_after=None,
                     body=None, headers=None, close=False) -> _FaultRule:
        return _FaultRule("status", count, path=path, method=method, status=int(status), body=body,
                          headers=dict(headers or {}), retry_after=retry_after, close=close)

    def drop_next(self, n: int = 1, *, path: Optional[str] = None, method: Optional[str] = None,
                  mode: str = "close", when: str = "before") -> None:
        """Close the connection without an answer for the next `n` matching requests.

        mode "close" sends a FIN (curl: empty reply), "reset" an RST.
        when "before": the request is not processed; "after": it is (state
        changes) but the answer is lost.
        """
        if mode not in ("close", "reset") or when not in ("before", "after"):
            raise ValueError("mode is close|reset, when is before|after")
        with self._lock:
            for _ in range(n):
                self._faults.append(_FaultRule("drop", 1, path=path, method=method, mode=mode, when=when))

    def stream_next(self, n: int = 1, *, path: Optional[str] = None, method: Optional[str] = None,
                    status: int = 200, body: Any = None, size: Optional[int] = None, chunk: int = 65536,
                    interval: float = 0.0, declare_length: bool = True,
                    headers: Optional[Dict[str, str]] = None) -> None:
        """Answer the next `n` matching requests (None: forever) with a body written in pieces.

        `size` bytes of filler JSON (`{"value":"xxx…"}`, e.g. 50 MiB) or `body`,
        `chunk` bytes per write with `interval` seconds between writes (a slow
        drip), with a Content-Length or (declare_length=False) close-delimited.
        The request is not processed; a client that closes early ends it.
        """
        with self._lock:
            for _ in range(1 if n is None else n):
                self._faults.append(_FaultRule(
                    "stream", None if n is None else 1, path=path, method=method, status=int(status),
                    body=body, headers=dict(headers or {}), size=size, chunk=max(1, int(chunk)),
                    interval=float(interval), declare_length=bool(declare_length)))

    def set_delay(self, seconds: float, *, path: Optional[str] = None, method: Optional[str] = None,
                  count: Optional[int] = None, when: str = "before") -> None:
        """Wait `seconds` before handling matching requests (the next `count`, or all).

        when="after": the request is handled at once (a GET reads the value
        as it is now, a PUT stores it) and only the answer is held back, like
        a database read followed by a slow network.

        The newest matching rule wins; a rule with the same path and method is
        replaced, and seconds=0 removes it.
        """
        if when not in ("before", "after"):
            raise ValueError("when is before|after")
        with self._lock:
            self._delays = [d for d in self._delays if not (d.path == path and d.method == method)]
            if seconds > 0:
                self._delays.append(_DelayRule(float(seconds), count, path=path, method=method, when=when))

    def add_fault(self, rule: Dict[str, Any]) -> None:
        """Add a fault from its JSON form (POST /_fake/faults; see README)."""
        kind = rule.get("type", "status")
        common = {"path": rule.get("path"), "method": rule.get("method")}
        if kind == "status":
            kw = dict(common, retry_after=rule.get("retryAfter"), body=rule.get("body"),
                      headers=rule.get("headers"), close=bool(rule.get("close", False)))
            if "statuses" in rule:
                self.fail_sequence([int(s) for s in rule["statuses"]], **kw)
            elif rule.get("count", 1) is None:
                self.respond(int(rule.get("status", 503)), count=None, **kw)
            else:
                self.fail_next(int(rule.get("count", 1)), int(rule.get("status", 503)), **kw)
        elif kind == "drop":
            self.drop_next(int(rule.get("count", 1)), mode=rule.get("mode", "close"),
                           when=rule.get("when", "before"), **common)
        elif kind == "stream":
            count = rule.get("count", 1)
            self.stream_next(None if count is None else int(count), status=int(rule.get("status", 200)),
                             body=rule.get("body"), size=rule.get("size"), chunk=int(rule.get("chunk", 65536)),
                             interval=float(rule.get("interval", 0.0)),
                             declare_length=bool(rule.get("declareLength", True)), headers=rule.get("headers"),
                             **common)
        elif kind == "delay":
            count = rule.get("count")
            self.set_delay(float(rule["seconds"]), count=None if count is None else int(count),
                           when=rule.get("when", "before"), **common)
        else:
            raise ValueError("unknown fault type %r" % (kind,))

    def clear_faults(self) -> None:
        """Forget pending status/drop faults and delays."""
        with self._lock:
            self._faults = []
            self._delays = []

    # -- inspection --------------------------------------------------------

    @property
    def requests(self) -> List[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: Optional[str] = None, method: Optional[str] = None) -> List[RecordedRequest]:
        """Recorded requests whose raw path matches the glob `path` (and `method`)."""
        with self._lock:
            return [r for r in self._requests
                    if (method is None or r.method == method.upper())
                    and (path is None or fnmatch.fnmatchcase(r.path, path))]

    def count(self, path: Optional[str] = None, method: Optional[str] = None) -> int:
        return len(self.requests_to(path, method))

    def counts(self) -> Dict[str, int]:
        """{"METHOD /raw/path": number of requests}."""
        out: Dict[str, int] = {}
        with self._lock:
            for r in self._requests:
                k = "%s %s" % (r.method, r.path)
                out[k] = out.get(k, 0) + 1
        return out

    def last_request(self, path: Optional[str] = None, method: Optional[str] = None) -> Optional[RecordedRequest]:
        reqs = self.requests_to(path, method)
        return reqs[-1] if reqs else None

    @property
    def connections_accepted(self) -> int:
        return self._conn_counter

    def variable(self, user_id: str, key: str) -> Optional[str]:
        """The stored text of a variable, or None."""
        with self._lock:
            v = self._variables.get((user_id, key))
            return None if v is None else v["value"]

    @property
    def variables(self) -> Dict[Tuple[str, str], str]:
        with self._lock:
            return {k: v["value"] for k, v in self._variables.items()}

    @property
    def variable_writes(self) -> List[Dict[str, Any]]:
        """Every PUT: {"userId","key","hasValue","value" (as sent, parsed),"stored" (text or None),"status"}."""
        with self._lock:
            return [dict(w) for w in self._variable_writes]

    @property
    def variable_deletes(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._variable_deletes]

    @property
    def executions(self) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._executions))

    @property
    def outputs(self) -> Dict[str, List[Dict[str, Any]]]:
        """{executionId: [{"output","timestamp"}, ...]} in arrival order."""
        with self._lock:
            return {k: list(v) for k, v in self._outputs.items()}

    def last_output(self, execution_id: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            lst = self._outputs.get(execution_id)
            return lst[-1] if lst else None

    @property
    def conditions(self) -> Dict[str, List[Dict[str, Any]]]:
        """{executionId: [{"condition","timestamp"}, ...]} in arrival order."""
        with self._lock:
            return {k: list(v) for k, v in self._conditions.items()}

    @property
    def audit_events(self) -> List[Any]:
        with self._lock:
            return list(self._audit)

    @property
    def tool_calls(self) -> List[Any]:
        with self._lock:
            return list(self._tool_calls)

    @property
    def errors(self) -> List[str]:
        """Tracebacks of bugs in the fake itself (should stay empty)."""
        with self._lock:
            return list(self._errors)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until predicate() is true (re-checked after every request); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))

    def wait_for_count(self, n: int, path: Optional[str] = None, method: Optional[str] = None,
                       timeout: float = 5.0) -> bool:
        return self.wait_for(lambda: self.count(path, method) >= n, timeout)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests = []

    def reset(self, keep_seeds: bool = False) -> None:
        """Forget records, faults and (unless keep_seeds) executions, variables and tool results."""
        with self._lock:
            self._reset_records()
            self._faults, self._delays = [], []
            if not keep_seeds:
                self._executions, self._variables, self._tool_results = {}, {}, {}

    def state(self, include_requests: bool = True) -> Dict[str, Any]:
        """Everything, as JSON-able data (what GET /_fake/state answers)."""
        with self._lock:
            st = {
                "url": self.url, "running": self.running,
                "executions": json.loads(json.dumps(self._executions)),
                "variables": [{"userId": u, "key": k, "value": v["value"], "updatedAt": v["updatedAt"]}
                              for (u, k), v in self._variables.items()],
                "variableWrites": self.variable_writes, "variableDeletes": self.variable_deletes,
                "outputs": self.outputs, "conditions": self.conditions,
                "audit": list(self._audit), "toolCalls": list(self._tool_calls),
                "counts": self.counts(), "connections": self._conn_counter,
                "config": {"deleteMode": self.delete_mode, "toolsRoute": self.tools_route,
                           "strictAuth": self.strict_auth, "idleTimeout": self.idle_timeout},
                "faults": [f.to_dict() for f in self._faults if f.remaining is None or f.remaining > 0]
                          + [d.to_dict() for d in self._delays],
                "errors": list(self._errors),
            }
            if include_requests:
                st["requests"] = [r.to_dict() for r in self._requests]
            return st

    # -- connection bookkeeping (called by _Server/_Handler) ----------------

    def _track_connection(self, sock) -> int:
        with self._lock:
            self._conn_counter += 1
            self._conns[sock] = self._conn_counter
            return self._conn_counter

    def _connection_id(self, sock) -> int:
        with self._lock:
            return self._conns.get(sock, 0)

    def _untrack_connection(self, sock) -> None:
        with self._lock:
            self._conns.pop(sock, None)

    def _track_thread(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _note_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)
        if self.verbose:
            sys.stderr.write(text)

    # -- request handling --------------------------------------------------

    def _read_body(self, h: _Handler) -> bytes:
        te = h.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise _BadRequest("unsupported Transfer-Encoding")
            chunks = []
            total = 0
            while True:
                line = h.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest("bad chunk size")
                if size == 0:
                    while True:  # trailers, up to the empty line
                        line = h.rfile.readline(65537)
                        if line in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(chunks)
                total += size
                if total > _MAX_BODY:
                    raise _BadRequest("body too large")
                data = h.rfile.read(size)
                if len(data) != size:
                    raise ConnectionError("eof in chunk")
                chunks.append(data)
                h.rfile.readline(3)  # CRLF after the chunk
        cl = h.headers.get_all("Content-Length") or []
        if not cl:
            return b""
        if len(set(v.strip() for v in cl)) != 1 or not cl[0].strip().isdigit():
            raise _BadRequest("bad Content-Length")
        n = int(cl[0])
        if n > _MAX_BODY:
            raise _BadRequest("body too large")
        data = h.rfile.read(n) if n else b""
        if len(data) != n:
            raise ConnectionError("eof in body")
        return data

    def _handle(self, h: _Handler) -> None:
        method = h.command.upper()
        target = h.path
        path, _, query = target.partition("?")
        try:
            body = self._read_body(h)
        except _BadRequest as e:
            h.close_connection = True
            self._send(h, None, _json_reply(400, {"error": str(e)}))
            return
        except (ConnectionError, TimeoutError, OSError):
            h.close_connection = True
            return

        if self.control_api and (path == "/_fake" or path.startswith("/_fake/")):
            self._control(h, method, path, query, body)
            return

        rec = RecordedRequest(
            method=method, target=target, path=path, query=query, version=h.request_version,
            headers=[(k, v) for k, v in h.headers.items()], body=body,
            connection=h.conn_id, client_port=h.client_address[1], received_at=time.time())
        with self._lock:
            self._requests.append(rec)
            delay = None
            delay_after = None
            for d in reversed(self._delays):
                if d.matches(method, path):
                    if d.remaining is not None:
                        d.remaining -= 1
                    if d.when == "after":
                        delay_after = d.seconds
                    else:
                        delay = d.seconds
                    break
            self._delays = [d for d in self._delays if d.remaining is None or d.remaining > 0]

        try:
            if delay is not None and self._stop_event.wait(delay):
                rec.fault = "stopped"
                h.close_connection = True
                return

            with self._lock:
                fault = next((f for f in self._faults if f.matches(method, path)), None)
                if fault is not None:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]

            if fault is not None and fault.kind == "drop" and fault.when == "before":
                rec.fault = "drop"
                self._drop(h, fault.mode)
                return
            if fault is not None and fault.kind == "stream":
                rec.fault = "stream"
                self._stream(h, rec, fault)
                return
            if fault is not None and fault.kind == "status":
                rec.fault = "status:%d" % fault.status
                self._send(h, rec, self._fault_reply(fault))
                if fault.close:
                    h.close_connection = True
                return

            try:
                reply = self._route(method, path, h, body)
            except Exception:
                self._note_error(traceback.format_exc())
                reply = _json_reply(500, {"error": "Internal server error"})

            if fault is not None and fault.kind == "drop":  # when == "after"
                rec.fault = "drop-after"
                self._drop(h, fault.mode)
                return
            if delay_after is not None and self._stop_event.wait(delay_after):
                rec.fault = "stopped-after"
                h.close_connection = True
                return
            self._send(h, rec, reply)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _fault_reply(self, fault: _FaultRule) -> _Reply:
        headers = list(fault.headers.items())
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        body = fault.body
        if body is None:
            return _json_reply(fault.status, {"error": _REASONS.get(fault.status, "Error")}, headers)
        if isinstance(body, bytes):
            return _Reply(fault.status, body, "text/plain; charset=utf-8", headers)
        if isinstance(body, str):
            return _Reply(fault.status, body.encode("utf-8"), "text/plain; charset=utf-8", headers)
        return _json_reply(fault.status, body, headers)

    def _stream(self, h: _Handler, rec: RecordedRequest, fault: _FaultRule) -> None:
        if fault.size is not None:
            head, tail = b'{"value":"', b'"}'
            total = max(int(fault.size), len(head) + len(tail))
        else:
            body = fault.body
            if body is None:
                body = b""
            elif isinstance(body, str):
                body = body.encode("utf-8")
            elif not isinstance(body, bytes):
                body = js_stringify(body).encode("utf-8")
            head, tail, total = body, b"", len(body)
        lines = ["%s %d %s" % (h.protocol_version, fault.status, _REASONS.get(fault.status, "Status")),
                 "Server: " + h.version_string(), "Date: " + h.date_time_string(),
                 "Content-Type: application/json"]
        if fault.declare_length:
            lines.append("Content-Length: %d" % total)
        else:
            lines.append("Connection: close")
        lines.extend("%s: %s" % (k, v) for k, v in fault.headers.items())
        h.close_connection = True  # whatever happens, this connection is done
        rec.status = fault.status
        sent = 0
        try:
            h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            filler = b"x" * fault.chunk
            while sent < total:
                n = min(fault.chunk, total - sent)
                if sent < len(head):
                    piece = head[sent:sent + n]
                elif sent >= total - len(tail):
                    piece = tail[sent - (total - len(tail)):][:n]
                else:
                    piece = filler[:min(n, total - len(tail) - sent)]
                h.wfile.write(piece)
                h.wfile.flush()
                sent += len(piece)
                if fault.interval and sent < total and self._stop_event.wait(fault.interval):
                    break
        except OSError:
            pass  # the client gave up: expected for a huge or slow body
        rec.streamed = sent

    def _drop(self, h: _Handler, mode: str) -> None:
        h.close_connection = True
        sock = h.connection
        try:
            if mode == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, h: _Handler, rec: Optional[RecordedRequest], reply: _Reply) -> None:
        # The whole answer goes out in one write: a head and a body in two
        # small writes would meet Nagle and delayed ACKs (40 ms per request).
        lines = ["%s %d %s" % (h.protocol_version, reply.status,
                               h.responses.get(reply.status, ("",))[0] or _REASONS.get(reply.status, "")),
                 "Server: " + h.version_string(), "Date: " + h.date_time_string()]
        if reply.status != 204:
            if reply.content_type:
                lines.append("Content-Type: " + reply.content_type)
            lines.append("Content-Length: %d" % len(reply.body))
        lines.extend("%s: %s" % (k, v) for k, v in reply.headers)
        if h.close_connection:
            lines.append("Connection: close")
        else:
            if h.request_version == "HTTP/1.0":
                lines.append("Connection: keep-alive")
            if self.idle_timeout:
                lines.append("Keep-Alive: timeout=%d" % max(1, int(self.idle_timeout)))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if h.command != "HEAD" and reply.status not in (204, 304):
            data += reply.body
        h.log_request(reply.status)
        if rec is not None:  # set before the write: the client may look right after reading
            rec.status = reply.status
        try:
            h.wfile.write(data)
        except OSError:
            h.close_connection = True
            if rec is not None:
                rec.status = None

    # -- the backend's routes ----------------------------------------------

    def _route(self, method: str, path: str, h: _Handler, body: bytes) -> _Reply:
        if path != "/" and path.endswith("/"):
            # Next.js (trailingSlash: false) redirects to the path without it.
            return _Reply(308, b"", None, [("Location", path.rstrip("/") or "/")])
        parts = path.split("/")[1:]
        if any(p == "" for p in parts):
            # ... and an empty segment to the path with it collapsed.
            return _Reply(308, b"", None, [("Location", "/" + "/".join(p for p in parts if p))])
        if parts[:1] != ["api"]:
            # Outside /api the app's i18n middleware sends the browser to a locale.
            return _Reply(307, b"", None, [("Location", "/en" + path)])
        if parts[:2] != ["api", "internal"]:
            return _catch_all_reply(path)
        rest = [urllib.parse.unquote(p) for p in parts[2:]]
        raw_rest = parts[2:]

        # An unknown method on a route that exists is Next's bare 405: empty
        # body and no Allow header (OPTIONS alone lists the methods).
        route = None
        allowed: Tuple[str, ...] = ()
        if len(rest) == 3 and raw_rest[0] == "executions" and raw_rest[2] in ("context", "output", "condition"):
            route = raw_rest[2]
            allowed = ("GET", "HEAD") if route == "context" else ("POST",)
        elif len(rest) == 3 and raw_rest[0] == "variables":
            route = "variable"
            allowed = ("GET", "HEAD", "PUT")
            if method == "DELETE":
                if self.delete_mode == "supported":
                    allowed = allowed + ("DELETE",)
                elif self.delete_mode == 404:
                    return _Reply(404, _NOT_FOUND_HTML, "text/html; charset=utf-8")
        elif raw_rest == ["tools", "execute"] and self.tools_route:
            route, allowed = "tools", ("POST",)
        elif raw_rest == ["audit"]:
            route, allowed = "audit", ("POST",)
        if route is None:
            return _catch_all_reply(path)
        if method == "OPTIONS":
            return _Reply(204, b"", None, [("Allow", ", ".join(allowed + ("OPTIONS",)))])
        if method not in allowed:
            return _Reply(405, b"", None)

        if not self._authorized(h.headers.get("Authorization")):
            return _json_reply(401, {"error": "Unauthorized"})

        if route == "context":
            return self._get_context(rest[1])
        if route == "output":
            return self._post_output(rest[1], body)
        if route == "condition":
            return self._post_condition(rest[1], body)
        if route == "variable":
            user_id, key = rest[1], rest[2]
            if method in ("GET", "HEAD"):
                return self._get_variable(user_id, key)
            if method == "PUT":
                return self._put_variable(user_id, key, body)
            return self._delete_variable(user_id, key)
        if route == "tools":
            return self._post_tool(body)
        return self._post_audit(body)

    def _authorized(self, header: Optional[str]) -> bool:
        if self.token is None:
            return True
        if header is None:
            return False
        if self.strict_auth:
            return header == "Bearer " + self.token
        token = header.replace("Bearer ", "", 1)
        return token != "" and token == self.token

    _INTERNAL = {"error": "Internal server error"}

    def _get_context(self, execution_id: str) -> _Reply:
        with self._lock:
            ctx = self._executions.get(execution_id)
            if ctx is None:
                return _json_reply(404, {"error": "Execution not found"})
            return _json_reply(200, ctx)

    def _post_output(self, execution_id: str, raw: bytes) -> _Reply:
        try:
            body = _parse_json(raw)
        except ValueError:
            return _json_reply(500, self._INTERNAL)
        if body is None:
            return _json_reply(500, self._INTERNAL)
        with self._lock:
            if execution_id not in self._executions:
                return _json_reply(404, {"error": "Execution not found"})
            b = body if isinstance(body, dict) else {}
            self._outputs.setdefault(execution_id, []).append(
                {"output": b.get("output"), "timestamp": b.get("timestamp")})
        return _json_reply(200, {"success": True})

    def _post_condition(self, execution_id: str, raw: bytes) -> _Reply:
        try:
            body = _parse_json(raw)
        except ValueError:
            return _json_reply(500, self._INTERNAL)
        if body is None:
            return _json_reply(500, self._INTERNAL)
        with self._lock:
            if execution_id not in self._executions:
                return _json_reply(404, {"error": "Execution not found"})
            b = body if isinstance(body, dict) else {}
            self._conditions.setdefault(execution_id, []).append(
                {"condition": b.get("condition"), "timestamp": b.get("timestamp")})
        return _json_reply(200, {"success": True})

    def _get_variable(self, user_id: str, key: str) -> _Reply:
        with self._lock:
            v = self._variables.get((user_id, key))
            if v is None:
                return _json_reply(404, {"error": "Variable not found"})
            return _json_reply(200, {"key": key, "value": v["value"], "updatedAt": v["updatedAt"]})

    def _put_variable(self, user_id: str, key: str, raw: bytes) -> _Reply:
        write: Dict[str, Any] = {"userId": user_id, "key": key, "hasValue": False, "value": None,
                                 "stored": None, "status": 500}
        with self._lock:
            self._variable_writes.append(write)
        try:
            sent = _parse_json(raw)
            js = _parse_json_js(raw)
        except ValueError:
            return _json_reply(500, self._INTERNAL)
        if isinstance(sent, dict) and "value" in sent:
            write["hasValue"], write["value"] = True, sent["value"]
        if len(key) > MAX_KEY_CHARS or "\x00" in key:  # varchar(255) in characters; no NUL in text
            return _json_reply(500, self._INTERNAL)
        try:
            if js is None:
                raise NotNullViolation("body is null")
            text = stored_text_of(js.get("value") if isinstance(js, dict) else None)
        except NotNullViolation:
            return _json_reply(500, self._INTERNAL)
        if "\x00" in text:  # Postgres text cannot hold NUL
            return _json_reply(500, self._INTERNAL)
        with self._lock:
            self._variables[(user_id, key)] = {"value": text, "updatedAt": _iso_now()}
            write["stored"], write["status"] = text, 200
        return _json_reply(200, {"success": True})

    def _delete_variable(self, user_id: str, key: str) -> _Reply:
        with self._lock:
            existed = self._variables.pop((user_id, key), None) is not None
            self._variable_deletes.append({"userId": user_id, "key": key, "existed": existed})
        if not existed:
            return _json_reply(404, {"error": "Variable not found"})
        return _json_reply(200, {"success": True})

    def _post_tool(self, raw: bytes) -> _Reply:
        try:
            body = _parse_json(raw)
        except ValueError:
            body = None
        with self._lock:
            self._tool_calls.append(body)
        if (not isinstance(body, dict) or not isinstance(body.get("executionId"), str)
                or not isinstance(body.get("tool"), str) or not isinstance(body.get("action"), str)
                or body["tool"] == "" or body["action"] == ""):
            return _json_reply(400, {"success": False, "error": "Invalid tool-action request"})
        with self._lock:
            if body["executionId"] not in self._executions:
                return _json_reply(404, {"success": False, "error": "Execution not found"})
            configured = self._tool_results.get((body["tool"], body["action"]))
            if configured is None:
                configured = self._tool_results.get((body["tool"], None))
        if configured is None:
            return _json_reply(200, {"success": True, "data": {
                "tool": body["tool"], "action": body["action"], "params": body.get("params")}})
        status, result = configured
        if callable(result):
            result = result(body)
        return _json_reply(status, result)

    def _post_audit(self, raw: bytes) -> _Reply:
        try:
            body = _parse_json(raw)
        except ValueError:
            return _json_reply(500, self._INTERNAL)
        if body is None:
            return _json_reply(500, self._INTERNAL)
        with self._lock:
            self._audit.append(body)
        return _json_reply(200, {"success": True})

    # -- control API (/_fake/...) -------------------------------------------

    def _control(self, h: _Handler, method: str, path: str, query: str, raw: bytes) -> None:
        try:
            data = _parse_json(raw) if raw.strip() else None
        except ValueError as e:
            self._send(h, None, _json_reply(400, {"error": "invalid JSON: %s" % e}))
            return
        ok = {"ok": True}
        try:
            if path == "/_fake/health" and method == "GET":
                reply = _json_reply(200, {"ok": True, "url": self.url})
            elif path == "/_fake/state" and method == "GET":
                qs = urllib.parse.parse_qs(query)
                reply = _json_reply(200, self.state(include_requests=qs.get("requests", ["1"])[0] != "0"))
            elif path == "/_fake/seed" and method == "POST":
                self.apply_seed(data)
                reply = _json_reply(200, ok)
            elif path == "/_fake/faults" and method == "POST":
                rules = data.get("rules") if isinstance(data, dict) and "rules" in data else data
                for rule in rules if isinstance(rules, list) else [rules]:
                    self.add_fault(rule)
                reply = _json_reply(200, ok)
            elif path == "/_fake/faults" and method == "DELETE":
                self.clear_faults()
                reply = _json_reply(200, ok)
            elif path == "/_fake/config" and method == "POST":
                self.configure(data or {})
                reply = _json_reply(200, ok)
            elif path == "/_fake/tool-result" and method == "POST":
                self.set_tool_result(data["tool"], data.get("body"), action=data.get("action"),
                                     status=int(data.get("status", 200)))
                reply = _json_reply(200, ok)
            elif path == "/_fake/reset" and method == "POST":
                self.reset(keep_seeds=bool((data or {}).get("keepSeeds", False)))
                reply = _json_reply(200, ok)
            elif path == "/_fake/outage" and method == "POST":
                seconds = float((data or {}).get("seconds", 1.0))
                h.close_connection = True
                self._send(h, None, _json_reply(200, ok))
                threading.Thread(target=self._outage, args=(seconds,), daemon=True).start()
                return
            else:
                reply = _json_reply(404, {"error": "unknown control endpoint %s %s" % (method, path)})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            reply = _json_reply(400, {"error": "bad control request: %s" % e})
        self._send(h, None, reply)

    def _outage(self, seconds: float) -> None:
        time.sleep(0.05)  # let the control answer go out first
        self.stop()
        time.sleep(seconds)
        self.start()


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Fake Cronium backend internal API (for tests and local stacks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on stdout)")
    p.add_argument("--token", default="test-backend-token", help="expected BACKEND_TOKEN")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--seed", help="JSON seed file (executions, variables, toolResults, config, faults)")
    p.add_argument("--rich", action="store_true",
                   help="the richer backend: DELETE on variables and /api/internal/tools/execute "
                        "(default: the real backend, which has neither)")
    p.add_argument("--delete-mode", default=None, choices=["supported", "404", "405"],
                   help="DELETE on variables (default 405 as the real backend, supported with --rich)")
    tools = p.add_mutually_exclusive_group()
    tools.add_argument("--tools-route", dest="tools_route", action="store_true", default=None,
                       help="serve /api/internal/tools/execute (on with --rich)")
    tools.add_argument("--no-tools-route", dest="tools_route", action="store_false",
                       help="no /api/internal/tools/execute: the JSON catch-all 404 (the default)")
    p.add_argument("--idle-timeout", type=float, default=REAL_IDLE_TIMEOUT,
                   help="seconds an idle keep-alive connection is kept (real: 5)")
    p.add_argument("--lenient-auth", action="store_true", help="the real backend's check: a bare token also passes")
    p.add_argument("--verbose", action="store_true", help="log requests on stderr")
    args = p.parse_args(argv)

    delete_mode: Any = args.delete_mode or (RICH["delete_mode"] if args.rich else "405")
    tools_route = args.tools_route if args.tools_route is not None else args.rich
    fb = FakeBackend(token=None if args.no_auth else args.token, host=args.host, port=args.port,
                     delete_mode=delete_mode if delete_mode == "supported" else int(delete_mode),
                     tools_route=tools_route, strict_auth=not args.lenient_auth,
                     idle_timeout=args.idle_timeout, verbose=args.verbose)
    if args.seed:
        with open(args.seed, "r", encoding="utf-8") as f:
            fb.apply_seed(json.load(f))
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fb.start()
    print("fake-backend listening on %s" % fb.url, flush=True)
    while not done.wait(0.5):
        pass
    fb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
