"""Values the real Cronium backend refuses with a 500 are refused by the runtime with a
400 (a clear message) BEFORE any backend call (issue 12, section 1), rather than sent on
to a 500 that comes back as 502 backend_error (or, where retried, 503).

The fake's default is the real backend (tests/fakes/README.md): a NUL character in the
stored text and a raw JSON null as the value are 500s there. These tests fail until the
runtime refuses them.
"""
import urllib.parse

import pytest

from lib.http import assert_error


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{urllib.parse.quote(key, safe='')}"


def _backend_puts(stack, uid):
    return [r for r in stack.fb.requests if r.method == "PUT" and r.path.startswith(f"/api/internal/variables/{uid}/")]


@pytest.mark.parametrize("body", [b'{"value":"a\\u0000b"}', b'{"value":"\\u0000"}', b'{"value":"x\\u0000"}'])
def test_string_holding_a_nul_is_400_before_the_backend(stack, body):
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "nul"), body=body)
    err = assert_error(r, 400, "invalid_body")
    assert "nul" in err["message"].lower(), err          # says what is wrong: the NUL character
    assert _backend_puts(stack, uid) == [], [p.status for p in _backend_puts(stack, uid)]
    assert stack.fb.variable(uid, "nul") is None


def test_raw_null_value_is_400_before_the_backend(stack):
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "n"), body=b'{"value":null}')
    err = assert_error(r, 400, "invalid_body")
    assert "null" in err["message"].lower(), err
    assert _backend_puts(stack, uid) == []
    assert stack.fb.variable(uid, "n") is None
