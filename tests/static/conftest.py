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
import shutil
import subprocess
from pathlib import Path

import pytest

from lib import proc
from lib.backend import Fakes
from lib.proc import REPO, Service, require_binary, run_cli

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"

NPM_TIMEOUT = 600


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
    """The inherited environment without anything the service or the helpers read
    (every name `--list-settings` gives, in each of its forms)."""
    names = {"CONFIG_FILE", "HOST", "PORT"}
    try:
        names |= config_env_names()
    except AssertionError:
        pass
    return proc.clean_env(overrides, names=names)


# ---- a running service ------------------------------------------------------------------------

@pytest.fixture
def start_service(tmp_path):
    """start_service(env=..., args=...) -> a running lib.proc.Service (LOG_LEVEL warn
    unless given; in dev mode with its export block in .exports); all are stopped at
    the end, and a sanitizer report in any of their logs fails the test."""
    started = []

    def start(env=None, args=(), name=None):
        env = {"LOG_LEVEL": "warn", **(env or {})}
        svc = Service(tmp_path, env=env, args=args, name=name or f"svc{len(started)}", cwd=tmp_path)
        started.append(svc)
        svc.start()
        dev = "--dev" in svc.args or "BACKEND_URL" not in env
        svc.exports = svc.dev_exports() if dev else {}
        return svc

    yield start
    problems = []
    for svc in started:
        svc.close()
        problems += svc.sanitizer_problems()
    assert not problems, "\n".join(problems)


@pytest.fixture
def fake_backend():
    """fake_backend(**kwargs) -> a started FakeBackend (tests/fakes); all are stopped
    at the end, and an internal error of one fails the test."""
    fakes = Fakes()
    yield fakes.start
    problems = fakes.close()
    assert not problems, "\n".join(problems)
