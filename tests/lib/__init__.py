"""The test harness every suite shares (stdlib and pytest only).

    lib.http     RawConn (raw HTTP/1.1 over a socket), Client (keep-alive, bearer
                 token), Response, assert_error / assert_ok (docs/api.md §3 envelope)
    lib.jwt      hand-made HS256/384/512 tokens, mint_token as the orchestrator does
    lib.proc     the cronium-runtime process: free ports, clean environment, start,
                 wait for /health, logs, stop, sanitizer / valgrind exit codes
    lib.redis    a real redis-server on a free loopback port, and a RESP client
    lib.backend  the backend fake (tests/fakes/backend.py), started and checked

Import it as `lib` with tests/ on sys.path (pytest puts it there for the
packages tests/blackbox, tests/production, tests/static and tests/fakes; other
suites insert it themselves).
"""
import sys
import uuid
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)   # lib.backend imports fakes.backend


def new_id(prefix="exec"):
    """A unique id for one test's execution, user or key."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Closing:
    """`with x:` closes x (a connection) at the end of the block."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
