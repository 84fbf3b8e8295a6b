"""Values the real Cronium backend refuses with a 500 are refused by the runtime with a
400 (a clear message) BEFORE any backend call (issue 12, section 1), rather than sent on
to a 500 that comes back as 502 backend_error (or, where retried, 503).

The fake's default is the real backend (tests/fakes/README.md): a NUL character in the
stored text and a raw JSON null as the value are 500s there. A NUL can only reach the
backend inside a string value (every other value is sent as its JSON text, where a NUL
is the six characters \u0000), so that is what the runtime refuses. A null value is not
refused: the contract says null round-trips like any other value, and the runtime sends
it as the text "null", which the backend stores (never a raw null).
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


def test_null_value_is_sent_as_text_and_round_trips(stack):
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "n"), body=b'{"value":null}')
    assert r.status == 200, r.body
    assert [p.status for p in _backend_puts(stack, uid)] == [200]
    assert stack.fb.variable(uid, "n") == "null"      # the text, never a raw null
    got = c.get(_vpath(eid, "n"))
    assert got.status == 200 and got.json()["data"] == {"key": "n", "value": None}, got.body


def test_nested_nul_escape_is_only_text(stack):
    # Inside an object the NUL stays the escape \u0000 in the stored JSON text: no refusal.
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "obj"), body=b'{"value":{"s":"a\\u0000b"}}')
    assert r.status == 200, r.body
    assert stack.fb.variable(uid, "obj") == '{"s":"a\\u0000b"}'



@pytest.mark.parametrize("body", [b'{"value":"a\\u0000"}', b'{"value":"a","separator":"\\u0000"}'])
def test_append_of_a_nul_is_400_before_the_backend(stack, body):
    eid, uid, c = stack.execution()
    r = c.post(_vpath(eid, "log") + "/append", body=body)
    err = assert_error(r, 400, "invalid_body")
    assert "nul" in err["message"].lower(), err
    assert _backend_puts(stack, uid) == []
