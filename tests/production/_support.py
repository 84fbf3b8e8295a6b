"""Pieces for the production-mode tests: a real redis-server, the backend fake,
the real binary, and small clients for HTTP, RESP and Prometheus text.

Everything listens on 127.0.0.1 on ports picked at run time; every process
started here is stopped by its owner (the Stack) even when a test fails.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from fakes.backend import FakeBackend  # noqa: E402  (needs tests/ on sys.path)

REPO = TESTS_DIR.parent
BIN = os.environ.get("CRONIUM_RUNTIME_BIN") or str(REPO / "build" / "cronium-runtime")
REDIS_SERVER = "/usr/bin/redis-server"
HOST = "127.0.0.1"

STARTUP_TIMEOUT = 20.0   # sanitizer builds start slower; still bounded
STOP_TIMEOUT = 15.0

# Settings the service reads; removed from the inherited environment so a
# developer's shell cannot change what the tests see.
CONFIG_NAMES = {
    "HOST", "PORT", "READ_TIMEOUT", "WRITE_TIMEOUT", "IDLE_TIMEOUT", "SHUTDOWN_TIMEOUT",
    "MAX_BODY_BYTES", "MAX_CONNECTIONS", "JWT_SECRET", "JWT_ISSUER", "JWT_LEEWAY",
    "JWT_ALGORITHMS", "VALKEY_URL", "VALKEY_PASSWORD", "VALKEY_DB", "VALKEY_TIMEOUT",
    "CACHE_TTL", "LOCK_TTL", "BACKEND_URL", "BACKEND_TOKEN", "BACKEND_TIMEOUT",
    "BACKEND_MAX_RETRIES", "BACKEND_RETRY_DELAY", "BACKEND_MAX_CONCURRENT",
    "RATE_LIMIT_PER_MIN", "RATE_LIMIT_BURST", "AUTH_FAILURES_PER_MIN", "ENABLE_CORS",
    "ALLOWED_ORIGINS", "LOG_LEVEL", "LOG_FORMAT", "CONFIG_FILE",
}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")

# Defaults for a production stack: short timeouts so fault tests stay quick.
# The backend client's total deadline is WRITE_TIMEOUT - 1 s (see the service).
DEFAULT_ENV = {
    "BACKEND_TIMEOUT": "1s",
    "BACKEND_RETRY_DELAY": "50ms",
    "BACKEND_MAX_RETRIES": "3",
    "WRITE_TIMEOUT": "5s",
    "VALKEY_TIMEOUT": "300ms",
    "SHUTDOWN_TIMEOUT": "3s",
    "CACHE_TTL": "1h",
    "LOCK_TTL": "5s",
    "RATE_LIMIT_PER_MIN": "10000000",
    "RATE_LIMIT_BURST": "1000000",
    "LOG_LEVEL": "info",
}

ACTIVE = []  # things whose logs go into a failing test's report


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def canon(v):
    """Type-exact JSON text of a value (0, false and 0.0 stay apart)."""
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# JWT (HS256), as the orchestrator mints them
# ---------------------------------------------------------------------------

def _b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(secret, execution_id, user_id=None, ttl=3600, **extra):
    now = int(time.time())
    claims = {"executionId": execution_id, "jobId": "job-1", "iat": now, "exp": now + ttl}
    if user_id is not None:
        claims["userId"] = user_id
    claims.update(extra)
    si = _b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
        _b64u(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), si.encode("ascii"), hashlib.sha256).digest()
    return si + "." + _b64u(sig)


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

class Response:
    def __init__(self, status, reason, headers, body, elapsed):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - the body belongs in the message
            raise AssertionError(f"body is not JSON ({e}): {self.body[:500]!r}") from None

    def __repr__(self):
        hdrs = "".join(f"\n  {k}: {v}" for k, v in self.headers)
        return f"<HTTP {self.status} {self.reason}{hdrs}\n  body={self.body[:800]!r} ({self.elapsed:.3f}s)>"


class Client:
    """A keep-alive HTTP client for one thread, with an optional bearer token."""

    def __init__(self, port, token=None, timeout=10.0):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None, token=None, json_body=None, timeout=None):
        hdrs = dict(headers or {})
        tok = token if token is not None else self.token
        if tok and "Authorization" not in hdrs:
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
                # A kept-alive connection the server closed: one fresh try only
                # if nothing can have reached the server (a new connection).
                self.close()
                if attempt:
                    raise
        resp = Response(r.status, r.reason, r.getheaders(), data, time.monotonic() - start)
        if r.will_close:
            self.close()
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def post(self, path, obj=None, **kw):
        if obj is not None:
            kw["json_body"] = obj
        return self.request("POST", path, **kw)

    def put(self, path, obj=None, **kw):
        if obj is not None:
            kw["json_body"] = obj
        return self.request("PUT", path, **kw)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


def assert_error(resp, status, code):
    """The API.md §3 error envelope, exactly."""
    assert resp.status == status, f"expected {status} {code}, got {resp!r}"
    ct = (resp.header("Content-Type") or "").split(";")[0].strip()
    assert ct == "application/json", f"Content-Type {ct!r} in {resp!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"success", "error", "message", "code"}, \
        f"error envelope must be exactly success/error/message/code: {body!r}"
    assert body["success"] is False, body
    assert body["error"] == REASONS[status], f"error must be the reason phrase of {status}: {body!r}"
    assert isinstance(body["message"], str) and body["message"], body
    assert body["code"] == code, f"expected code {code!r}: {body!r}"
    assert resp.header("X-Request-Id"), f"no X-Request-Id on {resp!r}"
    if status in (429, 503):
        ra = resp.header("Retry-After")
        assert ra is not None and ra.isdigit() and int(ra) >= 1, f"Retry-After missing or bad on {resp!r}"
    return body


def assert_ok(resp, expected):
    """A success answer whose JSON body is exactly `expected` (types included)."""
    assert resp.status == 200, f"expected 200, got {resp!r}"
    ct = (resp.header("Content-Type") or "").split(";")[0].strip()
    assert ct == "application/json", f"Content-Type {ct!r} in {resp!r}"
    body = resp.json()
    assert canon(body) == canon(expected), f"body {body!r} != expected {expected!r}"
    assert resp.header("X-Request-Id"), f"no X-Request-Id on {resp!r}"
    return body


# ---------------------------------------------------------------------------
# Prometheus text
# ---------------------------------------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = []   # (name, {labels}, value)
        self.types = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    self.types[parts[2]] = parts[3]
                continue
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group(2) or ""))
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def names(self):
        return {n for n, _, _ in self.samples}

    def value(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(v for n, lb, v in self.samples
                   if n == name and all(lb.get(k) == str(val) for k, val in labels.items()))

    def has(self, name, **labels):
        return any(n == name and all(lb.get(k) == str(val) for k, val in labels.items())
                   for n, lb, _ in self.samples)


# ---------------------------------------------------------------------------
# redis-server and a RESP client
# ---------------------------------------------------------------------------

class RedisError(Exception):
    pass


class Resp:
    """A minimal RESP2 client over a socket (commands the tests need)."""

    def __init__(self, port, timeout=3.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode("utf-8")
            elif not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisError(f"bad reply {line!r}")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RedisServer:
    """A redis-server on 127.0.0.1:<port>, no persistence; start/kill/restart."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc = None
        self.log_path = self.workdir / f"redis-{self.port}.log"

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.workdir), "--loglevel", "warning",
                "--logfile", "", "--databases", "2"]
        deadline = time.monotonic() + 10
        while True:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with Resp(self.port, timeout=1) as r:
                        if r.cmd("PING") == "PONG":
                            return self
                except (OSError, RedisError):
                    time.sleep(0.02)
            if self.proc.poll() is not None and time.monotonic() < deadline:
                time.sleep(0.1)  # the port may still be held for a moment after a kill
                continue
            self.kill()
            raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log()[-2000:]}")

    def kill(self):
        """SIGKILL, like a crashed Valkey."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        return Resp(self.port)

    def cmd(self, *args):
        with Resp(self.port) as r:
            return r.cmd(*args)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# ---------------------------------------------------------------------------
# The service process
# ---------------------------------------------------------------------------

def clean_env(overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in CONFIG_NAMES and not k.startswith("RUNTIME_") and not k.startswith("CRONIUM_")
           and not (k.endswith("_FILE") and k[:-5] in CONFIG_NAMES)}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


class Service:
    def __init__(self, workdir, env, name):
        self.workdir = Path(workdir)
        self.name = name
        self.base_env = dict(env)
        self.env = None
        self.port = None
        self.proc = None
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.returncode = None
        self.stopped = False

    def start(self):
        if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
            raise AssertionError(f"cronium-runtime binary not found at {BIN} (build it or set CRONIUM_RUNTIME_BIN)")
        for attempt in range(3):
            self.port = free_port()
            self.env = clean_env({"HOST": HOST, **self.base_env, "PORT": self.port})
            with open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen([BIN], env=self.env, stdout=subprocess.DEVNULL, stderr=err,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_healthy():
                return self
            if self.proc.poll() is not None and "in use" in self.stderr().lower() and attempt < 2:
                continue
            break
        rc = self.proc.poll()
        self.kill()
        raise AssertionError(f"service {self.name} did not start (exit code {rc})\n{self.stderr()[-4000:]}")

    def _wait_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/health")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.03)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.stopped = True
        return self.returncode

    def stop(self):
        """SIGTERM, wait, SIGKILL if needed; returns a list of problems."""
        problems = []
        if self.proc is None:
            return problems
        if not self.stopped:
            if self.proc.poll() is not None:
                problems.append(f"service {self.name} exited by itself with code {self.proc.returncode}")
            else:
                self.terminate()
                if self.wait_exit(STOP_TIMEOUT) is None:
                    problems.append(f"service {self.name} did not exit within {STOP_TIMEOUT}s of SIGTERM")
                    self.kill()
            self.stopped = True
        text = self.stderr()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.find(m)
                problems.append(f"sanitizer report in {self.name}:\n{text[max(0, i - 300):i + 4000]}")
                break
        return problems

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = True

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# ---------------------------------------------------------------------------
# A whole production stack: fake backend + redis-server + the service
# ---------------------------------------------------------------------------

class Stack:
    """The fake backend, a redis-server (unless valkey=False) and the service."""

    def __init__(self, workdir, env=None, valkey=True, fake_kwargs=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backend_token = "bt-" + secrets.token_hex(8)
        self.secret = "jwt-" + secrets.token_hex(16)
        self.fb = None
        self.redis = None
        self.svc = None
        self.extra_env = dict(env or {})
        self.use_valkey = valkey
        self.fake_kwargs = dict(fake_kwargs or {})
        self._clients = []
        self.more = []
        self.env = None

    def start(self):
        ACTIVE.append(self)
        self.fb = FakeBackend(token=self.backend_token, **self.fake_kwargs).start()
        if self.use_valkey:
            self.redis = RedisServer(self.workdir).start()
        env = {**DEFAULT_ENV, "BACKEND_URL": self.fb.url, "BACKEND_TOKEN": self.backend_token,
               "JWT_SECRET": self.secret}
        if self.redis:
            env["VALKEY_URL"] = f"redis://{HOST}:{self.redis.port}"
        env.update(self.extra_env)
        self.env = env
        self.svc = Service(self.workdir, env, f"svc-{uuid.uuid4().hex[:6]}")
        self.svc.start()
        return self

    def add_service(self, **overrides):
        """Another runtime process on the same backend and Valkey (several pods)."""
        svc = Service(self.workdir, {**self.env, **overrides}, f"svc-{uuid.uuid4().hex[:6]}")
        self.more.append(svc)
        svc.start()
        return svc

    @property
    def port(self):
        return self.svc.port

    def close(self):
        problems = []
        try:
            for c in self._clients:
                c.close()
            for svc in [self.svc] + self.more:
                if svc is not None:
                    problems += svc.stop()
        finally:
            for svc in [self.svc] + self.more:
                if svc is not None:
                    svc.kill()
            if self.redis is not None:
                self.redis.kill()
            if self.fb is not None:
                self.fb.stop()
                if self.fb.errors:
                    problems.append("the backend fake recorded errors:\n" + "\n".join(self.fb.errors))
            if self in ACTIVE:
                ACTIVE.remove(self)
        return problems

    # -- executions ---------------------------------------------------------
    def execution(self, user_id=None, exec_id=None, token_user=None, **ctx):
        """Seed an execution in the fake; returns (exec_id, user_id, Client)."""
        exec_id = exec_id or new_id("exec")
        user_id = user_id or new_id("user")
        context = {"executionId": exec_id, "userId": user_id, **ctx}
        self.fb.seed_execution(context)
        return exec_id, user_id, self.client(exec_id, token_user if token_user is not None else user_id)

    def token(self, exec_id, user_id=None, **extra):
        return mint_token(self.secret, exec_id, user_id, **extra)

    def client(self, exec_id=None, user_id=None, timeout=10.0, port=None):
        c = Client(port or self.port, self.token(exec_id, user_id) if exec_id else None, timeout=timeout)
        self._clients.append(c)
        return c

    # -- operational endpoints ------------------------------------------------
    def metrics(self):
        c = Client(self.port)
        try:
            r = c.get("/metrics")
        finally:
            c.close()
        assert r.status == 200, r
        return Metrics(r.body.decode("utf-8", "replace"))

    def ready(self):
        c = Client(self.port)
        try:
            return c.get("/ready")
        finally:
            c.close()

    def wait_ready(self, status, valkey, timeout=10.0):
        """Poll /ready until it reports `status` and the valkey check `valkey`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.ready()
            try:
                body = last.json()
                if body.get("status") == status and body.get("checks", {}).get("valkey") == valkey:
                    return last, body
            except AssertionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/ready did not report {status}/valkey={valkey} within {timeout}s; last {last!r}")

    def redis_cmd(self, *args):
        return self.redis.cmd(*args)


def run_threads(n, target, timeout):
    """Run target(i) in n threads; returns the list of exceptions raised (joined within timeout)."""
    errors = []
    lock = threading.Lock()

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    if alive:
        errors.append(AssertionError(f"{alive} of {n} threads still running after {timeout}s"))
    return errors
