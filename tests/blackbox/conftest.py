"""Fixtures that start the real cronium-runtime binary for black-box tests.

The binary comes from $CRONIUM_RUNTIME_BIN (default <repo>/build/cronium-runtime).
Every service listens on 127.0.0.1 on a port picked at run time, is configured
through the environment (API.md §8 names), and is stopped (SIGTERM, then
SIGKILL) when its fixture ends. Its stderr goes to a file whose tail is added to
the report of any failing test, and teardown fails loudly if the process died
on its own or a sanitizer reported an error.
"""
import os
import resource
import secrets
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ._http import Api, RawConn

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CRONIUM_RUNTIME_BIN") or str(REPO / "build" / "cronium-runtime")

STARTUP_TIMEOUT = 20.0   # ASan builds start slower; still bounded
STOP_TIMEOUT = 15.0

# Settings the service reads; stripped from the inherited environment so a
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

_ACTIVE = []  # services not yet torn down, for failure reports


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_nofile()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(overrides=None):
    env = {k: v for k, v in os.environ.items()
           if k not in CONFIG_NAMES and not k.startswith("RUNTIME_")
           and not k.startswith("CRONIUM_") and not (k.endswith("_FILE") and k[:-5] in CONFIG_NAMES)}
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def require_binary():
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        pytest.fail(f"cronium-runtime binary not found or not executable at {BIN} "
                    f"(build it, or set CRONIUM_RUNTIME_BIN)", pytrace=False)


def run_cli(args, env=None, timeout=15.0, input=None):
    """Run the binary to completion (bounded); returns CompletedProcess with text output."""
    require_binary()
    try:
        return subprocess.run([BIN, *args], env=clean_env(env), capture_output=True, text=True,
                              timeout=timeout, input=input, errors="replace")
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`cronium-runtime {' '.join(args)}` did not finish within {timeout}s; "
                    f"stderr: {e.stderr!r}", pytrace=False)


