"""Fixtures: the fault server, clients bound to it, and the real cronium-runtime binary."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # helpers/python
REPO_ROOT = PACKAGE_ROOT.parent.parent  # /work/main
sys.path.insert(0, str(PACKAGE_ROOT))

import cronium  # noqa: E402
from cronium import _transport  # noqa: E402
from support import FaultServer, free_port  # noqa: E402

TOKEN = "tok-5ecret-Zq9-never-print-me"
SETTING_NAMES = (
    "CRONIUM_RUNTIME_API", "CRONIUM_API_ENDPOINT", "CRONIUM_EXECUTION_TOKEN",
    "CRONIUM_API_TOKEN", "CRONIUM_EXECUTION_ID", "CRONIUM_DEBUG", "CRONIUM_TIMEOUT",
    "CRONIUM_MAX_ATTEMPTS", "CRONIUM_RETRY_DELAY", "CRONIUM_MAX_RETRY_DELAY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CRONIUM_* setting leaks in from the outside, and no default client survives."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cronium, "_default_client", None)
    yield


@pytest.fixture
def server() -> Iterator[FaultServer]:
    srv = FaultServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_client(server: FaultServer) -> Callable[..., cronium.Cronium]:
    """Client factory for the fault server; fast retries unless told otherwise."""

    def make(**overrides: Any) -> cronium.Cronium:
        options: Dict[str, Any] = dict(
            api_url=server.url, token=TOKEN, execution_id="exec-1",
            timeout=5.0, max_attempts=3, retry_delay=0.01, max_retry_delay=2.0, debug=False,
        )
        options.update(overrides)
        return cronium.Cronium(**options)

    return make


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """Record the waits between attempts instead of sleeping."""
    waits: List[float] = []
    monkeypatch.setattr(_transport, "_sleep", waits.append)
    return waits


# -- the real binary ----------------------------------------------------------


def runtime_binary() -> Path:
    return Path(os.environ.get("CRONIUM_RUNTIME_BIN", str(REPO_ROOT / "build" / "cronium-runtime")))


DEV_CONTEXT: Dict[str, Any] = {
    "executionId": "py-itest-exec",
    "jobId": "py-itest-job",
    "eventId": "py-itest-event",
    "userId": "py-itest-user",
    "metadata": {"input": {"n": 0, "flag": False, "empty": "", "none": None,
                           "text": "héllo wörld ✓", "list": [1, 2.5, "x"],
                           "nested": {"a": {"b": [True, None]}}}},
    "event": {"id": "py-itest-event", "name": "Python SDK test", "type": "SCRIPT",
              "tags": ["sdk", "ünïcode"]},
    "user": {"id": "py-itest-user", "email": "sdk@example.test"},
}


class Runtime:
    """A running cronium-runtime in dev mode, and a way to mint tokens for it."""

    def __init__(self, binary: Path, workdir: Path, extra_env: Optional[Dict[str, str]] = None) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(32)
        context_file = workdir / "dev-context.json"
        context_file.write_text(json.dumps(DEV_CONTEXT), encoding="utf-8")
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("CRONIUM_") and k not in ("BACKEND_URL", "VALKEY_URL", "CONFIG_FILE")
        }
        self.env.update({
            "PORT": str(self.port), "HOST": "127.0.0.1", "JWT_SECRET": self.secret,
            "RATE_LIMIT_PER_MIN": "1000000", "RATE_LIMIT_BURST": "100000",
        })
        self.env.update(extra_env or {})
        self.stdout_path = workdir / "runtime.stdout"
        self.stderr_path = workdir / "runtime.stderr"
        self._stdout = open(self.stdout_path, "wb")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--dev", "--dev-context", str(context_file)],
            env=self.env, stdout=self._stdout, stderr=self._stderr, stdin=subprocess.DEVNULL,
        )

    def logs(self) -> str:
        out = self.stdout_path.read_text(errors="replace")[-2000:]
        err = self.stderr_path.read_text(errors="replace")[-4000:]
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"

    def wait_healthy(self, deadline_s: float = 15.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cronium-runtime exited with {self.proc.returncode}\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cronium-runtime did not answer /health in {deadline_s} s\n{self.logs()}")

    def token(self, execution_id: str, user_id: str = "py-itest-user", *extra: str) -> str:
        result = subprocess.run(
            [str(self.binary), "token", "--execution-id", execution_id, "--user-id", user_id, *extra],
            env=self.env, capture_output=True, timeout=15, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"'cronium-runtime token' failed with {result.returncode}: "
                f"{result.stderr.decode(errors='replace')}"
            )
        token = result.stdout.decode().strip()
        if not token or token.count(".") != 2:
            raise RuntimeError(f"'cronium-runtime token' printed no JWT: {result.stdout!r}")
        return token

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._stdout.close()
            self._stderr.close()


def start_runtime(tmp_dir: Path, extra_env: Optional[Dict[str, str]] = None) -> Runtime:
    binary = runtime_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"cronium-runtime binary not found at {binary} (build it with "
            "'meson compile -C build' or set CRONIUM_RUNTIME_BIN)", pytrace=False,
        )
    runtime = Runtime(binary, tmp_dir, extra_env)
    try:
        runtime.wait_healthy()
    except BaseException:
        runtime.stop()
        raise
    return runtime


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = start_runtime(tmp_path_factory.mktemp("runtime"))
    try:
        yield rt
    finally:
        rt.stop()
