"""Async counterparts: the same calls, awaited, without blocking the event loop.

Each call runs the synchronous client in the event loop's default thread pool
(``asyncio.to_thread``), so other coroutines keep running while the HTTP request
is in flight.  No third-party async HTTP library is needed.  Cancelling the awaiting
task stops the wait, but a request already sent still completes in its thread.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, Optional, Type, TypeVar

from ._client import Cronium
from ._settings import Settings

if TYPE_CHECKING:  # typing_extensions only for the type checker (Python 3.9 has no ParamSpec)
    from typing_extensions import Concatenate, ParamSpec

    _P = ParamSpec("_P")
_R = TypeVar("_R")


def in_thread(
    method: "Callable[Concatenate[Cronium, _P], _R]",
) -> "Callable[Concatenate[AsyncCronium, _P], Coroutine[Any, Any, _R]]":
    """The awaitable form of a :class:`Cronium` method, for :class:`AsyncCronium`."""
    name = method.__name__

    async def call(self: "AsyncCronium", /, *args: "_P.args", **kwargs: "_P.kwargs") -> _R:
        bound: "Callable[_P, _R]" = getattr(self._client, name)
        return await asyncio.to_thread(bound, *args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"AsyncCronium.{name}"
    call.__doc__ = method.__doc__
    return call


class AsyncCronium:
    """Async client.  Takes a :class:`Cronium` to wrap, or the same arguments as it."""

    def __init__(
        self,
        api_url: Optional[str] = None,
        token: Optional[str] = None,
        execution_id: Optional[str] = None,
        *,
        client: Optional[Cronium] = None,
        timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        retry_delay: Optional[float] = None,
        max_retry_delay: Optional[float] = None,
        debug: Optional[bool] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        if client is None:
            client = Cronium(
                api_url,
                token,
                execution_id,
                timeout=timeout,
                max_attempts=max_attempts,
                retry_delay=retry_delay,
                max_retry_delay=max_retry_delay,
                debug=debug,
                env=env,
            )
        self._client = client

    def __repr__(self) -> str:
        return f"Async{self._client!r}"

    async def __aenter__(self) -> "AsyncCronium":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release (no connection is kept); kept for ``async with``."""

    @property
    def client(self) -> Cronium:
        """The synchronous client doing the work."""
        return self._client

    @property
    def settings(self) -> Settings:
        return self._client.settings

    @property
    def execution_id(self) -> str:
        return self._client.execution_id

    executionId = execution_id

    # The calls: each is the synchronous client's method run in a worker thread, so the
    # request is built and checked in one place (Cronium) for both forms.
    input = in_thread(Cronium.input)
    output = in_thread(Cronium.output)
    get_output = in_thread(Cronium.get_output)
    context = in_thread(Cronium.context)
    event = in_thread(Cronium.event)
    set_condition = in_thread(Cronium.set_condition)
    get_condition = in_thread(Cronium.get_condition)
    get_variable = in_thread(Cronium.get_variable)
    set_variable = in_thread(Cronium.set_variable)
    variable_exists = in_thread(Cronium.variable_exists)
    delete_variable = in_thread(Cronium.delete_variable)
    increment_variable = in_thread(Cronium.increment_variable)
    append_variable = in_thread(Cronium.append_variable)
    execute_tool_action = in_thread(Cronium.execute_tool_action)
    send_email = in_thread(Cronium.send_email)
    send_slack_message = in_thread(Cronium.send_slack_message)
    send_discord_message = in_thread(Cronium.send_discord_message)

    getOutput = get_output
    setCondition = set_condition
    getCondition = get_condition
    getVariable = get_variable
    setVariable = set_variable
    variableExists = variable_exists
    deleteVariable = delete_variable
    incrementVariable = increment_variable
    appendVariable = append_variable
    executeToolAction = execute_tool_action
    sendEmail = send_email
    sendSlackMessage = send_slack_message
    sendDiscordMessage = send_discord_message
