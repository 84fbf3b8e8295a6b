"""Issue 11 on the Python side, against the fault server: input() and event() give {} when
there is none, append_variable, the original helper's entry points, and the lazy builtin
that the runner image's .pth line installs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

import cronium
from conftest import PACKAGE_ROOT, TOKEN
from support import Answer, FaultServer, fail, ok

PTH = PACKAGE_ROOT / "cronium-builtin.pth"


def test_input_and_event_are_empty_dicts_when_there_is_none(make_client: Any, server: FaultServer) -> None:
    server.queue(ok(None, with_data=False), ok(None), ok({"executionId": "exec-1", "event": None}),
                 ok({"executionId": "exec-1"}), ok(0), ok({"event": {"name": "E", "id": "7"}}))
    client = make_client()
    assert client.input() == {}
    assert client.input() == {}
    assert client.event() == {}
    assert client.event().get("name", "none") == "none"
    assert client.input() == 0  # a falsy input is still the input
    assert client.event().get("id") == "7"


def test_append_variable_posts_value_and_separator_once(make_client: Any, server: FaultServer) -> None:
    server.queue(ok({"key": "log", "value": "a"}), ok({"key": "log", "value": "a\nb"}),
                 fail(409, "conflict", "the variable is not a string"))
    client = make_client()
    assert client.append_variable("log", "a") == "a"
    assert client.appendVariable("log", "b", "\n") == "a\nb"
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.append_variable("n", "x")
    assert (info.value.status_code, info.value.code) == (409, "conflict")
    assert [(r.method, r.path, r.json()) for r in server.requests] == [
        ("POST", "/executions/exec-1/variables/log/append", {"value": "a", "separator": ""}),
        ("POST", "/executions/exec-1/variables/log/append", {"value": "b", "separator": "\n"}),
        ("POST", "/executions/exec-1/variables/n/append", {"value": "x", "separator": ""}),
    ]
    with pytest.raises(TypeError):
        client.append_variable("log", 3)  # type: ignore[arg-type]


def test_append_is_not_repeated_after_a_lost_answer(make_client: Any, server: FaultServer) -> None:
    server.queue(Answer(500), ok({"key": "k", "value": "x"}))
    with pytest.raises(cronium.CroniumAPIError):
        make_client().append_variable("k", "x")
    assert len(server.requests) == 1


def test_module_level_and_async_append(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_RUNTIME_API", server.url)
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN)
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "e2")
    server.queue(ok({"key": "k", "value": "1"}), ok({"key": "k", "value": "12"}), ok({"key": "k", "value": "123"}))
    assert cronium.append_variable("k", "1") == "1"
    assert cronium.appendVariable("k", "2") == "12"
    assert asyncio.run(cronium.async_append_variable("k", "3")) == "123"
    assert [r.path for r in server.requests] == ["/executions/e2/variables/k/append"] * 3


def test_the_original_entry_points(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_RUNTIME_API", server.url)
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN)
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "e3")
    server.queue(ok({"key": "COUNTER", "value": "4"}), ok(None, with_data=False), ok({"condition": True}),
                 ok({"user_id": "u1"}), ok(None, with_data=False))
    from cronium import cronium as instance  # the original module-level instance
    assert isinstance(instance, cronium.Cronium)
    assert instance is cronium.get_client()
    n = int(instance.getVariable("COUNTER") or "0") + 1
    instance.setVariable("COUNTER", str(n))
    assert instance.getCondition() is True
    assert cronium.Cronium().input().get("user_id", "unknown") == "u1"
    cronium.Cronium().output({"n": n})
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/executions/e3/variables/COUNTER"), ("PUT", "/executions/e3/variables/COUNTER"),
        ("GET", "/executions/e3/condition"), ("GET", "/executions/e3/input"), ("POST", "/executions/e3/output"),
    ]
    assert server.requests[1].json() == {"value": "5"}


def _run_with_pth(code: str, tmp_path: Path, env_extra: Any = None) -> subprocess.CompletedProcess[str]:
    # The .pth line as a site directory would process it (the runner image puts it in
    # site-packages); the package itself comes from the source tree.
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    (site_dir / PTH.name).write_text(PTH.read_text())
    prelude = f"import site; site.addsitedir({str(site_dir)!r}); import sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r})\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONIUM_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_pth_builtin_is_lazy_and_becomes_the_module(tmp_path: Path) -> None:
    code = (
        "import sys, builtins\n"
        "before = 'cronium' in sys.modules\n"
        "r = repr(cronium)\n"
        "v = cronium.__version__\n"
        "print(before, r, 'cronium' in sys.modules, builtins.cronium is sys.modules['cronium'], v)\n"
    )
    result = _run_with_pth(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1)[0] == "False"
    assert result.stdout.strip().endswith(f"True True {cronium.__version__}")
    assert "imported on first use" in result.stdout


def test_the_pth_builtin_calls_the_runtime(tmp_path: Path, server: FaultServer) -> None:
    server.queue(ok(None, with_data=False), ok({"key": "COUNTER", "value": None}), ok(None, with_data=False))
    code = (
        "input_data = cronium.input()\n"
        "n = int(cronium.getVariable('COUNTER') or '0') + 1\n"
        "cronium.setVariable('COUNTER', str(n))\n"
        "print(input_data.get('user_id', 'unknown'), n)\n"
    )
    result = _run_with_pth(code, tmp_path, {"CRONIUM_RUNTIME_API": server.url,
                                            "CRONIUM_EXECUTION_TOKEN": TOKEN, "CRONIUM_EXECUTION_ID": "e4"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "unknown 1\n"
    assert server.requests[2].json() == {"value": "1"}


def test_a_script_that_defines_or_imports_cronium_itself_wins(tmp_path: Path) -> None:
    result = _run_with_pth("cronium = 'mine'\nprint(cronium)\nimport cronium\nprint(type(cronium).__name__)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "mine\nmodule\n"
