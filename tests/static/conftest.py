"""Shared fixtures of the static checks (containers, compose, docs, OpenAPI).

Run from the repository root:  /usr/bin/python3 -m pytest tests/static

* The npm tools the checks use (Dockerfile linters, the Compose and OpenAPI
  schemas) are installed by the tests themselves into tests/static/node_modules
  (gitignored) from package.json / package-lock.json when missing.
* The service binary is $CRONIUM_RUNTIME_BIN or <repo>/build/cronium-runtime.
  Every service a test starts listens on 127.0.0.1 on a port picked at run
  time and is stopped (SIGTERM, then SIGKILL) when its fixture ends.
"""
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TESTS = REPO / "tests"
SHARED = REPO.parent / "shared"
API_MD = SHARED / "API.md"
BIN = Path(os.environ.get("CRONIUM_RUNTIME_BIN") or REPO / "build" / "cronium-runtime")
NODE_MODULES = HERE / "node_modules"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))   # for `from fakes.backend import FakeBackend`

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
NPM_TIMEOUT = 600

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")


# ---- npm tools ---------------------------------------------------------------------------

def _npm_tools_present():
    pkg = json.loads((HERE / "package.json").read_text())
    for name, version in pkg["devDependencies"].items():
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


@pytest.fixture(scope="session")
def npm_tools():
    """tests/static/node_modules with the pinned tools; installs them when missing."""
    if not _npm_tools_present():
        npm = shutil.which("npm")
        if not npm:
            pytest.fail("npm is needed to install the static-check tools (Debian package `npm`)",
                        pytrace=False)
        cmd = [npm, "ci" if (HERE / "package-lock.json").is_file() else "install",
               "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(cmd)}` did not finish in {NPM_TIMEOUT}s", pytrace=False)
        if r.returncode != 0 or not _npm_tools_present():
            pytest.fail(f"`{' '.join(cmd)}` in {HERE} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}",
                        pytrace=False)
    return NODE_MODULES


# ---- the binary ----------------------------------------------------------------------------

def require_binary():
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.fail(f"cronium-runtime binary not found at {BIN} (build it, or set CRONIUM_RUNTIME_BIN)",
                    pytrace=False)
    return BIN


@pytest.fixture(scope="session")
def runtime_bin():
    return require_binary()


@functools.lru_cache(maxsize=None)
def settings_table():
    """`cronium-runtime --list-settings` as a tuple of (yaml, env, default, meaning)."""
    r = run_cli(["--list-settings"])
    assert r.returncode == 0, r.stderr
    rows = []
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        assert len(parts) == 4, f"--list-settings line is not 4 tab-separated fields: {line!r}"
        rows.append(tuple(parts))
    assert rows, "--list-settings printed nothing"
    return tuple(rows)


def config_env_names():
    """Every environment variable name the service reads for a setting."""
    names = set()
    for yaml_name, env, _default, _meaning in settings_table():
        section, name = yaml_name.split(".", 1)
        forms = [env, "RUNTIME_" + env, "RUNTIME_" + snake_upper(section) + "_" + snake_upper(name)]
        names.update(forms)
    return names


def snake_upper(camel):
    out = []
    for i, ch in enumerate(camel):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def clean_env(overrides=None):
    """The inherited environment without anything the service or the helpers read."""
    known = {"CONFIG_FILE", "HOST", "PORT"}
    try:
        known |= config_env_names()
    except AssertionError:
        pass
    env = {}
    for k, v in os.environ.items():
        base = k[:-5] if k.endswith("_FILE") else k
        if base in known or k.startswith("RUNTIME_") or k.startswith("CRONIUM_"):
            continue
        env[k] = v
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def run_cli(args, env=None, timeout=15.0):
    require_binary()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("RUNTIME_") and not k.startswith("CRONIUM_") and k != "CONFIG_FILE"}
    base.update({k: str(v) for k, v in (env or {}).items() if v is not None})
    for k, v in (env or {}).items():
        if v is None:
            base.pop(k, None)
    try:
        return subprocess.run([str(BIN), *args], env=base, capture_output=True, text=True,
                              timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`cronium-runtime {' '.join(args)}` did not finish in {timeout}s: {e.stderr!r}",
                    pytrace=False)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a running service ------------------------------------------------------------------------

class Service:
    """One cronium-runtime process on 127.0.0.1:<free port>."""

    def __init__(self, workdir, env=None, args=(), name="svc"):
        self.workdir = Path(workdir)
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.name = name
        self.proc = None
        self.port = None
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.exports = {}

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        require_binary()
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            # TMPDIR: dev mode writes its export block to $TMPDIR/cronium-runtime-dev-<port>.env
            env = clean_env({"HOST": "127.0.0.1", "LOG_LEVEL": "warn", "TMPDIR": str(self.workdir),
                             **self.extra_env, "PORT": self.port})
            self.env = env
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen([str(BIN), *self.args], env=env, stdout=out, stderr=err,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir)
            if self._wait_healthy():
                if "--dev" in self.args or "BACKEND_URL" not in self.extra_env:
                    self._read_exports()
                return self
            last = self.stderr_path.read_text(errors="replace")
            self.stop()
            if "address already in use" not in last.lower():
                break
        pytest.fail(f"cronium-runtime did not become healthy; stderr:\n{last[-3000:]}", pytrace=False)

    def _wait_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        return False

    def _read_exports(self):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            found = {}
            for line in text.splitlines():
                if line.startswith("export ") and "=" in line:
                    k, v = line[len("export "):].split("=", 1)
                    found[k] = v
            if "CRONIUM_EXECUTION_TOKEN" in found:
                self.exports = found
                return
            time.sleep(0.05)
        pytest.fail(f"dev mode printed no export block; stdout: {self.stdout_path.read_text()!r}",
                    pytrace=False)

    def token(self, execution_id, user_id=None, ttl="1h"):
        args = ["token", "--execution-id", execution_id, "--ttl", ttl]
        if user_id:
            args += ["--user-id", user_id]
        r = run_cli(args, env={"JWT_SECRET": self.env["JWT_SECRET"]})
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def stop(self):
        p, self.proc = self.proc, None
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def sanitizer_report(self):
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return [m for m in SANITIZER_MARKERS if m in text]


@pytest.fixture
def start_service(tmp_path):
    """start_service(env=..., args=...) -> a running Service; all are stopped at the end."""
    started = []

    def start(env=None, args=(), name=None):
        svc = Service(tmp_path, env=env, args=args, name=name or f"svc{len(started)}")
        started.append(svc)
        return svc.start()

    yield start
    problems = []
    for svc in started:
        svc.stop()
        bad = svc.sanitizer_report()
        if bad:
            problems.append(f"{svc.name}: {bad}\n{svc.stderr_path.read_text(errors='replace')[-3000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def fake_backend():
    """fake_backend(**kwargs) -> a started FakeBackend (tests/fakes); all are stopped at the end."""
    from fakes.backend import FakeBackend
    started = []

    def start(**kwargs):
        fb = FakeBackend(**kwargs).start()
        started.append(fb)
        return fb

    yield start
    for fb in started:
        fb.stop()
