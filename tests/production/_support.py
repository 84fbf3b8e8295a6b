"""The production-mode stack: the backend fake, a real redis-server and the
real binary (the pieces are in tests/lib), plus a Prometheus text reader.

Everything listens on 127.0.0.1 on ports picked at run time; every process
started here is stopped by its owner (the Stack) even when a test fails.
"""
import re
import secrets
import threading
import time
import uuid
from pathlib import Path

from lib import new_id
from lib.backend import FakeBackend, stop_fake
from lib.http import Client
from lib.jwt import mint_token
from lib.proc import HOST, Service
from lib.redis import RedisServer

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
        self.fb = FakeBackend(token=self.backend_token, **self.fake_kwargs).start()
        if self.use_valkey:
            self.redis = RedisServer(self.workdir).start()
        env = {**DEFAULT_ENV, "BACKEND_URL": self.fb.url, "BACKEND_TOKEN": self.backend_token,
               "JWT_SECRET": self.secret}
        if self.redis:
            env["VALKEY_URL"] = f"redis://{HOST}:{self.redis.port}"
        env.update(self.extra_env)
        self.env = env
        self.svc = Service(self.workdir, env, name=f"svc-{uuid.uuid4().hex[:6]}")
        self.svc.start()
        return self

    def add_service(self, **overrides):
        """Another runtime process on the same backend and Valkey (several pods)."""
        svc = Service(self.workdir, {**self.env, **overrides}, name=f"svc-{uuid.uuid4().hex[:6]}")
        self.more.append(svc)
        return svc.start()

    @property
    def port(self):
        return self.svc.port

    def close(self):
        """Stop everything; returns the problems seen (lib.proc.Service.stop,
        the backend fake's internal errors)."""
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
                    svc.close()
            if self.redis is not None:
                self.redis.close()
            if self.fb is not None:
                problems += stop_fake(self.fb)
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
