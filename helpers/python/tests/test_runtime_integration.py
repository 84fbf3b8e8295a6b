"""Every SDK function against the real cronium-runtime binary in dev mode.

The binary is started once per session (see ``conftest.runtime``) on a free
loopback port.  If it is missing, these tests fail: they are never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

import cronium
from conftest import DEV_CONTEXT, PACKAGE_ROOT, Runtime, start_runtime

SEEDED = DEV_CONTEXT["executionId"]
SEEDED_USER = DEV_CONTEXT["userId"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client_for(runtime: Runtime, execution_id: str = SEEDED, user_id: str = SEEDED_USER,
               **options: Any) -> cronium.Cronium:
    settings: Dict[str, Any] = dict(timeout=10.0, max_attempts=2, retry_delay=0.05, max_retry_delay=2.0)
    settings.update(options)
    return cronium.Cronium(runtime.url, runtime.token(execution_id, user_id), execution_id, **settings)


@pytest.fixture(scope="module")
def seeded(runtime: Runtime) -> cronium.Cronium:
    return client_for(runtime)


@pytest.fixture
def fresh(runtime: Runtime) -> cronium.Cronium:
    """A client for an execution the runtime has never seen, with its own user."""
    return client_for(runtime, unique("py-fresh-exec"), unique("py-fresh-user"))


def same(a: Any, b: Any) -> bool:
    """Equal including JSON types (0 vs False vs 0.0 are different here)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


VALUES: List[Any] = [
    0, False, "", None, True, 1, -7, 3.25, "text", [], {},
    [0, False, "", None, [1, [2]]],
    {"nested": {"deep": {"list": [1, {"x": None}], "flag": False, "zero": 0, "empty": ""}}},
    "ünïcødé ✓ 中文 🚀", {"ключ": "значение", "emoji": "🎉"},
]


# -- input, context, event, output, condition ----------------------------------


def test_input_is_the_seeded_input(seeded: cronium.Cronium) -> None:
    got = seeded.input()
    assert same(got, DEV_CONTEXT["metadata"]["input"]), got


def test_context_and_event(seeded: cronium.Cronium) -> None:
    ctx = seeded.context()
    assert ctx["executionId"] == SEEDED
    assert ctx["jobId"] == DEV_CONTEXT["jobId"]
    assert ctx["eventId"] == DEV_CONTEXT["eventId"]
    assert ctx["userId"] == SEEDED_USER
    assert ctx["eventName"] == DEV_CONTEXT["event"]["name"]
    assert ctx["eventType"] == DEV_CONTEXT["event"]["type"]
    assert same(ctx["metadata"], DEV_CONTEXT["metadata"])
    assert same(ctx["event"], DEV_CONTEXT["event"])
    assert same(ctx["user"], DEV_CONTEXT["user"])
    assert "startTime" in ctx
    assert same(seeded.event(), DEV_CONTEXT["event"])
    assert seeded.context("event.name") == "Python SDK test"
    assert seeded.context("metadata.input.text") == "héllo wörld ✓"
    assert same(seeded.context("metadata.input.flag"), False)
    assert seeded.context("event.no_such_field") is None


def test_fresh_execution_has_nothing_yet(runtime: Runtime) -> None:
    exec_id, user = unique("py-fresh-exec"), unique("py-fresh-user")
    client = client_for(runtime, exec_id, user)
    assert client.input() == {}
    assert client.event() == {}
    assert client.get_condition() is None
    assert client.get_output() is None
    ctx = client.context()
    assert (ctx["executionId"], ctx["userId"]) == (exec_id, user)


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_output_round_trips(fresh: cronium.Cronium, value: Any) -> None:
    fresh.output(value)
    assert same(fresh.get_output(), value)


def test_condition(fresh: cronium.Cronium) -> None:
    assert fresh.get_condition() is None
    fresh.set_condition(True)
    assert fresh.get_condition() is True
    fresh.setCondition(False)
    assert fresh.getCondition() is False


