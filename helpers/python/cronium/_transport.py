"""HTTP transport to the runtime service: one request, with retries, in the caller's thread.

It uses ``http.client`` directly rather than ``urllib.request``: no redirects are
followed and no proxy from the environment is used, so the bearer token only ever
goes to the configured runtime URL.  Each attempt opens its own connection, which
keeps a client safe to share between threads.

Retry policy (docs/api.md section 9):

* connection failures before the request was sent, 429 and 503 are always retried
  (the service did not act on the request);
* timeouts, connections dropped mid-request, 500, 502 and 504 are retried only for
  idempotent requests, because a retried increment or tool action could be applied
  twice;
* but a 502 carrying the runtime's code ``backend_error`` is never retried: the
  backend answered something definite and wrong, and would answer it again (a 502
  without that code, e.g. from a proxy in front of the runtime, is retried as above);
* any other status (every other 4xx, 501, 505 ...) is never retried.

Waits grow exponentially with jitter; a ``Retry-After`` header replaces the computed
wait, and if it asks for longer than ``max_retry_delay`` the error is raised at once
instead of sleeping for less than the service asked.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

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

try:  # ssl is optional in some minimal Python builds
    import ssl

    _SSLError: Any = ssl.SSLError
except ImportError:  # pragma: no cover - depends on the interpreter build
    ssl = None  # type: ignore[assignment]
    _SSLError = ()

# Indirection so tests can observe or shorten the waits between attempts.
_sleep = time.sleep

_ALWAYS_RETRY = frozenset({429, 503})
_RETRY_IF_IDEMPOTENT = frozenset({500, 502, 504})
_EXCERPT_CHARS = 200


class _NoBody:
    """Marker for "this request has no body" (``None`` is a JSON value)."""


NO_BODY = _NoBody()


class Reply(NamedTuple):
    """A successful answer: the status and the envelope's ``data`` (None when left out)."""

    status: int
    data: Any
    has_data: bool


