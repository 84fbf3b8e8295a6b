"""HTTP/1.1 client pieces for every suite that talks to the service.

Two ways to talk to it:
- ``RawConn``: a plain TCP socket with a response reader, for protocol tests
  (pipelining, partial heads, chunked uploads, timeouts).
- ``Client``: http.client with keep-alive and an optional bearer token, for the
  API tests (one per thread).

Both return ``Response`` objects, and ``assert_error`` / ``assert_ok`` check the
docs/api.md §3 envelope on either.
"""
import http.client
import json
import select
import socket
import time

from . import Closing

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0


class Response:
    """One HTTP response: status, reason, version, headers, body bytes."""

    def __init__(self, version, status, reason, headers, body, interim=None, elapsed=None):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) in wire order
        self.body = body
        self.interim = interim or []  # 1xx responses seen before this one
        self.elapsed = elapsed  # seconds from sending to the whole body (Client only)

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - we want the body in the message
            raise AssertionError(f"body is not JSON ({e}): {self.body[:500]!r}") from None

    def __repr__(self):
        hdrs = "".join(f"\n  {k}: {v}" for k, v in self.headers)
        took = f" ({self.elapsed:.3f}s)" if self.elapsed is not None else ""
        return f"<{self.version} {self.status} {self.reason}{hdrs}\n  body={self.body[:800]!r}{took}>"


class ConnectionClosed(Exception):
    """The peer closed the connection before a full response arrived."""


