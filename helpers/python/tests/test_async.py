"""The async forms: same results, and the event loop keeps running during a request."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

import cronium
from conftest import TOKEN
from support import Answer, FaultServer, fail, ok


def test_async_call_does_not_block_the_loop(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONIUM_RUNTIME_API", server.url)
    monkeypatch.setenv("CRONIUM_EXECUTION_TOKEN", TOKEN)
    monkeypatch.setenv("CRONIUM_EXECUTION_ID", "exec-a")
    server.queue(Answer(200, {"success": True, "data": {"slow": True}}, delay=0.5))

    async def main() -> Any:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        result = await cronium.async_input()
        done.set()
        await task
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == {"slow": True}
    assert ticks >= 15  # ~50 expected in 0.5 s; a blocked loop gives 1


def test_async_calls_run_concurrently(server: FaultServer) -> None:
    server.default = Answer(200, {"success": True, "data": {"key": "k", "value": 1}}, delay=0.4)
    client = cronium.AsyncCronium(server.url, TOKEN, "exec-a", max_attempts=1)

    async def main() -> List[Any]:
        return list(await asyncio.gather(*(client.get_variable(f"k{i}") for i in range(5))))

    started = time.monotonic()
    assert asyncio.run(main()) == [1] * 5
    assert time.monotonic() - started < 1.5  # serial would take 2 s
    assert len(server.requests) == 5


def test_async_forms_hit_the_same_endpoints(server: FaultServer) -> None:
    server.queue(
        ok(None, with_data=False), ok({"key": "k", "value": 0}), Answer(404), ok({"key": "k", "value": 3}),
        ok({"condition": True}), ok({"event": None}), ok({"success": True}),
        fail(404, "variable_not_found", "missing"),
    )

    async def main() -> List[Any]:
        async with cronium.AsyncCronium(server.url, TOKEN, "e1") as client:
            assert client.execution_id == "e1"
            return [
                await client.input(),
                await client.getVariable("k"),
                await client.variable_exists("k"),
                await client.increment_variable("k", 3),
                await client.get_condition(),
                await client.event(),
                await client.send_slack_message("#c", "t"),
                await client.delete_variable("k"),
            ]

    assert asyncio.run(main()) == [{}, 0, False, 3, True, {}, {"success": True}, False]
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/executions/e1/input"),
        ("GET", "/executions/e1/variables/k"),
        ("HEAD", "/executions/e1/variables/k"),
        ("POST", "/executions/e1/variables/k/increment"),
        ("GET", "/executions/e1/condition"),
        ("GET", "/executions/e1/context"),
        ("POST", "/tool-actions/execute"),
        ("DELETE", "/executions/e1/variables/k"),
    ]


def test_async_errors_are_the_same_exceptions(server: FaultServer) -> None:
    server.queue(fail(403, "execution_mismatch", "token is for another execution"))
    client = cronium.AsyncCronium(server.url, TOKEN, "e1")
    with pytest.raises(cronium.CroniumAPIError) as info:
        asyncio.run(client.output({"a": 1}))
    assert (info.value.status_code, info.value.code) == (403, "execution_mismatch")
    assert len(server.requests) == 1


def test_async_module_functions_report_missing_settings() -> None:
    with pytest.raises(cronium.CroniumConfigError):
        asyncio.run(cronium.async_get_variable("k"))