class Service:
    """One running cronium-runtime process."""

    def __init__(self, workdir, env, args, name):
        self.workdir = Path(workdir)
        self.args = list(args)
        self.name = name
        self.base_env = dict(env)
        self.port = None
        self.proc = None
        self.env = None
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.started_wall = None
        self.stopped = False
        self.returncode = None
        self.died_on_its_own = False
        self._tokens = {}

    # -- lifecycle ------------------------------------------------------
    def start(self):
        require_binary()
        for attempt in range(3):
            self.port = int(self.base_env.get("PORT") or free_port())
            # TMPDIR: dev mode writes its export block to a file there; keep it in the test's directory
            self.env = clean_env({"HOST": "127.0.0.1", "TMPDIR": str(self.workdir), **self.base_env,
                                  "PORT": self.port})
            self.started_wall = time.time()
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen([BIN, *self.args], env=self.env, stdout=out, stderr=err,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_healthy():
                return self
            text = self.stderr()
            if "in use" in text.lower() and "PORT" not in self.base_env and attempt < 2:
                continue  # lost the race for the port; pick another
            break
        rc = self.proc.poll()
        if rc is None:
            self.kill()
            pytest.fail(f"service {self.name} did not answer /health within {STARTUP_TIMEOUT}s\n"
                        f"stderr:\n{self.stderr()[-6000:]}", pytrace=False)
        pytest.fail(f"service {self.name} exited early with code {rc}\nargs={self.args}\n"
                    f"stderr:\n{self.stderr()[-6000:]}", pytrace=False)

    def _wait_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with RawConn(self.port, timeout=2.0) as c:
                    r = c.request("GET", "/health", headers={"Connection": "close"})
                    if r.status == 200:
                        return True
            except OSError:
                pass
            except Exception:  # noqa: BLE001 - half-started server, try again
                pass
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait for the process to end; returns the exit code or None on timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncode = rc
        self.stopped = True
        return rc

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL if needed. Returns a list of problems seen."""
        problems = []
        if self.proc is None or self.stopped:
            return problems
        if self.proc.poll() is not None:
            self.died_on_its_own = True
            problems.append(f"service {self.name} exited by itself with code {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                problems.append(f"service {self.name} did not exit within {timeout}s of SIGTERM")
                self.kill()
        self.stopped = True
        self.returncode = self.proc.returncode
        if not self.died_on_its_own and self.returncode not in (0, -signal.SIGKILL):
            # SIGTERM must end in exit 0; a leak checker (LeakSanitizer,
            # valgrind --error-exitcode) reports through the exit code.
            problems.append(f"service {self.name} exited with code {self.returncode} after SIGTERM")
        text = self.stderr()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.find(m)
                problems.append(f"sanitizer report in {self.name} stderr:\n{text[max(0, i - 200):i + 4000]}")
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

    # -- outputs --------------------------------------------------------
    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- clients --------------------------------------------------------
    def api(self, token=None):
        return Api(self.port, token)

    def raw(self, timeout=5.0):
        return RawConn(self.port, timeout=timeout)

    @property
    def secret(self):
        return self.env.get("JWT_SECRET")

    def token(self, execution_id, user_id=None, job_id=None, event_id=None, ttl=None, issuer=None):
        """A token minted by `cronium-runtime token` with this service's settings."""
        key = (execution_id, user_id, job_id, event_id, ttl, issuer)
        if key in self._tokens:
            return self._tokens[key]
        args = ["token", "--execution-id", execution_id]
        for flag, v in (("--user-id", user_id), ("--job-id", job_id), ("--event-id", event_id),
                        ("--ttl", ttl), ("--issuer", issuer)):
            if v is not None:
                args += [flag, v]
        p = run_cli(args, env=self.env, timeout=15)
        assert p.returncode == 0, f"token command failed ({p.returncode}): {p.stderr}"
        tok = p.stdout.strip()
        assert tok.count(".") == 2 and "\n" not in tok, f"token output is not one JWT: {p.stdout!r}"
        self._tokens[key] = tok
        return tok


class ServiceManager:
    """Starts services and tears every one of them down, failing on problems."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.services = []

    def start(self, env=None, args=("--dev",), name=None):
        env = dict(env or {})
        env.setdefault("JWT_SECRET", "bb-" + secrets.token_hex(16))
        name = name or f"svc{len(self.services)}-{uuid.uuid4().hex[:6]}"
        svc = Service(self.workdir, env, args, name)
        self.services.append(svc)
        _ACTIVE.append(svc)
        svc.start()
        return svc

    def close(self):
        problems = []
        for svc in self.services:
            try:
                problems += svc.stop()
            finally:
                svc.kill()
                if svc in _ACTIVE:
                    _ACTIVE.remove(svc)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_services(tmp_path_factory):
    m = ServiceManager(tmp_path_factory.mktemp("svc"))
    yield m
    m.close()


@pytest.fixture
def services(tmp_path):
    m = ServiceManager(tmp_path)
    yield m
    m.close()


def new_id(prefix="exec"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, add what each running service logged since the last report
    (and, once, why a service died)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for svc in _ACTIVE:
        text = svc.stderr()
        new = text[getattr(svc, "_reported", 0):]
        svc._reported = len(text)
        head = f"{svc.name} (port {svc.port}, args {svc.args})"
        if svc.proc is not None and svc.proc.poll() is not None and not svc.stopped:
            if getattr(svc, "_death_reported", False):
                rep.sections.append((head, f"not running (exit code {svc.proc.returncode})"))
                continue
            svc._death_reported = True
            head += f" EXITED with code {svc.proc.returncode}"
            for m in SANITIZER_MARKERS:
                if m in text:
                    i = text.find(m)
                    new = text[max(0, i - 300):i + 6000]
                    break
        if new.strip():
            rep.sections.append((head + " stderr", new[-4000:]))
