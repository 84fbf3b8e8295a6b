"""The synchronous client: one method per runtime API endpoint (docs/api.md sections 4 and 9).

Creating a client never raises because of the environment; a missing token or
execution id is reported by the first call as :class:`CroniumConfigError`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from ._errors import CroniumAPIError, CroniumConfigError, CroniumProtocolError
from ._settings import Settings, resolve_settings
from ._transport import NO_BODY, Transport

Number = Union[int, float]

#: Tool action used by the messaging shortcuts (same as the original helpers).
SEND_ACTION = "send_message"


def encode_segment(segment: str) -> str:
    """Percent-encode one path segment: every reserved byte, ``/`` included.

    A segment of only dots is encoded too, so ``.`` and ``..`` reach the service as
    keys instead of being read as relative path steps by something on the way.
    """
    encoded = quote(segment, safe="")
    if encoded.strip(".") == "":
        encoded = encoded.replace(".", "%2E")
    return encoded


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a variable key must be a str, not {type(key).__name__}")
    if key == "":
        raise ValueError("a variable key must not be empty")
    return key


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str")
    return value


def _as_list(value: Union[str, Sequence[str]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


class Cronium:
    """Client for one execution of the Cronium runtime API.

    Every argument left as ``None`` is read from the environment:
    ``CRONIUM_RUNTIME_API`` / ``CRONIUM_API_ENDPOINT`` (default
    ``http://localhost:8081``), ``CRONIUM_EXECUTION_TOKEN`` / ``CRONIUM_API_TOKEN``,
    ``CRONIUM_EXECUTION_ID``, ``CRONIUM_TIMEOUT`` (seconds per attempt, default 30),
    ``CRONIUM_MAX_ATTEMPTS`` (default 3), ``CRONIUM_RETRY_DELAY`` (first backoff,
    default 0.5 s), ``CRONIUM_MAX_RETRY_DELAY`` (longest wait, default 30 s) and
    ``CRONIUM_DEBUG``.  ``env`` replaces ``os.environ`` as the source.

    A client holds no connection and may be shared between threads.
    """

    def __init__(
        self,
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
    ) -> None:
        self._settings = resolve_settings(
            api_url=api_url,
            token=token,
            execution_id=execution_id,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            debug=debug,
            env=env,
        )
        self._transport = Transport(self._settings)

    def __repr__(self) -> str:
        token = "set" if self._settings.has_token else "missing"
        return (
            f"Cronium(api_url={self._settings.api_url!r}, "
            f"execution_id={self._settings.execution_id!r}, token={token})"
        )

    # -- settings ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The resolved settings (their ``repr`` leaves the token out)."""
        return self._settings

    @property
    def api_url(self) -> str:
        """Base URL of the runtime service, without a trailing slash."""
        return self._settings.api_url

    @property
    def execution_id(self) -> str:
        """The execution this client works for; raises if it is not configured."""
        if self._settings.execution_id is None:
            raise CroniumConfigError(
                "the Cronium helper is not configured: no execution id: set CRONIUM_EXECUTION_ID"
            )
        return self._settings.execution_id

    executionId = execution_id

    def _execution_path(self, tail: str) -> str:
        self._transport.check_configured()
        return f"/executions/{encode_segment(self.execution_id)}{tail}"

    def _variable_path(self, key: str, tail: str = "") -> str:
        return self._execution_path(f"/variables/{encode_segment(_check_key(key))}{tail}")

    # -- input, output, context -------------------------------------------------

    def input(self) -> Any:
        """The execution's input; ``{}`` when the job has none (as the public docs say)."""
        data = self._transport.request("GET", self._execution_path("/input")).data
        return {} if data is None else data

    def output(self, data: Any) -> None:
        """Set the execution's output to any JSON value."""
        self._transport.request("POST", self._execution_path("/output"), {"data": data})

    def get_output(self) -> Any:
        """The output last set (``None`` if none was set)."""
        return self._transport.request("GET", self._execution_path("/output")).data

    def context(self, field: Optional[str] = None) -> Any:
        """The execution context (a dict), or one field of it with a dotted path.

        ``context("event.name")`` returns that value, or ``None`` if it is absent.
        """
        tail = "/context"
        if field is not None:
            tail += "?field=" + quote(_check_name(field, "field"), safe=".")
        reply = self._transport.request("GET", self._execution_path(tail))
        if field is None and not isinstance(reply.data, dict):
            raise CroniumProtocolError("the execution context is not a JSON object")
        return reply.data

    def event(self) -> Dict[str, Any]:
        """The event (job definition) that started this execution; ``{}`` when there is none.

        A dict, so ``event.get("name")`` works either way.
        """
        ctx = self.context()
        event = ctx.get("event")
        if event is None:
            return {}
        if not isinstance(event, dict):
            raise CroniumProtocolError("the context's event is not a JSON object")
        return event

    # -- condition --------------------------------------------------------------

    def set_condition(self, condition: bool) -> None:
        """Set the execution's condition (drives conditional workflow steps)."""
        if not isinstance(condition, bool):
            raise TypeError(f"condition must be a bool, not {type(condition).__name__}")
        self._transport.request(
            "POST", self._execution_path("/condition"), {"condition": condition}
        )

    def get_condition(self) -> Optional[bool]:
        """The condition last set, or ``None`` if none was set."""
        data = self._transport.request("GET", self._execution_path("/condition")).data
        if data is None:
            return None
        if not isinstance(data, dict):
            raise CroniumProtocolError("the condition reply is not a JSON object")
        value = data.get("condition")
        if value is not None and not isinstance(value, bool):
            raise CroniumProtocolError("the condition reply does not hold a boolean")
        return value

    # -- variables --------------------------------------------------------------

    def get_variable(self, key: str) -> Any:
        """The variable's value, or ``None`` if it does not exist.

        Use :meth:`variable_exists` to tell a stored ``None`` from a missing variable.
        """
        path = self._variable_path(key)
        try:
            data = self._transport.request("GET", path).data
        except CroniumAPIError as exc:
            if exc.status_code == 404 and exc.code == "variable_not_found":
                return None
            raise
        if not isinstance(data, dict):
            raise CroniumProtocolError("the variable reply is not a JSON object")
        return data.get("value")

    def set_variable(self, key: str, value: Any) -> None:
        """Store any JSON value (``0``, ``False``, ``""`` and ``None`` included)."""
        self._transport.request("PUT", self._variable_path(key), {"value": value})

    def variable_exists(self, key: str) -> bool:
        """True if the variable exists, whatever its value (``None`` and ``False`` too)."""
        path = self._variable_path(key)
        try:
            self._transport.request("HEAD", path)
        except CroniumAPIError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def delete_variable(self, key: str) -> bool:
        """Delete the variable; True if it existed, False if there was nothing to delete."""
        path = self._variable_path(key)
        try:
            self._transport.request("DELETE", path)
        except CroniumAPIError as exc:
            if exc.status_code == 404 and exc.code == "variable_not_found":
                return False
            raise
        return True

    def increment_variable(self, key: str, by: Number = 1) -> Number:
        """Atomically add ``by`` to a numeric variable (a missing one counts as 0).

        Returns the new value.  A non-numeric value raises :class:`CroniumAPIError`
        with status 409 and code ``conflict``.  The request is not repeated after a
        timeout, since the service may already have applied it.
        """
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise TypeError(f"by must be an int or float, not {type(by).__name__}")
        data = self._transport.request(
            "POST", self._variable_path(key, "/increment"), {"by": by}, idempotent=False
        ).data
        value = data.get("value") if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CroniumProtocolError("the increment reply does not hold a number")
        return value

    def append_variable(self, key: str, text: str, separator: str = "") -> Any:
        """Atomically append ``text`` to a string variable, ``separator`` between.

        A missing variable starts empty.  Returns the new value.  A value that is not a
        string raises :class:`CroniumAPIError` with status 409 and code ``conflict``.
        Not repeated after a timeout, since the service may already have applied it.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a str, not {type(separator).__name__}")
        data = self._transport.request(
            "POST",
            self._variable_path(key, "/append"),
            {"value": text, "separator": separator},
            idempotent=False,
        ).data
        return data.get("value") if isinstance(data, dict) else None

    # -- tool actions -----------------------------------------------------------

    def execute_tool_action(
        self, tool: str, action: str, params: Optional[Mapping[str, Any]] = None
    ) -> Any:
        """Run a tool action; returns the backend's result object.

        The result has the backend's shape, ``{"success": bool, "data": ...,
        "error"?: ..., "metadata"?: ...}``: check ``result["success"]``.  The request
        is not repeated after a timeout, so a message is not sent twice.
        """
        body = {
            "tool": _check_name(tool, "tool"),
            "action": _check_name(action, "action"),
            "params": dict(params) if params is not None else {},
        }
        return self._transport.request(
            "POST", "/tool-actions/execute", body, idempotent=False
        ).data

    def send_email(
        self,
        /,
        to: Union[str, Sequence[str]],
        subject: str,
        body: str,
        *,
        cc: Optional[Union[str, Sequence[str]]] = None,
        bcc: Optional[Union[str, Sequence[str]]] = None,
        html: Optional[bool] = None,
        **extra: Any,
    ) -> Any:
        """Send an email through the ``email`` tool (action ``send_message``)."""
        params: Dict[str, Any] = dict(extra)
        params.update(to=_as_list(to), subject=subject, body=body)
        if cc is not None:
            params["cc"] = _as_list(cc)
        if bcc is not None:
            params["bcc"] = _as_list(bcc)
        if html is not None:
            params["html"] = html
        return self.execute_tool_action("email", SEND_ACTION, params)

    def send_slack_message(
        self,
        /,
        channel: str,
        text: str,
        *,
        username: Optional[str] = None,
        icon_emoji: Optional[str] = None,
        icon_url: Optional[str] = None,
        **extra: Any,
    ) -> Any:
        """Post a message through the ``slack`` tool (action ``send_message``)."""
        params: Dict[str, Any] = dict(extra)
        params.update(channel=channel, text=text)
        for name, value in (("username", username), ("icon_emoji", icon_emoji), ("icon_url", icon_url)):
            if value is not None:
                params[name] = value
        return self.execute_tool_action("slack", SEND_ACTION, params)

    def send_discord_message(
        self,
        /,
        channel_id: str,
        content: str,
        *,
        embeds: Optional[Sequence[Mapping[str, Any]]] = None,
        **extra: Any,
    ) -> Any:
        """Post a message through the ``discord`` tool (action ``send_message``)."""
        params: Dict[str, Any] = dict(extra)
        params.update(channelId=channel_id, content=content)
        if embeds is not None:
            params["embeds"] = [dict(embed) for embed in embeds]
        return self.execute_tool_action("discord", SEND_ACTION, params)

    # -- camelCase names (the public docs use them) -----------------------------

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
