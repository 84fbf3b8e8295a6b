"""The cronium-runtime process for the tests: start it on a free 127.0.0.1 port,
wait for /health, capture its output, stop it (SIGTERM, then SIGKILL) and report
what went wrong, sanitizer and valgrind reports included.

The binary is $CRONIUM_RUNTIME_BIN (default <repo>/build/cronium-runtime); it may
be the valgrind wrapper tests/valgrind/cronium-runtime, which reports memory
errors through its exit code (97), as LeakSanitizer does through its own.
"""
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .http import Client, RawConn, get_status

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
BIN = os.environ.get("CRONIUM_RUNTIME_BIN") or str(REPO / "build" / "cronium-runtime")
HOST = "127.0.0.1"

STARTUP_TIMEOUT = 20.0   # sanitizer and valgrind builds start slower; still bounded
STOP_TIMEOUT = 15.0

# Settings the service reads; stripped from the inherited environment so a
# developer's shell cannot change what the tests see. The fixed set covers a
# binary that cannot run; every short name `--list-settings` prints is added
# to it the first time clean_env runs (settings added later need no edit here).
CONFIG_NAMES = frozenset({
    "HOST", "PORT", "READ_TIMEOUT", "WRITE_TIMEOUT", "IDLE_TIMEOUT", "SHUTDOWN_TIMEOUT",
    "MAX_BODY_BYTES", "MAX_CONNECTIONS", "JWT_SECRET", "JWT_ISSUER", "JWT_LEEWAY",
    "JWT_ALGORITHMS", "VALKEY_URL", "VALKEY_PASSWORD", "VALKEY_DB", "VALKEY_TIMEOUT",
    "CACHE_TTL", "LOCK_TTL", "BACKEND_URL", "BACKEND_TOKEN", "BACKEND_TIMEOUT",
    "BACKEND_MAX_RETRIES", "BACKEND_RETRY_DELAY", "BACKEND_MAX_CONCURRENT",
    "RATE_LIMIT_PER_MIN", "RATE_LIMIT_BURST", "AUTH_FAILURES_PER_MIN", "ENABLE_CORS",
    "ALLOWED_ORIGINS", "LOG_LEVEL", "LOG_FORMAT", "CONFIG_FILE", "WORKERS",
})
_listed_names = None


def _all_config_names():
    global _listed_names
    if _listed_names is None:
        _listed_names = CONFIG_NAMES
        try:
            r = subprocess.run([BIN, "--list-settings"], capture_output=True, text=True, timeout=15,
                               env={k: v for k, v in os.environ.items() if k not in CONFIG_NAMES})
            if r.returncode == 0:
                extra = {line.split("\t")[1] for line in r.stdout.splitlines() if line.count("\t") >= 3}
                _listed_names = CONFIG_NAMES | extra
        except (OSError, subprocess.TimeoutExpired):
            pass
    return _listed_names


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")

# Exit codes that mean "a checker found something" (.ci/test's ASAN_OPTIONS /
# UBSAN_OPTIONS / LSAN_OPTIONS, and the valgrind wrapper's --error-exitcode).
CHECKER_EXIT_CODES = {23: "AddressSanitizer/LeakSanitizer", 24: "UndefinedBehaviorSanitizer",
                      97: "valgrind memcheck"}

ACTIVE = []  # services started and not yet torn down, for failure reports


def raise_nofile():
    """Allow as many open files as the hard limit permits (up to 16384): the
    connection-limit tests open thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(overrides=None, names=None):
    """The inherited environment without the service's settings (`names`, their
    _FILE forms and anything RUNTIME_*/CRONIUM_*), then `overrides` (None removes)."""
    if names is None:
        names = _all_config_names()
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith("RUNTIME_") and not k.startswith("CRONIUM_")
           and not (k.endswith("_FILE") and k[:-5] in names)}
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def minimal_env(overrides=None):
    """Only PATH and the sanitizer options, then `overrides`: the environment a
    job's container gives the service."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "VALGRIND_TARGET"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update({k: str(v) for k, v in (overrides or {}).items() if v is not None})
    return env


