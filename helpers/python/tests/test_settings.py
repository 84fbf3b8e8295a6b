"""Settings from the environment, lazy errors, and importing with no settings at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Dict

import pytest

import cronium
from conftest import PACKAGE_ROOT, TOKEN
from support import FaultServer, ok


def _clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONIUM_")}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def test_import_without_env_is_silent_and_first_call_explains() -> None:
    script = textwrap.dedent("""
        import builtins
        import cronium
        from cronium import *  # must not shadow the builtin input()
        assert input is builtins.input
        assert output is cronium.output
        print("imported")
        try:
            cronium.get_variable("k")
        except cronium.CroniumConfigError as exc:
            print("error:", exc)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], env=_clean_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "imported"
    assert lines[1].startswith("error: the Cronium helper is not configured")
    assert "CRONIUM_EXECUTION_TOKEN" in lines[1]
    assert "CRONIUM_EXECUTION_ID" in lines[1]


def test_import_with_broken_env_does_not_fail() -> None:
    env = _clean_env(CRONIUM_RUNTIME_API="ftp://nope", CRONIUM_TIMEOUT="soon",
                     CRONIUM_MAX_ATTEMPTS="-2", CRONIUM_EXECUTION_TOKEN="t", CRONIUM_EXECUTION_ID="e")
    script = "import cronium, sys; print(repr(cronium.get_client()));\n" \
             "try:\n    cronium.output(1)\nexcept cronium.CroniumConfigError as e:\n    print(e)\n"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    message = result.stdout.splitlines()[1]
    for name in ("CRONIUM_RUNTIME_API", "CRONIUM_TIMEOUT", "CRONIUM_MAX_ATTEMPTS"):
        assert name in message


def test_missing_settings_raise_on_first_call_not_on_construction(server: FaultServer) -> None:
    client = cronium.Cronium(api_url=server.url)
    with pytest.raises(cronium.CroniumConfigError) as info:
        client.input()
    assert "CRONIUM_EXECUTION_TOKEN" in str(info.value)
    with pytest.raises(cronium.CroniumConfigError):
        client.execution_id
    with pytest.raises(cronium.CroniumConfigError):
        cronium.input()
    assert server.requests == []


def test_env_names_and_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_API_ENDPOINT", "http://ssh-tunnel:9090/")
    monkeypatch.setenv("CRONIUM_API_TOKEN", "ssh-token")
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "exec-9")
    s = cronium.Cronium().settings
    assert (s.api_url, s.token, s.execution_id) == ("http://ssh-tunnel:9090", "ssh-token", "exec-9")

    monkeypatch.setenv("CRONIUM_RUNTIME_API", "http://runtime-api:8081")
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", "container-token")
    s = cronium.Cronium().settings
    assert (s.api_url, s.token) == ("http://runtime-api:8081", "container-token")

    s = cronium.Cronium("http://explicit:1/p/", "explicit-token", "explicit-id").settings
    assert (s.api_url, s.token, s.execution_id) == ("http://explicit:1/p", "explicit-token", "explicit-id")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = cronium.Cronium().settings
    assert s.api_url == "http://localhost:8081"
    assert (s.timeout, s.max_attempts, s.retry_delay, s.max_retry_delay, s.debug) == (30.0, 3, 0.5, 30.0, False)


def test_tuning_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_TIMEOUT", "2.5")
    monkeypatch.setenv("CRONIUM_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("CRONIUM_RETRY_DELAY", "0.1")
    monkeypatch.setenv("CRONIUM_MAX_RETRY_DELAY", "4")
    monkeypatch.setenv("CRONIUM_DEBUG", "true")
    s = cronium.Cronium().settings
    assert (s.timeout, s.max_attempts, s.retry_delay, s.max_retry_delay, s.debug) == (2.5, 5, 0.1, 4.0, True)


def test_max_retries_is_the_old_name_for_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_MAX_RETRIES", "4")
    assert cronium.Cronium().settings.max_attempts == 4
    monkeypatch.setenv("CRONIUM_MAX_ATTEMPTS", "2")   # the common name wins
    assert cronium.Cronium().settings.max_attempts == 2


def test_explicit_bad_arguments_raise_immediately() -> None:
    with pytest.raises(ValueError):
        cronium.Cronium(api_url="localhost:8081")
    with pytest.raises(ValueError):
        cronium.Cronium(api_url="http://h:1/?q=1")
    with pytest.raises(ValueError):
        cronium.Cronium(timeout=0)
    with pytest.raises(ValueError):
        cronium.Cronium(max_attempts=0)
    with pytest.raises(TypeError):
        cronium.Cronium(max_attempts=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cronium.Cronium(token="")


def test_module_functions_use_the_env_client(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_RUNTIME_API", server.url)
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN)
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "env-exec")
    assert cronium.execution_id == "env-exec"
    assert cronium.executionId == "env-exec"
    assert cronium.get_client() is cronium.get_client()
    server.queue(ok({"key": "x", "value": 7}), ok({"key": "x", "value": 8}))
    assert cronium.get_variable("x") == 7
    assert cronium.getVariable("x") == 8
    assert [r.path for r in server.requests] == ["/executions/env-exec/variables/x"] * 2

    client = cronium.configure(execution_id="other", max_attempts=1)
    assert cronium.get_client() is client
    assert cronium.execution_id == "other"
    with pytest.raises(AttributeError):
        cronium.no_such_thing  # noqa: B018


def test_camel_case_aliases_are_the_same_functions() -> None:
    pairs = {
        "getOutput": "get_output", "setCondition": "set_condition", "getCondition": "get_condition",
        "getVariable": "get_variable", "setVariable": "set_variable", "variableExists": "variable_exists",
        "deleteVariable": "delete_variable", "incrementVariable": "increment_variable",
        "executeToolAction": "execute_tool_action", "sendEmail": "send_email",
        "sendSlackMessage": "send_slack_message", "sendDiscordMessage": "send_discord_message",
    }
    for camel, snake in pairs.items():
        assert getattr(cronium, camel) is getattr(cronium, snake)
        assert getattr(cronium.Cronium, camel) is getattr(cronium.Cronium, snake)
        assert getattr(cronium.AsyncCronium, camel) is getattr(cronium.AsyncCronium, snake)
        assert callable(getattr(cronium, "async_" + snake))
    assert cronium.Cronium.executionId is cronium.Cronium.execution_id


def test_exception_hierarchy() -> None:
    for cls in (cronium.CroniumAPIError, cronium.CroniumConnectionError, cronium.CroniumTimeoutError,
                cronium.CroniumConfigError, cronium.CroniumProtocolError):
        assert issubclass(cls, cronium.CroniumError)
    assert issubclass(cronium.CroniumError, Exception)
