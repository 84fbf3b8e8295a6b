"""Async counterparts: the same calls, awaited, without blocking the event loop.

Each call runs the synchronous client in the event loop's default thread pool
(``asyncio.to_thread``), so other coroutines keep running while the HTTP request
is in flight.  No third-party async HTTP library is needed.  Cancelling the awaiting
task stops the wait, but a request already sent still completes in its thread.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Dict, Mapping, Optional, Sequence, Type, Union

from ._client import Cronium, Number
from ._settings import Settings


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

    async def input(self) -> Any:
        return await asyncio.to_thread(self._client.input)

    async def output(self, data: Any) -> None:
        await asyncio.to_thread(self._client.output, data)

    async def get_output(self) -> Any:
        return await asyncio.to_thread(self._client.get_output)

    async def context(self, field: Optional[str] = None) -> Any:
        return await asyncio.to_thread(self._client.context, field)

    async def event(self) -> Optional[Dict[str, Any]]:
        return await asyncio.to_thread(self._client.event)

    async def set_condition(self, condition: bool) -> None:
        await asyncio.to_thread(self._client.set_condition, condition)

    async def get_condition(self) -> Optional[bool]:
        return await asyncio.to_thread(self._client.get_condition)

    async def get_variable(self, key: str) -> Any:
        return await asyncio.to_thread(self._client.get_variable, key)

    async def set_variable(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self._client.set_variable, key, value)

    async def variable_exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._client.variable_exists, key)

    async def delete_variable(self, key: str) -> bool:
        return await asyncio.to_thread(self._client.delete_variable, key)

    async def increment_variable(self, key: str, by: Number = 1) -> Number:
        return await asyncio.to_thread(self._client.increment_variable, key, by)

    async def execute_tool_action(
        self, tool: str, action: str, params: Optional[Mapping[str, Any]] = None
    ) -> Any:
        return await asyncio.to_thread(self._client.execute_tool_action, tool, action, params)

    async def send_email(
        self,
        to: Union[str, Sequence[str]],
        subject: str,
        body: str,
        *,
        cc: Optional[Union[str, Sequence[str]]] = None,
        bcc: Optional[Union[str, Sequence[str]]] = None,
        html: Optional[bool] = None,
        **extra: Any,
    ) -> Any:
        return await asyncio.to_thread(
            lambda: self._client.send_email(to, subject, body, cc=cc, bcc=bcc, html=html, **extra)
        )

    async def send_slack_message(
        self,
        channel: str,
        text: str,
        *,
        username: Optional[str] = None,
        icon_emoji: Optional[str] = None,
        icon_url: Optional[str] = None,
        **extra: Any,
    ) -> Any:
        return await asyncio.to_thread(
            lambda: self._client.send_slack_message(
                channel, text, username=username, icon_emoji=icon_emoji, icon_url=icon_url, **extra
            )
        )

    async def send_discord_message(
        self,
        channel_id: str,
        content: str,
        *,
        embeds: Optional[Sequence[Mapping[str, Any]]] = None,
        **extra: Any,
    ) -> Any:
        return await asyncio.to_thread(
            lambda: self._client.send_discord_message(channel_id, content, embeds=embeds, **extra)
        )

    getOutput = get_output
    setCondition = set_condition
    getCondition = get_condition
    getVariable = get_variable
    setVariable = set_variable
    variableExists = variable_exists
    deleteVariable = delete_variable
    incrementVariable = increment_variable
    executeToolAction = execute_tool_action
    sendEmail = send_email
    sendSlackMessage = send_slack_message
    sendDiscordMessage = send_discord_message