# -- variables ---------------------------------------------------------------------


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_variable_values_round_trip_exactly(seeded: cronium.Cronium, value: Any) -> None:
    key = unique("value")
    seeded.set_variable(key, value)
    got = seeded.get_variable(key)
    assert same(got, value), (got, value)
    assert seeded.variable_exists(key) is True


def test_missing_variable_and_delete(seeded: cronium.Cronium) -> None:
    key = unique("missing")
    assert seeded.get_variable(key) is None
    assert seeded.variable_exists(key) is False
    assert seeded.delete_variable(key) is False
    seeded.set_variable(key, None)  # a stored null exists
    assert seeded.variable_exists(key) is True
    assert seeded.get_variable(key) is None
    seeded.set_variable(key, False)
    assert seeded.get_variable(key) is False
    assert seeded.delete_variable(key) is True
    assert seeded.variable_exists(key) is False
    assert seeded.get_variable(key) is None
    assert seeded.delete_variable(key) is False


@pytest.mark.parametrize("key", [
    "a/b", "dir/sub/leaf/", "/leading", "ключ ✓", "with space?&#=+;", "100%", "%2F", "...", ".x",
    "emoji 🚀/x", "x" * 255,
])
def test_keys_with_slashes_and_unicode(seeded: cronium.Cronium, key: str) -> None:
    if key not in ("...", ".x") and len(key.encode()) < 240:
        key += uuid.uuid4().hex[:6]
    seeded.delete_variable(key)  # "...", ".x" and the 255-byte key are the same in every run
    value = {"key": key, "n": 0}
    seeded.set_variable(key, value)
    assert seeded.get_variable(key) == value
    assert seeded.variable_exists(key) is True
    assert seeded.delete_variable(key) is True
    assert seeded.get_variable(key) is None


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_segment_keys_are_refused(seeded: cronium.Cronium, key: str) -> None:
    # The runtime refuses them: a backend URL would collapse them into another route.
    for call in (lambda: seeded.get_variable(key), lambda: seeded.set_variable(key, 1),
                 lambda: seeded.delete_variable(key)):
        with pytest.raises(cronium.CroniumAPIError) as exc:
            call()
        assert exc.value.status_code == 400 and exc.value.code == "invalid_key"


def test_slash_key_is_not_the_encoded_key(seeded: cronium.Cronium) -> None:
    base = unique("k")
    seeded.set_variable(f"{base}/x", "slash")
    seeded.set_variable(f"{base}%2Fx", "percent")
    assert seeded.get_variable(f"{base}/x") == "slash"
    assert seeded.get_variable(f"{base}%2Fx") == "percent"


