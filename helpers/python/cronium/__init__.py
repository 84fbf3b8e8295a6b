"""Cronium helper SDK for Python job scripts.

    import cronium

    data = cronium.input()
    count = cronium.increment_variable("runs")
    cronium.output({"runs": count})

The module-level functions use a default :class:`Cronium` client created on first
use from the environment (``CRONIUM_RUNTIME_API``, ``CRONIUM_EXECUTION_TOKEN``,
``CRONIUM_EXECUTION_ID``).  Importing this module never fails, raises or exits: a
missing setting is reported by the first call as :class:`CroniumConfigError`.

``async_input()``, ``async_get_variable()`` ... are the awaitable forms; the
camelCase names (``getVariable`` ...) are aliases of the snake_case ones.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ._async import AsyncCronium
from ._client import Cronium, Number
from ._errors import (
    CroniumAPIError,
    CroniumConfigError,
    CroniumConnectionError,
    CroniumError,
    CroniumProtocolError,
    CroniumTimeoutError,
)
from ._settings import Settings
from ._version import __version__

# `input` is left out of __all__ on purpose: a star import must not shadow the
# builtin.  Call it as `cronium.input()`.
__all__ = [
    "__version__",
    "Cronium",
    "AsyncCronium",
    "Settings",
    "CroniumError",
    "CroniumConfigError",
    "CroniumAPIError",
    "CroniumConnectionError",
    "CroniumTimeoutError",
    "CroniumProtocolError",
    "get_client",
    "configure",
    "output",
    "get_output",
    "context",
    "event",
    "set_condition",
    "get_condition",
    "get_variable",
    "set_variable",
    "variable_exists",
    "delete_variable",
    "increment_variable",
    "execute_tool_action",
    "send_email",
    "send_slack_message",
    "send_discord_message",
    "async_input",
    "async_output",
    "async_get_output",
    "async_context",
    "async_event",
    "async_set_condition",
    "async_get_condition",
    "async_get_variable",
    "async_set_variable",
    "async_variable_exists",
    "async_delete_variable",
    "async_increment_variable",
    "async_execute_tool_action",
    "async_send_email",
    "async_send_slack_message",
    "async_send_discord_message",
    "getOutput",
    "setCondition",
    "getCondition",
    "getVariable",
    "setVariable",
    "variableExists",
    "deleteVariable",
    "incrementVariable",
    "executeToolAction",
    "sendEmail",
    "sendSlackMessage",
    "sendDiscordMessage",
]

_default_client: Optional[Cronium] = None
_default_lock = threading.Lock()


def get_client() -> Cronium:
    """The default client, created from the environment on first use."""
    global _default_client
    client = _default_client
    if client is None:
        with _default_lock:
            if _default_client is None:
                _default_client = Cronium()
            client = _default_client
    return client


def configure(
    api_url: Optional[str] = None,
    token: Optional[str] = None,
    execution_id: Optional[str] = None,
    *,
    timeout: Optional[float] = None,
    max_attempts: Optional[int] = None,
    retry_delay: Optional[float] = None,
    max_retry_delay: Optional[float] = None,
    debug: Optional[bool] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Cronium:
    """Replace the default client (arguments as for :class:`Cronium`) and return it.

    ``configure()`` with no arguments re-reads the environment.
    """
    global _default_client
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
    with _default_lock:
        _default_client = client
    return client


def __getattr__(name: str) -> str:
    # Module-level read-only "properties": cronium.execution_id / cronium.executionId.
    if name in ("execution_id", "executionId"):
        return get_client().execution_id
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- synchronous module-level API ---------------------------------------------


def input() -> Any:  # noqa: A001 - the name scripts already use
    """The execution's input, or ``None``."""
    return get_client().input()


def output(data: Any) -> None:
    """Set the execution's output."""
    get_client().output(data)


def get_output() -> Any:
    """The output last set, or ``None``."""
    return get_client().get_output()


def context(field: Optional[str] = None) -> Any:
    """The execution context, or one dotted field of it."""
    return get_client().context(field)


def event() -> Optional[Dict[str, Any]]:
    """The event that started this execution, or ``None``."""
    return get_client().event()


def set_condition(condition: bool) -> None:
    """Set the execution's condition."""
    get_client().set_condition(condition)


def get_condition() -> Optional[bool]:
    """The condition last set, or ``None``."""
    return get_client().get_condition()


def get_variable(key: str) -> Any:
    """A variable's value, or ``None`` if it does not exist."""
    return get_client().get_variable(key)