class RawConn(Closing):
    """A TCP connection to the service with a buffered HTTP response reader."""

    def __init__(self, port, timeout=DEFAULT_TIMEOUT, host=HOST):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    # -- sending --------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    # -- reading --------------------------------------------------------
    def _fill(self, deadline):
        """Read more bytes into the buffer; False at EOF. Raises on timeout."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from the service")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from the service") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker, deadline):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = self.buf[: i + len(marker)]
                self.buf = self.buf[i + len(marker):]
                return out
            if not self._fill(deadline):
                raise ConnectionClosed(f"connection closed; partial data {self.buf[:300]!r}")

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(f"connection closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=None):
        """Read one response head (may be a 1xx). Returns (version, status, reason, headers)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = self._read_until(b"\r\n\r\n", deadline)
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError(f"bad status line {lines[0]!r}")
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise AssertionError(f"bad header line {line!r}")
            headers.append((name.strip(), value.strip()))
        return version, status, reason, headers

    def read_response(self, method="GET", timeout=None, stop_at_interim=False):
        """Read one full response; 1xx answers are collected in .interim."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        interim = []
        while True:
            version, status, reason, headers = self.read_head(max(0.01, deadline - time.monotonic()))
            if 100 <= status < 200 and status != 101:
                interim.append(Response(version, status, reason, headers, b""))
                if stop_at_interim:
                    return interim[-1]
                continue
            break
        resp = Response(version, status, reason, headers, b"", interim)
        if method == "HEAD" or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers end with an empty line
                    while self._read_until(b"\r\n", deadline) != b"\r\n":
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
            resp.body = body
        elif resp.header("Content-Length") is not None:
            resp.body = self._read_exact(int(resp.header("Content-Length")), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method, path, body=None, headers=None, version="HTTP/1.1", timeout=None):
        self.send(build_request(method, path, body, headers, version))
        return self.read_response(method, timeout)

    def wait_closed(self, timeout):
        """Wait for the peer to close; return the seconds it took, or None if still open.

        Any bytes that arrive meanwhile are kept in self.buf (e.g. a 408 answer).
        """
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if self.eof:
                return time.monotonic() - start
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                return None
            try:
                self._fill(deadline + 1)
            except TimeoutError:
                return None

    def is_open(self, wait=0.05):
        """True if no EOF arrives within `wait` seconds."""
        return self.wait_closed(wait) is None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method, path, body=None, headers=None, version="HTTP/1.1"):
    """Serialise a request. Host is added unless given; Content-Length for a body
    unless the headers already carry Content-Length or Transfer-Encoding."""
    headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", "127.0.0.1"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked(pieces):
    """Encode byte pieces as a chunked body (with the terminating chunk)."""
    out = b""
    for p in pieces:
        if isinstance(p, str):
            p = p.encode("utf-8")
        out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n\r\n"


class Client:
    """http.client with keep-alive and an optional bearer token, for one thread.

    ``post``/``put`` send a str or bytes body as is and anything else as JSON."""

    def __init__(self, port, token=None, timeout=DEFAULT_TIMEOUT):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None, token=None, json_body=None, timeout=None):
        hdrs = dict(headers or {})
        tok = token if token is not None else self.token
        if tok is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {tok}"
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode("utf-8")
        start = time.monotonic()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout or self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server may close a kept-alive connection (e.g. after an
                # error); one fresh connection is allowed, not more.
                self.close()
                if attempt:
                    raise
        resp = Response(f"HTTP/{r.version / 10:.1f}", r.status, r.reason, r.getheaders(), data,
                        elapsed=time.monotonic() - start)
        if r.will_close:
            self.close()
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def post(self, path, body=None, **kw):
        if body is not None and not isinstance(body, (str, bytes)):
            kw["json_body"] = body
            body = None
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        if body is not None and not isinstance(body, (str, bytes)):
            kw["json_body"] = body
            body = None
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get_status(port, path, timeout=2.0):
    """Status of one GET on a fresh connection that asks to be closed."""
    with RawConn(port, timeout=timeout) as c:
        return c.request("GET", path, headers={"Connection": "close"}).status


REASONS = {
    400: {"Bad Request"},
    401: {"Unauthorized"},
    403: {"Forbidden"},
    404: {"Not Found"},
    405: {"Method Not Allowed"},
    409: {"Conflict"},
    413: {"Payload Too Large", "Content Too Large", "Request Entity Too Large"},
    429: {"Too Many Requests"},
    431: {"Request Header Fields Too Large"},
    500: {"Internal Server Error"},
    501: {"Not Implemented"},
    502: {"Bad Gateway"},
    503: {"Service Unavailable"},
}


def canon(v):
    """Type-exact JSON text of a value (0, false and 0.0 stay apart)."""
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def assert_error(resp, status, code=None):
    """Assert the docs/api.md §3 error envelope, exactly, and return the parsed body.
    429 and 503 also carry a Retry-After of at least one second."""
    assert resp.status == status, f"expected {status} {code or ''}, got {resp!r}"
    ct = resp.header("Content-Type") or ""
    assert ct.split(";")[0].strip() == "application/json", f"Content-Type {ct!r} in {resp!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"success", "error", "message", "code"}, \
        f"error envelope must have exactly success/error/message/code: {body!r}"
    assert body["success"] is False, body
    assert body["error"] in REASONS[status], f"error {body['error']!r} is not the reason phrase of {status}"
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["code"], str) and body["code"], body
    if code is not None:
        assert body["code"] == code, f"expected code {code!r}, got {body!r}"
    assert resp.header("X-Request-Id"), f"no X-Request-Id on {resp!r}"
    if status in (429, 503):
        ra = resp.header("Retry-After")
        assert ra is not None and ra.isdigit() and int(ra) >= 1, f"Retry-After missing or bad on {resp!r}"
    return body


def assert_ok(resp, expected_body, status=200):
    """Assert a success answer whose JSON body is exactly expected_body, types
    included (1, 1.0 and true are three different answers)."""
    assert resp.status == status, f"expected {status}, got {resp!r}"
    ct = resp.header("Content-Type") or ""
    assert ct.split(";")[0].strip() == "application/json", f"Content-Type {ct!r} in {resp!r}"
    body = resp.json()
    assert canon(body) == canon(expected_body), f"body {body!r} != expected {expected_body!r}"
    assert resp.header("X-Request-Id"), f"no X-Request-Id on {resp!r}"
    return body