def kill_group(proc):
    """SIGKILL a process started with start_new_session (and its children: the
    valgrind wrapper), then reap it."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def require_binary():
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        pytest.fail(f"cronium-runtime binary not found or not executable at {BIN} "
                    f"(build it, or set CRONIUM_RUNTIME_BIN)", pytrace=False)
    return BIN


def run_cli(args, env=None, timeout=15.0, input=None):
    """Run the binary to completion (bounded); returns CompletedProcess with text output."""
    require_binary()
    try:
        return subprocess.run([BIN, *args], env=clean_env(env), capture_output=True, text=True,
                              timeout=timeout, input=input, errors="replace")
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`cronium-runtime {' '.join(args)}` did not finish within {timeout}s; "
                    f"stderr: {e.stderr!r}", pytrace=False)


def sanitizer_excerpt(text, before=200, after=4000):
    """The first sanitizer report in `text` with some context, or None."""
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            return text[max(0, i - before):i + after]
    return None


class Service:
    """One running cronium-runtime process.

    env: settings on top of the inherited environment (clean_env), or on top of
    minimal_env() with inherit=False; PORT is picked unless given. stdout and
    stderr go to <workdir>/<name>.stdout / .stderr."""

    def __init__(self, workdir, env=None, args=(), name="svc", inherit=True, cwd=None):
        self.workdir = Path(workdir)
        self.args = list(args)
        self.name = name
        self.base_env = dict(env or {})
        self.inherit = inherit
        self.cwd = cwd
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
        if self not in ACTIVE:
            ACTIVE.append(self)
        for attempt in range(3):
            self.port = int(self.base_env.get("PORT") or free_port())
            # TMPDIR: dev mode writes its export block to a file there; keep it in the test's directory
            settings = {"HOST": HOST, "TMPDIR": str(self.workdir), **self.base_env, "PORT": self.port}
            self.env = clean_env(settings) if self.inherit else minimal_env(settings)
            self.started_wall = time.time()
            self.stopped = False
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen([BIN, *self.args], env=self.env, stdout=out, stderr=err,
                                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
            if self._wait_healthy():
                return self
            if "in use" in self.stderr().lower() and "PORT" not in self.base_env and attempt < 2:
                self.kill()
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
                if get_status(self.port, "/health") == 200:
                    return True
            except Exception:  # noqa: BLE001 - not listening yet or half-started: try again
                pass
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

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
        """SIGTERM, wait, SIGKILL if needed. Returns a list of problems seen: the
        process died by itself, did not stop, did not exit 0 on SIGTERM, or its
        stderr holds a sanitizer report (checked even when the test stopped it)."""
        problems = []
        if self.proc is None:
            return problems
        if not self.stopped:
            if self.proc.poll() is not None:
                self.died_on_its_own = True
                problems.append(f"service {self.name} exited by itself with code {self.proc.returncode}")
            else:
                self.terminate()
                if self.wait_exit(timeout) is None:
                    problems.append(f"service {self.name} did not exit within {timeout}s of SIGTERM")
                    self.kill()
                elif self.returncode != 0:
                    # SIGTERM must end in exit 0; a leak checker (LeakSanitizer,
                    # valgrind --error-exitcode) reports through the exit code.
                    what = CHECKER_EXIT_CODES.get(self.returncode)
                    problems.append(f"service {self.name} exited with code {self.returncode} after SIGTERM"
                                    + (f" ({what})" if what else ""))
            self.stopped = True
            self.returncode = self.proc.returncode
        problems += self.sanitizer_problems()
        return problems

    def sanitizer_problems(self):
        report = sanitizer_excerpt(self.stderr())
        return [f"sanitizer report in {self.name} stderr:\n{report}"] if report else []

    def kill(self):
        kill_group(self.proc)
        self.stopped = True

    def close(self):
        """stop() and forget the service; returns the problems."""
        try:
            return self.stop()
        finally:
            self.kill()
            if self in ACTIVE:
                ACTIVE.remove(self)

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

    def dev_exports(self, timeout=5.0):
        """The `export NAME=value` block dev mode prints on stdout, as a dict."""
        deadline = time.monotonic() + timeout
        while True:
            found = {}
            for line in self.stdout().splitlines():
                if line.startswith("export ") and "=" in line:
                    k, v = line[len("export "):].split("=", 1)
                    found[k] = v
            if "CRONIUM_EXECUTION_TOKEN" in found:
                return found
            if time.monotonic() >= deadline:
                pytest.fail(f"dev mode printed no export block; stdout: {self.stdout()!r}", pytrace=False)
            time.sleep(0.05)

    # -- clients --------------------------------------------------------
    @property
    def base_url(self):
        return f"http://{HOST}:{self.port}"

    def api(self, token=None, timeout=None):
        return Client(self.port, token) if timeout is None else Client(self.port, token, timeout=timeout)

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


def close_all(things):
    """close() each (services, stacks); returns every problem reported."""
    problems = []
    for t in things:
        problems += t.close()
    return problems


def add_failure_sections(rep):
    """For a failed test's report: what each running service logged since the
    last report, and, once, why a service died."""
    for svc in ACTIVE:
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
            new = sanitizer_excerpt(text, 300, 6000) or new
        if new.strip():
            rep.sections.append((head + " stderr", new[-4000:]))