def set_variable(key: str, value: Any) -> None:
    """Store a variable (any JSON value)."""
    get_client().set_variable(key, value)


def variable_exists(key: str) -> bool:
    """True if the variable exists."""
    return get_client().variable_exists(key)


def delete_variable(key: str) -> bool:
    """Delete a variable; True if it existed."""
    return get_client().delete_variable(key)


def increment_variable(key: str, by: Number = 1) -> Number:
    """Atomically add ``by`` to a numeric variable and return the new value."""
    return get_client().increment_variable(key, by)


def execute_tool_action(tool: str, action: str, params: Optional[Mapping[str, Any]] = None) -> Any:
    """Run a tool action and return the backend's result object."""
    return get_client().execute_tool_action(tool, action, params)


def send_email(
    to: Union[str, Sequence[str]],
    subject: str,
    body: str,
    *,
    cc: Optional[Union[str, Sequence[str]]] = None,
    bcc: Optional[Union[str, Sequence[str]]] = None,
    html: Optional[bool] = None,
    **extra: Any,
) -> Any:
    """Send an email through the ``email`` tool."""
    return get_client().send_email(to, subject, body, cc=cc, bcc=bcc, html=html, **extra)


def send_slack_message(
    channel: str,
    text: str,
    *,
    username: Optional[str] = None,
    icon_emoji: Optional[str] = None,
    icon_url: Optional[str] = None,
    **extra: Any,
) -> Any:
    """Post a Slack message through the ``slack`` tool."""
    return get_client().send_slack_message(
        channel, text, username=username, icon_emoji=icon_emoji, icon_url=icon_url, **extra
    )


def send_discord_message(
    channel_id: str,
    content: str,
    *,
    embeds: Optional[Sequence[Mapping[str, Any]]] = None,
    **extra: Any,
) -> Any:
    """Post a Discord message through the ``discord`` tool."""
    return get_client().send_discord_message(channel_id, content, embeds=embeds, **extra)


# -- async module-level API ---------------------------------------------------


def _async_client() -> AsyncCronium:
    return AsyncCronium(client=get_client())


async def async_input() -> Any:
    return await _async_client().input()


async def async_output(data: Any) -> None:
    await _async_client().output(data)


async def async_get_output() -> Any:
    return await _async_client().get_output()


async def async_context(field: Optional[str] = None) -> Any:
    return await _async_client().context(field)


async def async_event() -> Optional[Dict[str, Any]]:
    return await _async_client().event()


async def async_set_condition(condition: bool) -> None:
    await _async_client().set_condition(condition)


async def async_get_condition() -> Optional[bool]:
    return await _async_client().get_condition()


async def async_get_variable(key: str) -> Any:
    return await _async_client().get_variable(key)


async def async_set_variable(key: str, value: Any) -> None:
    await _async_client().set_variable(key, value)


async def async_variable_exists(key: str) -> bool:
    return await _async_client().variable_exists(key)


async def async_delete_variable(key: str) -> bool:
    return await _async_client().delete_variable(key)


async def async_increment_variable(key: str, by: Number = 1) -> Number:
    return await _async_client().increment_variable(key, by)


async def async_execute_tool_action(
    tool: str, action: str, params: Optional[Mapping[str, Any]] = None
) -> Any:
    return await _async_client().execute_tool_action(tool, action, params)


async def async_send_email(
    to: Union[str, Sequence[str]],
    subject: str,
    body: str,
    *,
    cc: Optional[Union[str, Sequence[str]]] = None,
    bcc: Optional[Union[str, Sequence[str]]] = None,
    html: Optional[bool] = None,
    **extra: Any,
) -> Any:
    return await _async_client().send_email(to, subject, body, cc=cc, bcc=bcc, html=html, **extra)


async def async_send_slack_message(
    channel: str,
    text: str,
    *,
    username: Optional[str] = None,
    icon_emoji: Optional[str] = None,
    icon_url: Optional[str] = None,
    **extra: Any,
) -> Any:
    return await _async_client().send_slack_message(
        channel, text, username=username, icon_emoji=icon_emoji, icon_url=icon_url, **extra
    )


async def async_send_discord_message(
    channel_id: str,
    content: str,
    *,
    embeds: Optional[Sequence[Mapping[str, Any]]] = None,
    **extra: Any,
) -> Any:
    return await _async_client().send_discord_message(channel_id, content, embeds=embeds, **extra)


# -- camelCase aliases (the names the public docs use) ------------------------

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
