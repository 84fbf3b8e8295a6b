"""Settings of a client: where the runtime service is, who we are, how hard to retry.

Settings come from explicit constructor arguments first, then from the environment
the orchestrator gives a job.  Reading them never raises for a *missing or invalid
environment value*: those are collected as problems and reported by the first call
(a script that only imports the helper must keep running).  An invalid *explicit*
argument is a programming error and raises ``ValueError`` at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple, Type, TypeVar
from urllib.parse import urlsplit

DEFAULT_API_URL = "http://localhost:8081"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 0.5
DEFAULT_MAX_RETRY_DELAY = 30.0

# Environment names, in order of preference.
ENV_API_URL = ("CRONIUM_RUNTIME_API", "CRONIUM_API_ENDPOINT")
ENV_TOKEN = ("CRONIUM_EXECUTION_TOKEN", "CRONIUM_API_TOKEN")
ENV_EXECUTION_ID = ("CRONIUM_EXECUTION_ID",)
ENV_DEBUG = "CRONIUM_DEBUG"
ENV_TIMEOUT = "CRONIUM_TIMEOUT"
ENV_MAX_ATTEMPTS = "CRONIUM_MAX_ATTEMPTS"
ENV_MAX_RETRIES = "CRONIUM_MAX_RETRIES"
ENV_RETRY_DELAY = "CRONIUM_RETRY_DELAY"
ENV_MAX_RETRY_DELAY = "CRONIUM_MAX_RETRY_DELAY"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one client.  ``repr()`` never shows the token."""

    api_url: str
    token: Optional[str] = field(repr=False)
    execution_id: Optional[str]
    timeout: float
    max_attempts: int
    retry_delay: float
    max_retry_delay: float
    debug: bool
    problems: Tuple[str, ...] = ()

    @property
    def has_token(self) -> bool:
        return bool(self.token)


def _first_env(env: Mapping[str, str], names: Tuple[str, ...]) -> Tuple[Optional[str], str]:
    """Return the first non-empty value among ``names`` and the name it came from."""
    for name in names:
        value = env.get(name)
        if value is not None and value.strip() != "":
            return value.strip(), name
    return None, names[0]


def _check_api_url(url: str) -> Optional[str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host name"
    if parts.query or parts.fragment:
        return "must not carry a query string or fragment"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    return None


def _token_is_header_safe(token: str) -> bool:
    # A JWT is base64url text and dots; anything outside visible ASCII would be
    # rejected by http.client with an exception quoting the header (and the token).
    return all(0x21 <= ord(ch) <= 0x7E for ch in token)


def _range_problem(value: float, minimum: float, strictly_above: bool, what: str) -> Optional[str]:
    if value != value or value in (float("inf"), float("-inf")):  # NaN / infinity
        return f"{what} must be a finite number"
    if strictly_above and value <= minimum:
        return f"{what} must be above {minimum}"
    if not strictly_above and value < minimum:
        return f"{what} must be at least {minimum}"
    return None


def _number_setting(
    explicit: Optional[_N],
    env: Mapping[str, str],
    env_name: str,
    kind: Type[_N],
    default: _N,
    minimum: _N,
    strictly_above: bool,
    problems: List[str],
    arg_name: str,
) -> _N:
    """One numeric setting: an explicit value (checked now) or the env (checked lazily)."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, (int, float)):
            raise TypeError(f"{arg_name} must be a number")
        if kind is int and not isinstance(explicit, int):
            raise TypeError(f"{arg_name} must be an integer")
        problem = _range_problem(explicit, minimum, strictly_above, arg_name)
        if problem is not None:
            raise ValueError(problem)
        return explicit
    raw = env.get(env_name, "").strip()
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        problems.append(f"{env_name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
        return default
    problem = _range_problem(value, minimum, strictly_above, env_name)
    if problem is not None:
        problems.append(f"{problem}, got {raw!r}")
        return default
    return value


def resolve_settings(
    *,
    api_url: Optional[str] = None,
    token: Optional[str] = None,
    execution_id: Optional[str] = None,
    timeout: Optional[float] = None,
    max_attempts: Optional[int] = None,
    retry_delay: Optional[float] = None,
    max_retry_delay: Optional[float] = None,
    debug: Optional[bool] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Settings:
    """Resolve settings from explicit values and the environment (``os.environ``)."""
    source: Mapping[str, str] = os.environ if env is None else env
    problems: List[str] = []

    # Base URL.
    if api_url is not None:
        reason = _check_api_url(api_url)
        if reason is not None:
            raise ValueError(f"api_url {reason}")
        url = api_url
    else:
        found, name = _first_env(source, ENV_API_URL)
        url = found if found is not None else DEFAULT_API_URL
        reason = _check_api_url(url)
        if reason is not None:
            problems.append(f"{name} {reason}")
            url = DEFAULT_API_URL
    url = url.rstrip("/")

    # Token.
    if token is not None:
        tok: Optional[str] = token.strip()
        if not tok:
            raise ValueError("token must not be empty")
    else:
        tok, _ = _first_env(source, ENV_TOKEN)
    if tok is None:
        problems.append(
            "no execution token: set CRONIUM_EXECUTION_TOKEN (or CRONIUM_API_TOKEN)"
        )
    elif not _token_is_header_safe(tok):
        if token is not None:
            raise ValueError("token contains characters not allowed in an HTTP header")
        problems.append(
            "the execution token contains characters not allowed in an HTTP header"
        )
        tok = None

    # Execution id.
    if execution_id is not None:
        if execution_id == "":
            raise ValueError("execution_id must not be empty")
        exec_id: Optional[str] = execution_id
    else:
        exec_id, _ = _first_env(source, ENV_EXECUTION_ID)
    if exec_id is None:
        problems.append("no execution id: set CRONIUM_EXECUTION_ID")

    t = _number_setting(
        timeout, source, ENV_TIMEOUT, float, DEFAULT_TIMEOUT, 0.0, True, problems, "timeout"
    )
    # CRONIUM_MAX_RETRIES is the bash helper's older name for the same number.
    attempts_env = ENV_MAX_ATTEMPTS if source.get(ENV_MAX_ATTEMPTS) or not source.get(ENV_MAX_RETRIES) \
        else ENV_MAX_RETRIES
    attempts = _number_setting(
        max_attempts, source, attempts_env, int, DEFAULT_MAX_ATTEMPTS, 1, False,
        problems, "max_attempts",
    )
    delay = _number_setting(
        retry_delay, source, ENV_RETRY_DELAY, float, DEFAULT_RETRY_DELAY, 0.0, False,
        problems, "retry_delay",
    )
    max_delay = _number_setting(
        max_retry_delay, source, ENV_MAX_RETRY_DELAY, float, DEFAULT_MAX_RETRY_DELAY,
        0.0, False, problems, "max_retry_delay",
    )

    if debug is None:
        debug = source.get(ENV_DEBUG, "").strip().lower() in _TRUE_WORDS

    return Settings(
        api_url=url,
        token=tok,
        execution_id=exec_id,
        timeout=t,
        max_attempts=attempts,
        retry_delay=delay,
        max_retry_delay=max_delay,
        debug=bool(debug),
        problems=tuple(problems),
    )
