"""Retries, timeouts, errors, debug output and secrecy, against the in-test fault server."""

from __future__ import annotations

import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable, List

import pytest

import cronium
from cronium import _transport
from conftest import TOKEN
from support import Answer, FaultServer, fail, free_port, ok

ClientFactory = Callable[..., cronium.Cronium]


# -- retries ------------------------------------------------------------------


def test_503_is_retried_then_succeeds(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(fail(503, "backend_unavailable", "backend down"), ok({"a": 1}))
    assert make_client().input() == {"a": 1}
    assert [r.method for r in server.requests] == ["GET", "GET"]
    # One logical call keeps one request id across its attempts.
    ids = {r.headers["X-Request-Id"] for r in server.requests}
    assert len(ids) == 1


def test_retry_resends_the_whole_body(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(fail(503, "backend_unavailable", "down"), fail(502, "x", "bad gateway"), ok())
    make_client().set_variable("k", {"big": "x" * 5000, "n": 0})
    assert len(server.requests) == 3
    for seen in server.requests:
        assert seen.method == "PUT"
        assert seen.json() == {"value": {"big": "x" * 5000, "n": 0}}


def test_gives_up_after_max_attempts(server: FaultServer, make_client: ClientFactory, sleeps: List[float]) -> None:
    server.queue(*[fail(503, "backend_unavailable", "still down")] * 10)
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client(max_attempts=4).get_variable("k")
    assert info.value.status_code == 503
    assert info.value.code == "backend_unavailable"
    assert len(server.requests) == 4
    assert len(sleeps) == 3


def test_default_is_three_attempts(server: FaultServer, sleeps: List[float]) -> None:
    server.queue(*[fail(500, "internal", "bug")] * 5)
    client = cronium.Cronium(server.url, TOKEN, "exec-1")
    with pytest.raises(cronium.CroniumAPIError):
        client.input()
    assert len(server.requests) == 3
    assert client.settings.max_attempts == 3


def test_backoff_is_exponential_with_jitter(server: FaultServer, make_client: ClientFactory, sleeps: List[float]) -> None:
    server.queue(*[fail(503, "backend_unavailable", "down")] * 4)
    with pytest.raises(cronium.CroniumAPIError):
        make_client(max_attempts=4, retry_delay=0.2, max_retry_delay=0.5).input()
    assert len(sleeps) == 3
    assert 0.1 <= sleeps[0] <= 0.2
    assert 0.2 <= sleeps[1] <= 0.4
    assert 0.25 <= sleeps[2] <= 0.5  # 0.8 capped at max_retry_delay
    # Jitter: repeated runs do not all wait exactly the same.
    samples = {_transport.backoff_delay(make_client(retry_delay=1.0).settings, 1) for _ in range(20)}
    assert len(samples) > 1
    assert all(0.5 <= s <= 1.0 for s in samples)


@pytest.mark.parametrize("status,code", [
    (400, "invalid_body"), (400, "invalid_key"), (401, "invalid_token"), (403, "execution_mismatch"),
    (404, "not_found"), (405, "method_not_allowed"), (409, "conflict"), (413, "payload_too_large"),
    (501, "not_supported"),
])
def test_client_errors_are_not_retried(
    server: FaultServer, make_client: ClientFactory, sleeps: List[float], status: int, code: str
) -> None:
    server.queue(fail(status, code, f"{code} happened"), ok())
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client().output({"x": 1})
    assert info.value.status_code == status
    assert info.value.code == code
    assert len(server.requests) == 1
    assert sleeps == []


def test_502_backend_error_is_final(server: FaultServer, make_client: ClientFactory, sleeps: List[float]) -> None:
    # The runtime's own 502: the backend answered something definite and wrong (docs/api.md section 3).
    server.queue(fail(502, "backend_error", "the backend answered 500"), ok({"a": 1}))
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client().input()
    assert info.value.status_code == 502
    assert info.value.code == "backend_error"
    assert info.value.message == "the backend answered 500"
    assert len(server.requests) == 1
    assert sleeps == []


def test_502_without_envelope_is_still_retried_for_get(
    server: FaultServer, make_client: ClientFactory, sleeps: List[float]
) -> None:
    # A 502 from a proxy in front of the runtime says nothing about the backend: retried.
    server.queue(Answer(502, b"<html>502 Bad Gateway</html>"), ok({"a": 1}))
    assert make_client().input() == {"a": 1}
    assert [r.method for r in server.requests] == ["GET", "GET"]
    assert len(sleeps) == 1


def test_connection_refused_is_retried_and_reported(
    make_client: ClientFactory, sleeps: List[float], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens here
    client = make_client(api_url=f"http://127.0.0.1:{port}", debug=True)
    with pytest.raises(cronium.CroniumConnectionError) as info:
        client.input()
    assert "connection refused" in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    attempts = [line for line in capsys.readouterr().err.splitlines() if "connection refused" in line]
    assert len(attempts) == 3
    assert len(sleeps) == 2


def test_connection_refused_then_server_comes_up(monkeypatch: pytest.MonkeyPatch, make_client: ClientFactory) -> None:
    port = free_port()
    started: List[FaultServer] = []

    def sleep_and_start(delay: float) -> None:
        if not started:
            srv = FaultServer(port).start()
            srv.queue(ok({"hello": "again"}))
            started.append(srv)

    monkeypatch.setattr(_transport, "_sleep", sleep_and_start)
    try:
        assert make_client(api_url=f"http://127.0.0.1:{port}").input() == {"hello": "again"}
        assert len(started) == 1  # exactly one failed attempt before the server existed
        assert len(started[0].requests) == 1
    finally:
        for srv in started:
            srv.stop()


def test_refused_increment_is_retried(monkeypatch: pytest.MonkeyPatch, make_client: ClientFactory) -> None:
    # A refused connection never reached the service, so even a non-idempotent call retries.
    port = free_port()
    started: List[FaultServer] = []

    def sleep_and_start(delay: float) -> None:
        if not started:
            srv = FaultServer(port).start()
            srv.queue(ok({"key": "n", "value": 1}))
            started.append(srv)

    monkeypatch.setattr(_transport, "_sleep", sleep_and_start)
    try:
        assert make_client(api_url=f"http://127.0.0.1:{port}").increment_variable("n") == 1
    finally:
        for srv in started:
            srv.stop()


def test_timeout_raises_timeout_error(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(Answer(200, {"success": True, "data": 1}, delay=5.0))
    started = time.monotonic()
    with pytest.raises(cronium.CroniumTimeoutError) as info:
        make_client(timeout=0.3, max_attempts=1).input()
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    assert "0.3 s" in str(info.value)
    assert len(server.requests) == 1


def test_timeout_is_retried_for_reads(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(Answer(200, {"success": True, "data": "late"}, delay=5.0), ok("on time"))
    assert make_client(timeout=0.3).input() == "on time"
    assert len(server.requests) == 2


@pytest.mark.parametrize("call", ["increment", "tool"])
def test_non_idempotent_calls_are_not_repeated_after_timeout_or_500(
    server: FaultServer, make_client: ClientFactory, sleeps: List[float], call: str
) -> None:
    def run(client: cronium.Cronium) -> Any:
        if call == "increment":
            return client.increment_variable("n", 1)
        return client.send_email("a@example.test", "s", "b")

    server.queue(Answer(200, {"success": True, "data": {"key": "n", "value": 1}}, delay=5.0))
    with pytest.raises(cronium.CroniumTimeoutError):
        run(make_client(timeout=0.3))
    assert len(server.requests) == 1

    server.queue(fail(500, "internal", "bug"))
    with pytest.raises(cronium.CroniumAPIError) as info:
        run(make_client())
    assert info.value.status_code == 500
    assert len(server.requests) == 2
    assert sleeps == []

    # 429 and 503 mean the service did not act: those are retried.
    server.queue(fail(429, "rate_limited", "slow down"), fail(503, "backend_unavailable", "down"),
                 ok({"key": "n", "value": 2}))
    run(make_client())
    assert len(server.requests) == 5


def test_retry_after_is_honoured(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(fail(429, "rate_limited", "slow down", {"Retry-After": "1"}), ok([1, 2]))
    started = time.monotonic()
    assert make_client(retry_delay=0.01).input() == [1, 2]
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 3.0
    assert len(server.requests) == 2


def test_retry_after_replaces_backoff(server: FaultServer, make_client: ClientFactory, sleeps: List[float]) -> None:
    server.queue(fail(503, "cache_unavailable", "down", {"Retry-After": "0.75"}), ok(True))
    assert make_client(retry_delay=0.01).input() is True
    assert sleeps == [0.75]


def test_retry_after_above_the_limit_raises_at_once(
    server: FaultServer, make_client: ClientFactory, sleeps: List[float]
) -> None:
    server.queue(fail(429, "rate_limited", "slow down", {"Retry-After": "120"}), ok())
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client(max_retry_delay=5).input()
    assert info.value.status_code == 429
    assert info.value.retry_after == 120
    assert sleeps == []
    assert len(server.requests) == 1


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert _transport.parse_retry_after("3", now) == 3.0
    assert _transport.parse_retry_after(" 0 ", now) == 0.0
    assert _transport.parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert _transport.parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "-1", "nan"):
        assert _transport.parse_retry_after(bad, now) is None


# -- error shapes -------------------------------------------------------------


def test_api_error_fields(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(fail(409, "conflict", "variable 'n' is not a number"))
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client().increment_variable("n")
    err = info.value
    assert isinstance(err, cronium.CroniumError)
    assert err.status_code == 409
    assert err.code == "conflict"
    assert err.message == "variable 'n' is not a number"
    assert err.error == "Conflict"
    assert err.method == "POST"
    assert err.path == "/executions/exec-1/variables/n/increment"
    assert err.request_id == server.requests[0].headers["X-Request-Id"]
    assert err.retry_after is None
    assert "409" in str(err) and "conflict" in str(err) and "not a number" in str(err)


def test_error_without_envelope(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(Answer(502, b"<html><body>Bad   gateway\nfrom proxy</body></html>"))
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client(max_attempts=1).input()
    assert info.value.status_code == 502
    assert info.value.code is None
    assert info.value.message == "<html><body>Bad gateway from proxy</body></html>"


def test_success_false_in_a_2xx_is_an_error_and_not_retried(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(Answer(200, {"success": False, "error": "Bad Request", "message": "nope", "code": "odd"}))
    with pytest.raises(cronium.CroniumAPIError) as info:
        make_client().input()
    assert (info.value.status_code, info.value.code, info.value.message) == (200, "odd", "nope")
    assert len(server.requests) == 1


def test_non_json_success_is_a_protocol_error(server: FaultServer, make_client: ClientFactory) -> None:
    server.queue(Answer(200, b"hello"))
    with pytest.raises(cronium.CroniumProtocolError):
        make_client().input()
    assert len(server.requests) == 1


def test_missing_variable_only_for_variable_not_found(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client()
    server.queue(fail(404, "variable_not_found", "variable not found"))
    assert client.get_variable("nope") is None
    server.queue(fail(404, "execution_not_found", "execution not found"))
    with pytest.raises(cronium.CroniumAPIError) as info:
        client.get_variable("nope")
    assert info.value.code == "execution_not_found"
    server.queue(fail(404, "not_found", "no route"))  # a wrong base URL must not look like "missing"
    with pytest.raises(cronium.CroniumAPIError):
        client.get_variable("nope")
    server.queue(fail(404, "variable_not_found", "variable not found"))
    assert client.delete_variable("nope") is False
    server.queue(Answer(404))
    assert client.variable_exists("nope") is False
    server.queue(Answer(200))
    assert client.variable_exists("yes") is True
    assert [r.method for r in server.requests] == ["GET"] * 3 + ["DELETE", "HEAD", "HEAD"]


# -- debug output and secrecy -------------------------------------------------


def test_debug_prints_method_path_status_duration(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRONIUM_RUNTIME_API", server.url)
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN)
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "exec/1")
    monkeypatch.setenv("CRONIUM_DEBUG", "1")
    server.queue(fail(503, "backend_unavailable", "down"), ok({"k": 1}))
    client = cronium.Cronium(retry_delay=0.01)
    assert client.input() == {"k": 1}
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[cronium] GET /executions/exec%2F1/input -> 503 in ")
    assert lines[0].endswith(" ms")
    assert "retrying in" in lines[1]
    assert lines[2].startswith("[cronium] GET /executions/exec%2F1/input -> 200 in ")
    assert TOKEN not in captured.err


def test_no_debug_output_by_default(server: FaultServer, make_client: ClientFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server.queue(fail(503, "backend_unavailable", "down"), ok(1))
    assert make_client(debug=None).input() == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_token_is_sent_but_never_shown(
    server: FaultServer, make_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    texts: List[str] = []

    def record(exc: BaseException) -> None:
        texts.append(str(exc))
        texts.append(repr(exc))
        texts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    client = make_client(debug=True, max_attempts=2)
    texts += [repr(client), repr(client.settings), str(client.settings), repr(cronium.AsyncCronium(client=client))]

    server.queue(fail(401, "invalid_token", "invalid token"))
    with pytest.raises(cronium.CroniumAPIError) as e1:
        client.input()
    record(e1.value)
    assert server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"

    # A (misbehaving) server that echoes the token back in its message.
    server.queue(fail(400, "invalid_body", f"bad header Bearer {TOKEN}"))
    with pytest.raises(cronium.CroniumAPIError) as e2:
        client.output(1)
    record(e2.value)
    assert "[redacted]" in e2.value.message

    server.queue(Answer(502, f"<p>{TOKEN}</p>".encode()), Answer(502, f"<p>{TOKEN}</p>".encode()))
    with pytest.raises(cronium.CroniumAPIError) as e3:
        client.input()
    record(e3.value)

    server.queue(Answer(200, {"success": True}, delay=5.0), Answer(200, {"success": True}, delay=5.0))
    with pytest.raises(cronium.CroniumTimeoutError) as e4:
        make_client(timeout=0.2, max_attempts=1, debug=True).input()
    record(e4.value)

    with pytest.raises(cronium.CroniumConnectionError) as e5:
        make_client(api_url=f"http://127.0.0.1:{free_port()}", debug=True, max_attempts=1).input()
    record(e5.value)

    with pytest.raises(ValueError) as e6:
        cronium.Cronium(server.url, TOKEN + "\n\x00", "exec-1")
    record(e6.value)

    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert captured.err.count("[cronium]") >= 5  # the debug output really was produced
    for text in texts:
        assert TOKEN not in text


def test_bad_token_from_env_is_reported_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN + " \x01broken")
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "e")
    with pytest.raises(cronium.CroniumConfigError) as info:
        cronium.get_variable("k")
    assert "not allowed in an HTTP header" in str(info.value)
    assert TOKEN not in str(info.value)


# -- URLs and request shapes --------------------------------------------------


def test_base_url_path_prefix_is_kept(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client(api_url=server.url + "/proxy/cronium-runtime/")
    client.set_variable("a/b", 1)
    client.execute_tool_action("t", "a", {})
    assert [r.path for r in server.requests] == [
        "/proxy/cronium-runtime/executions/exec-1/variables/a%2Fb",
        "/proxy/cronium-runtime/tool-actions/execute",
    ]


def test_every_call_hits_its_endpoint(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client(execution_id="ex 1/é")
    e = "/executions/ex%201%2F%C3%A9"
    server.queue(
        ok({"in": 1}), ok(), ok("out"), ok({"event": {"name": "n"}, "executionId": "x"}),
        ok({"event": {"name": "n"}}), ok("n"), ok(), ok({"condition": False}),
        ok({"key": "k", "value": 0}), ok(), Answer(200), ok(), ok({"key": "k", "value": 2.5}),
        ok({"success": True, "data": {"r": 1}}),
    )
    assert client.input() == {"in": 1}
    assert client.output({"o": [1, None]}) is None
    assert client.get_output() == "out"
    assert client.context() == {"event": {"name": "n"}, "executionId": "x"}
    assert client.event() == {"name": "n"}
    assert client.context("event.name") == "n"
    assert client.set_condition(True) is None
    assert client.get_condition() is False
    assert client.get_variable("k") == 0
    assert client.set_variable("k", False) is None
    assert client.variable_exists("k") is True
    assert client.delete_variable("k") is True
    assert client.increment_variable("k", 2.5) == 2.5
    assert client.execute_tool_action("slack", "post", {"text": "hi"}) == {"success": True, "data": {"r": 1}}
    got = [(r.method, r.path, r.json() if r.body else None) for r in server.requests]
    assert got == [
        ("GET", f"{e}/input", None),
        ("POST", f"{e}/output", {"data": {"o": [1, None]}}),
        ("GET", f"{e}/output", None),
        ("GET", f"{e}/context", None),
        ("GET", f"{e}/context", None),
        ("GET", f"{e}/context?field=event.name", None),
        ("POST", f"{e}/condition", {"condition": True}),
        ("GET", f"{e}/condition", None),
        ("GET", f"{e}/variables/k", None),
        ("PUT", f"{e}/variables/k", {"value": False}),
        ("HEAD", f"{e}/variables/k", None),
        ("DELETE", f"{e}/variables/k", None),
        ("POST", f"{e}/variables/k/increment", {"by": 2.5}),
        ("POST", "/tool-actions/execute", {"tool": "slack", "action": "post", "params": {"text": "hi"}}),
    ]
    for seen in server.requests:
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
        assert seen.headers["Accept"] == "application/json"
        if seen.body:
            assert seen.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("key,encoded", [
    ("a/b", "a%2Fb"),
    ("with space?&#=", "with%20space%3F%26%23%3D"),
    ("100%", "100%25"),
    ("ключ/ü", "%D0%BA%D0%BB%D1%8E%D1%87%2F%C3%BC"),
    ("..", "%2E%2E"),
    (".", "%2E"),
    ("a.b", "a.b"),
])
def test_keys_are_percent_encoded(server: FaultServer, make_client: ClientFactory, key: str, encoded: str) -> None:
    make_client().set_variable(key, 1)
    assert server.requests[0].path == f"/executions/exec-1/variables/{encoded}"


def test_unicode_and_falsy_values_are_sent_exactly(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client()
    values: List[Any] = [0, False, "", None, [], {}, "ünï ✓ 🚀", {"a": {"b": [0, False, None, ""]}}, -1.5]
    for value in values:
        client.set_variable("v", value)
    assert [r.json()["value"] for r in server.requests] == values
    assert [type(r.json()["value"]) for r in server.requests] == [type(v) for v in values]


def test_messaging_shortcuts_send_the_reference_params(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client()
    client.send_email("a@example.test", "Subject ✓", "Body", cc=["c@example.test"], html=True)
    client.send_email(["x@example.test", "y@example.test"], "S", "B", bcc="z@example.test", priority="high")
    client.send_slack_message("#general", "hello", username="bot", icon_emoji=":robot:")
    client.send_discord_message("12345", "hi", embeds=[{"title": "T"}])
    assert [r.json() for r in server.requests] == [
        {"tool": "email", "action": "send_message",
         "params": {"to": ["a@example.test"], "subject": "Subject ✓", "body": "Body",
                    "cc": ["c@example.test"], "html": True}},
        {"tool": "email", "action": "send_message",
         "params": {"priority": "high", "to": ["x@example.test", "y@example.test"], "subject": "S",
                    "body": "B", "bcc": ["z@example.test"]}},
        {"tool": "slack", "action": "send_message",
         "params": {"channel": "#general", "text": "hello", "username": "bot", "icon_emoji": ":robot:"}},
        {"tool": "discord", "action": "send_message",
         "params": {"channelId": "12345", "content": "hi", "embeds": [{"title": "T"}]}},
    ]


def test_argument_checks_happen_before_any_request(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(TypeError):
        client.set_condition(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.increment_variable("n", True)
    with pytest.raises(TypeError):
        client.increment_variable("n", "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.get_variable("")
    with pytest.raises(ValueError):
        client.set_variable("k", float("nan"))
    with pytest.raises(TypeError):
        client.set_variable("k", object())
    assert server.requests == []


def test_client_is_thread_safe(server: FaultServer, make_client: ClientFactory) -> None:
    client = make_client()
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            client.set_variable(f"k{i}", i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    assert sorted(r.json()["value"] for r in server.requests) == list(range(20))
