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

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, Optional, TypeVar

from ._async import AsyncCronium
from ._client import Cronium
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

if TYPE_CHECKING:  # typing_extensions only for the type checker (Python 3.9 has no ParamSpec)
    from typing_extensions import Concatenate, ParamSpec

    _P = ParamSpec("_P")
_R = TypeVar("_R")

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
    "append_variable",
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
    "async_append_variable",
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
    "appendVariable",
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


def __getattr__(name: str) -> Any:
    # Module-level read-only "properties": cronium.execution_id / cronium.executionId, and
    # `cronium`, the default client, for the original helper's `from cronium import cronium`.
    if name in ("execution_id", "executionId"):
        return get_client().execution_id
    if name == "cronium":
        return get_client()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- module-level API -----------------------------------------------------------
# Each function is the default client's method, synchronous or awaited: the
# request itself is built in one place, Cronium.


def _on_default(method: "Callable[Concatenate[Cronium, _P], _R]") -> "Callable[_P, _R]":
    name = method.__name__

    def call(*args: "_P.args", **kwargs: "_P.kwargs") -> _R:
        bound: "Callable[_P, _R]" = getattr(get_client(), name)
        return bound(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


def _on_default_async(
    method: "Callable[Concatenate[Cronium, _P], _R]",
) -> "Callable[_P, Coroutine[Any, Any, _R]]":
    name = method.__name__

    async def call(*args: "_P.args", **kwargs: "_P.kwargs") -> _R:
        bound: "Callable[_P, _R]" = getattr(get_client(), name)
        return await asyncio.to_thread(bound, *args, **kwargs)

    call.__name__ = call.__qualname__ = "async_" + name
    call.__doc__ = method.__doc__
    return call


input = _on_default(Cronium.input)  # noqa: A001 - the name scripts already use
output = _on_default(Cronium.output)
get_output = _on_default(Cronium.get_output)
context = _on_default(Cronium.context)
event = _on_default(Cronium.event)
set_condition = _on_default(Cronium.set_condition)
get_condition = _on_default(Cronium.get_condition)
get_variable = _on_default(Cronium.get_variable)
set_variable = _on_default(Cronium.set_variable)
variable_exists = _on_default(Cronium.variable_exists)
delete_variable = _on_default(Cronium.delete_variable)
increment_variable = _on_default(Cronium.increment_variable)
append_variable = _on_default(Cronium.append_variable)
execute_tool_action = _on_default(Cronium.execute_tool_action)
send_email = _on_default(Cronium.send_email)
send_slack_message = _on_default(Cronium.send_slack_message)
send_discord_message = _on_default(Cronium.send_discord_message)

async_input = _on_default_async(Cronium.input)
async_output = _on_default_async(Cronium.output)
async_get_output = _on_default_async(Cronium.get_output)
async_context = _on_default_async(Cronium.context)
async_event = _on_default_async(Cronium.event)
async_set_condition = _on_default_async(Cronium.set_condition)
async_get_condition = _on_default_async(Cronium.get_condition)
async_get_variable = _on_default_async(Cronium.get_variable)
async_set_variable = _on_default_async(Cronium.set_variable)
async_variable_exists = _on_default_async(Cronium.variable_exists)
async_delete_variable = _on_default_async(Cronium.delete_variable)
async_increment_variable = _on_default_async(Cronium.increment_variable)
async_append_variable = _on_default_async(Cronium.append_variable)
async_execute_tool_action = _on_default_async(Cronium.execute_tool_action)
async_send_email = _on_default_async(Cronium.send_email)
async_send_slack_message = _on_default_async(Cronium.send_slack_message)
async_send_discord_message = _on_default_async(Cronium.send_discord_message)


# -- camelCase aliases (the names the public docs use) ------------------------

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
