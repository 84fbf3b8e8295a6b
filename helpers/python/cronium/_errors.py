"""Exceptions raised by the Cronium helper SDK.

Every exception the SDK raises on purpose derives from :class:`CroniumError`, so a
script can catch that one class.  None of them ever holds the execution token: the
messages are built from the request method and path, the status and the fields of
the service's error envelope only.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "CroniumError",
    "CroniumConfigError",
    "CroniumAPIError",
    "CroniumConnectionError",
    "CroniumTimeoutError",
    "CroniumProtocolError",
]


class CroniumError(Exception):
    """Base class of every error the SDK raises."""


class CroniumConfigError(CroniumError):
    """A setting is missing or invalid (raised by the first call, never at import)."""


class CroniumAPIError(CroniumError):
    """The runtime service answered with an error status.

    Attributes:
        status_code: the HTTP status (``404``, ``429``, ``503`` ...).
        code: the machine code of the error envelope (``"variable_not_found"``,
            ``"rate_limited"`` ...), or ``None`` when the body was not an envelope.
        message: the human message of the envelope (or a short excerpt of a
            non-envelope body, or the HTTP reason phrase).
        error: the ``error`` field of the envelope (the HTTP reason phrase), if any.
        method / path: the request that failed (the path never contains the token).
        request_id: the ``X-Request-Id`` the request carried, to find it in the logs.
        retry_after: seconds from the ``Retry-After`` header, if the service sent one.
    """

    def __init__(
        self,
        status_code: int,
        code: Optional[str],
        message: str,
        *,
        error: Optional[str] = None,
        method: str = "",
        path: str = "",
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.error = error
        self.method = method
        self.path = path
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"Cronium API error {self.status_code}"
        if self.code:
            text += f" ({self.code})"
        text += f": {self.message}"
        if self.method and self.path:
            text += f" [{self.method} {self.path}]"
        if self.request_id:
            text += f" request id {self.request_id}"
        return text

    def __repr__(self) -> str:
        return (
            f"CroniumAPIError(status_code={self.status_code!r}, code={self.code!r}, "
            f"message={self.message!r})"
        )


class CroniumConnectionError(CroniumError):
    """The service could not be reached (refused, reset, name not resolved ...)."""


class CroniumTimeoutError(CroniumError):
    """The service did not answer within the configured timeout."""


class CroniumProtocolError(CroniumError):
    """The service answered something that is not the API's JSON envelope."""