def test_invalid_key_is_a_400_and_not_retried(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    client = client_for(runtime, debug=True, max_attempts=3)
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.set_variable("x" * 256, 1)
    assert (info.value.status_code, info.value.code) == (400, "invalid_key")
    assert info.value.message
    assert len([line for line in capsys.readouterr().err.splitlines() if "-> 400" in line]) == 1


def test_increment(seeded: cronium.Cronium) -> None:
    key = unique("counter/ü")
    assert seeded.increment_variable(key) == 1
    assert seeded.increment_variable(key, 5) == 6
    assert seeded.incrementVariable(key, by=-2) == 4
    assert seeded.increment_variable(key, 0.5) == 4.5
    assert seeded.get_variable(key) == 4.5
    text_key = unique("text")
    seeded.set_variable(text_key, "not a number")
    with pytest.raises(cronium.CroniumAPIError) as info:
        seeded.increment_variable(text_key)
    assert (info.value.status_code, info.value.code) == (409, "conflict")
    assert seeded.get_variable(text_key) == "not a number"


def test_increment_is_atomic_under_concurrency(seeded: cronium.Cronium) -> None:
    key = unique("race")
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                seeded.increment_variable(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert seeded.get_variable(key) == 200


def test_variables_belong_to_the_user(runtime: Runtime) -> None:
    user = unique("py-shared-user")
    first = client_for(runtime, unique("exec-a"), user)
    second = client_for(runtime, unique("exec-b"), user)
    stranger = client_for(runtime, unique("exec-c"), unique("py-other-user"))
    key = unique("shared")
    first.set_variable(key, {"from": "first"})
    assert second.get_variable(key) == {"from": "first"}
    assert stranger.get_variable(key) is None
    assert second.increment_variable(unique("n")) == 1


# -- tool actions --------------------------------------------------------------------


def _dev_result(tool: str, action: str, params: Dict[str, Any]) -> Dict[str, Any]:
    return {"success": True, "data": {"tool": tool, "action": action, "params": params},
            "metadata": {"dev": True}}


def test_tool_actions(seeded: cronium.Cronium) -> None:
    params = {"url": "https://example.test/hook", "payload": {"n": 0, "ok": False, "s": "ü"}}
    assert same(seeded.execute_tool_action("webhook", "post", params), _dev_result("webhook", "post", params))
    assert same(seeded.execute_tool_action("noop", "ping"), _dev_result("noop", "ping", {}))
    assert same(
        seeded.send_email("a@example.test", "Hi ✓", "Body", cc="b@example.test", html=True),
        _dev_result("email", "send_message", {"to": ["a@example.test"], "subject": "Hi ✓", "body": "Body",
                                              "cc": ["b@example.test"], "html": True}),
    )
    assert same(
        seeded.sendSlackMessage("#ops", "deployed", username="cronium"),
        _dev_result("slack", "send_message", {"channel": "#ops", "text": "deployed", "username": "cronium"}),
    )
    assert same(
        seeded.send_discord_message("987", "hello", embeds=[{"title": "T", "fields": []}]),
        _dev_result("discord", "send_message", {"channelId": "987", "content": "hello",
                                                "embeds": [{"title": "T", "fields": []}]}),
    )


# -- auth errors ---------------------------------------------------------------------


def test_token_for_another_execution_is_403(runtime: Runtime) -> None:
    other = runtime.token(unique("someone-else"), SEEDED_USER)
    client = cronium.Cronium(runtime.url, other, SEEDED, max_attempts=3, retry_delay=0.01)
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.get_variable("k")
    assert (info.value.status_code, info.value.code) == (403, "execution_mismatch")


def test_bad_token_is_401(runtime: Runtime) -> None:
    client = cronium.Cronium(runtime.url, "not.a.jwt", SEEDED, max_attempts=3, retry_delay=0.01)
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.input()
    assert (info.value.status_code, info.value.code) == (401, "invalid_token")
    assert info.value.request_id


# -- async ---------------------------------------------------------------------------


def test_async_against_the_runtime(runtime: Runtime) -> None:
    client = cronium.AsyncCronium(client=client_for(runtime))
    key = unique("async")

    async def main() -> Any:
        await client.set_variable(key, {"v": [0, False]})
        got = await client.get_variable(key)
        counts = await asyncio.gather(*(client.increment_variable(key + "-n") for _ in range(20)))
        return got, sorted(counts), await client.input(), await client.event()

    got, counts, data, event = asyncio.run(main())
    assert same(got, {"v": [0, False]})
    assert counts == list(range(1, 21))
    assert same(data, DEV_CONTEXT["metadata"]["input"])
    assert same(event, DEV_CONTEXT["event"])


# -- a job script, as the orchestrator runs it -------------------------------------------


JOB_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import cronium

    key = sys.argv[1]
    out = {"executionId": cronium.execution_id, "input": cronium.input()}
    cronium.setVariable(key, 0)
    out["zero"] = cronium.getVariable(key)
    out["exists"] = cronium.variableExists(key)
    out["inc"] = cronium.incrementVariable(key, 41)
    out["inc2"] = asyncio.run(cronium.async_increment_variable(key))
    out["missing"] = cronium.get_variable(key + "-missing")
    cronium.set_condition(True)
    out["condition"] = cronium.get_condition()
    out["event"] = cronium.event()["name"]
    out["tool"] = cronium.execute_tool_action("t", "a", {"x": 1})["data"]["params"]
    cronium.output({"done": True})
    out["output"] = cronium.get_output()
    out["deleted"] = cronium.deleteVariable(key)
    print(json.dumps(out))
""")


@pytest.mark.parametrize("names", ["container", "ssh"])
def test_job_script_with_module_functions(runtime: Runtime, tmp_path: Path, names: str) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    token = runtime.token(SEEDED, SEEDED_USER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONIUM_")}
    env.update(PYTHONPATH=str(PACKAGE_ROOT), PYTHONDONTWRITEBYTECODE="1", CRONIUM_EXECUTION_ID=SEEDED,
               CRONIUM_DEBUG="1")
    if names == "container":
        env.update(CRONIUM_RUNTIME_API=runtime.url, CRONIUM_EXECUTION_TOKEN=token)
    else:
        env.update(CRONIUM_API_ENDPOINT=runtime.url + "/", CRONIUM_API_TOKEN=token)
    result = subprocess.run([sys.executable, str(script), unique("job/key")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["executionId"] == SEEDED
    assert same(out["input"], DEV_CONTEXT["metadata"]["input"])
    assert same(out["zero"], 0)
    assert out["exists"] is True
    assert (out["inc"], out["inc2"]) == (41, 42)
    assert out["missing"] is None
    assert out["condition"] is True
    assert out["event"] == "Python SDK test"
    assert out["tool"] == {"x": 1}
    assert out["output"] == {"done": True}
    assert out["deleted"] is True
    # CRONIUM_DEBUG=1: one line per request on stderr, never the token.
    debug_lines = [line for line in result.stderr.splitlines() if line.startswith("[cronium] ")]
    assert len(debug_lines) == 14  # one per call, no retries
    assert all(" ms" in line for line in debug_lines if "->" in line)
    assert token not in result.stderr and token not in result.stdout


# -- rate limiting: Retry-After from the real service ---------------------------------


def test_rate_limit_retry_after_is_honoured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    limited = start_runtime(tmp_path, {"RATE_LIMIT_PER_MIN": "60", "RATE_LIMIT_BURST": "2"})
    try:
        token = limited.token(SEEDED, SEEDED_USER)
        strict = cronium.Cronium(limited.url, token, SEEDED, max_attempts=1)
        patient = cronium.Cronium(limited.url, token, SEEDED, max_attempts=3, retry_delay=0.01,
                                  max_retry_delay=5.0, debug=True)
        with pytest.raises(cronium.CroniumAPIError) as info:
            for _ in range(10):
                strict.get_condition()
        assert (info.value.status_code, info.value.code) == (429, "rate_limited")
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
        started = time.monotonic()
        patient.get_condition()  # bucket is empty: 429, wait Retry-After, then success
        elapsed = time.monotonic() - started
        err = capsys.readouterr().err
        assert "-> 429" in err and "-> 200" in err
        wait_line = next(line for line in err.splitlines() if "retrying in" in line)
        waited = float(wait_line.split("retrying in ")[1].split(" s")[0])
        assert waited == pytest.approx(info.value.retry_after, abs=1.0)
        assert elapsed >= waited - 0.05
    finally:
        limited.stop()


def test_append_against_the_runtime(runtime: Runtime) -> None:
    client = client_for(runtime)
    key = unique("append")
    assert client.append_variable(key, "a") == "a"
    assert client.appendVariable(key, "b", "\n") == "a\nb"
    assert client.get_variable(key) == "a\nb"
    num = unique("append-num")
    client.set_variable(num, 5)
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.append_variable(num, "x")
    assert (info.value.status_code, info.value.code) == (409, "conflict")
    async_client = cronium.AsyncCronium(client=client)
    conc = unique("append-conc")

    async def many() -> None:
        await asyncio.gather(*(async_client.append_variable(conc, "x") for _ in range(20)))

    asyncio.run(many())
    assert client.get_variable(conc) == "x" * 20