class _AttemptFailure(Exception):
    """Internal: one attempt failed; carries the error to raise and whether to retry."""

    def __init__(self, error: CroniumError, retry: bool, retry_after: Optional[float] = None):
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.retry_after = retry_after


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        current = now if now is not None else datetime.now(timezone.utc)
        return max(0.0, (when - current).total_seconds())
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def backoff_delay(settings: Settings, failed_attempt: int) -> float:
    """Wait after attempt number ``failed_attempt`` (1-based): exponential, jittered."""
    ceiling = min(settings.max_retry_delay, settings.retry_delay * (2 ** (failed_attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


class Transport:
    """Sends requests for one :class:`Settings`; stateless between calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        parts = urlsplit(settings.api_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    # -- public -----------------------------------------------------------------

    def check_configured(self) -> None:
        if self.settings.problems:
            raise CroniumConfigError(
                "the Cronium helper is not configured: " + "; ".join(self.settings.problems)
            )

    def request(
        self,
        method: str,
        path: str,
        payload: Any = NO_BODY,
        *,
        idempotent: bool = True,
    ) -> Reply:
        """Send ``method path`` (path relative to the API root) and return the reply.

        Raises :class:`CroniumAPIError` for an error status, and the connection,
        timeout or protocol errors once the retries are used up.
        """
        self.check_configured()
        body: Optional[bytes] = None
        if not isinstance(payload, _NoBody):
            body = json.dumps(
                payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")
        full_path = self._prefix + path
        request_id = uuid.uuid4().hex
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(method, full_path, body, request_id, idempotent)
            except _AttemptFailure as failure:
                if not failure.retry or attempt == attempts:
                    raise failure.error from failure.error.__cause__
                if failure.retry_after is not None:
                    if failure.retry_after > self.settings.max_retry_delay:
                        self._debug(
                            f"not retrying: Retry-After {failure.retry_after:g} s is above "
                            f"max_retry_delay {self.settings.max_retry_delay:g} s"
                        )
                        raise failure.error from failure.error.__cause__
                    delay = failure.retry_after
                else:
                    delay = backoff_delay(self.settings, attempt)
                self._debug(f"retrying in {delay:.3f} s (attempt {attempt + 1} of {attempts})")
                _sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt ------------------------------------------------------------

    def _headers(self, request_id: str, has_body: bool) -> Dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.settings.token}",
            "Accept": "application/json",
            "User-Agent": f"cronium-python/{__version__}",
            "X-Request-Id": request_id,
            "Connection": "close",
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        timeout = self.settings.timeout
        if self._https:
            context = ssl.create_default_context() if ssl is not None else None
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _attempt(
        self,
        method: str,
        path: str,
        body: Optional[bytes],
        request_id: str,
        idempotent: bool,
    ) -> Reply:
        started = time.monotonic()
        conn = self._connection()
        try:
            # Connect separately: a failure here means the service never saw the
            # request, so even a non-idempotent one may be retried.
            try:
                conn.connect()
            except socket.timeout as exc:
                self._debug_failure(method, path, "connect timeout", started)
                raise self._failure(
                    CroniumTimeoutError(
                        f"connecting to the Cronium runtime at {self.settings.api_url} "
                        f"timed out after {self.settings.timeout:g} s"
                    ),
                    exc,
                    retry=True,
                )
            except _SSLError as exc:
                self._debug_failure(method, path, "TLS error", started)
                raise self._failure(
                    CroniumConnectionError(
                        f"TLS handshake with the Cronium runtime at {self.settings.api_url} "
                        f"failed: {exc}"
                    ),
                    exc,
                    retry=False,
                )
            except OSError as exc:
                self._debug_failure(method, path, _describe_os_error(exc), started)
                raise self._failure(
                    CroniumConnectionError(
                        f"cannot connect to the Cronium runtime at {self.settings.api_url}: "
                        f"{_describe_os_error(exc)}"
                    ),
                    exc,
                    retry=True,
                )

            try:
                conn.request(method, path, body=body, headers=self._headers(request_id, body is not None))
                response = conn.getresponse()
                raw = response.read()
            except socket.timeout as exc:
                self._debug_failure(method, path, "timeout", started)
                raise self._failure(
                    CroniumTimeoutError(
                        f"the Cronium runtime did not answer {method} {path} within "
                        f"{self.settings.timeout:g} s"
                    ),
                    exc,
                    retry=idempotent,
                )
            except (OSError, http.client.HTTPException) as exc:
                reason = _describe_os_error(exc) if isinstance(exc, OSError) else type(exc).__name__
                self._debug_failure(method, path, reason, started)
                raise self._failure(
                    CroniumConnectionError(
                        f"connection to the Cronium runtime lost during {method} {path}: {reason}"
                    ),
                    exc,
                    retry=idempotent,
                )
        finally:
            conn.close()

        status = response.status
        self._debug(f"{method} {path} -> {status} in {_elapsed_ms(started)}")
        if 200 <= status < 300:
            return self._success(method, path, status, raw, request_id)
        error = self._api_error(method, path, status, raw, request_id, response.getheader("Retry-After"))
        retry = status in _ALWAYS_RETRY or (idempotent and status in _RETRY_IF_IDEMPOTENT)
        if status == 502 and error.code == "backend_error":
            retry = False  # final: see the module docstring
        raise _AttemptFailure(error, retry=retry, retry_after=error.retry_after)

    # -- answers ----------------------------------------------------------------

    def _success(self, method: str, path: str, status: int, raw: bytes, request_id: str) -> Reply:
        if method == "HEAD" or not raw.strip():
            return Reply(status, None, False)
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise CroniumProtocolError(
                f"the Cronium runtime answered {method} {path} with {status} and a body that "
                f"is not JSON: {self._excerpt(raw)!r} (request id {request_id})"
            ) from None
        if not isinstance(envelope, dict) or "success" not in envelope:
            raise CroniumProtocolError(
                f"the Cronium runtime answered {method} {path} with {status} and JSON that is "
                f"not an API envelope (request id {request_id})"
            )
        if envelope.get("success") is not True:
            # A 2xx carrying success:false is an error reported by the service.
            raise self._error_from_envelope(method, path, status, envelope, request_id, None)
        return Reply(status, envelope.get("data"), "data" in envelope)

    def _api_error(
        self,
        method: str,
        path: str,
        status: int,
        raw: bytes,
        request_id: str,
        retry_after_header: Optional[str],
    ) -> CroniumAPIError:
        retry_after = parse_retry_after(retry_after_header)
        envelope: Any = None
        if raw.strip():
            try:
                envelope = json.loads(raw)
            except ValueError:
                envelope = None
        if isinstance(envelope, dict):
            return self._error_from_envelope(method, path, status, envelope, request_id, retry_after)
        if raw.strip():
            message = self._excerpt(raw)
        else:
            message = http.client.responses.get(status, "error")
        return CroniumAPIError(
            status,
            None,
            message,
            method=method,
            path=path,
            request_id=request_id,
            retry_after=retry_after,
        )

    def _error_from_envelope(
        self,
        method: str,
        path: str,
        status: int,
        envelope: Mapping[str, Any],
        request_id: str,
        retry_after: Optional[float],
    ) -> CroniumAPIError:
        code = envelope.get("code")
        error = envelope.get("error")
        message = envelope.get("message")
        if not isinstance(message, str) or not message:
            message = error if isinstance(error, str) and error else http.client.responses.get(status, "error")
        return CroniumAPIError(
            status,
            self._scrub(code) if isinstance(code, str) else None,
            self._scrub(message),
            error=self._scrub(error) if isinstance(error, str) else None,
            method=method,
            path=path,
            request_id=request_id,
            retry_after=retry_after,
        )

    # -- helpers ----------------------------------------------------------------

    def _failure(self, error: CroniumError, cause: BaseException, retry: bool) -> _AttemptFailure:
        error.__cause__ = cause
        return _AttemptFailure(error, retry=retry)

    def _scrub(self, text: str) -> str:
        """Remove the token from text that came from the network, should it echo it."""
        token = self.settings.token
        if token and token in text:
            text = text.replace(token, "[redacted]")
        return text

    def _excerpt(self, raw: bytes) -> str:
        text = " ".join(raw.decode("utf-8", errors="replace").split())
        if len(text) > _EXCERPT_CHARS:
            text = text[:_EXCERPT_CHARS] + "..."
        return self._scrub(text)

    def _debug(self, line: str) -> None:
        if self.settings.debug:
            stream = sys.stderr
            stream.write(f"[cronium] {line}\n")
            stream.flush()

    def _debug_failure(self, method: str, path: str, reason: str, started: float) -> None:
        self._debug(f"{method} {path} -> {reason} after {_elapsed_ms(started)}")


def _elapsed_ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.1f} ms"


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return type(exc).__name__
