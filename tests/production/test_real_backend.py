"""The runtime in production mode against the backend fake's default, the real
Cronium backend as observed (tests/fakes/README.md): what it answers where the
real backend has no route or changes a value.

* no DELETE on variables (bare 405) and no tools/execute route (the app's JSON
  catch-all 404): the runtime answers 501 not_supported, says the backend does
  not offer the operation, and does not retry;
* values: the runtime sends every value as a string (docs/api.md §6), so an array
  never becomes a Postgres array literal and a big number keeps its digits;
  what other writers left in the backend (array literals, JS number text) is
  read back as the backend holds it;
* keys: the runtime's 255-byte limit is stricter than the backend's 255
  characters, so the backend's 500 for a long key is never reached;
* idle keep-alive connections closed by the backend after 5 s are not an error.

The refusals the runtime is to make before calling the backend (a NUL in a
string, a raw null) are in test_real_backend_refusals.py.
"""
import re
import time
import urllib.parse

import pytest

from lib.http import assert_error, assert_ok

DOES_NOT_OFFER = re.compile(r"backend does not (offer|support)", re.I)


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{urllib.parse.quote(key, safe='')}"


def _uncache(stack, uid, key):
    """Forget the cached copy, so the next read goes to the backend."""
    stack.redis_cmd("DEL", f"cronium:user:{{{uid}}}:var:{key}")


# ---- operations the real backend does not offer ---------------------------------------

def test_delete_variable_is_501_not_supported(stack):
    eid, uid, c = stack.execution()
    p = _vpath(eid, "keep")
    assert_ok(c.put(p, {"value": {"a": 1}}), {"success": True})
    mark = len(stack.fb.requests)
    body = assert_error(c.delete(p), 501, "not_supported")
    assert DOES_NOT_OFFER.search(body["message"]) and "delet" in body["message"].lower(), body
    dels = [r for r in stack.fb.requests[mark:] if r.method == "DELETE"]
    assert [(r.path, r.status) for r in dels] == [(f"/api/internal/variables/{uid}/keep", 405)]   # not retried
    # nothing was lost: the backend and the cache still hold the value
    assert stack.fb.variable(uid, "keep") == '{"a":1}'
    assert_ok(c.get(p), {"success": True, "data": {"key": "keep", "value": {"a": 1}}})
    _uncache(stack, uid, "keep")
    assert_ok(c.get(p), {"success": True, "data": {"key": "keep", "value": {"a": 1}}})


def test_delete_of_a_missing_variable_is_also_501(stack):
    """The backend cannot tell a missing variable from a present one without a delete route."""
    eid, uid, c = stack.execution()
    body = assert_error(c.delete(_vpath(eid, "never-set")), 501, "not_supported")
    assert DOES_NOT_OFFER.search(body["message"]), body


def test_tool_action_is_501_not_supported(stack):
    eid, uid, c = stack.execution()
    mark = len(stack.fb.requests)
    r = c.post("/tool-actions/execute", {"tool": "slack", "action": "send", "params": {"text": "hi"}})
    body = assert_error(r, 501, "not_supported")
    assert DOES_NOT_OFFER.search(body["message"]) and "tool" in body["message"].lower(), body
    calls = [r for r in stack.fb.requests[mark:] if r.path == "/api/internal/tools/execute"]
    assert [(x.method, x.status) for x in calls] == [("POST", 404)]      # one call, the catch-all, no retry
    assert calls[0].json()["tool"] == "slack" and stack.fb.tool_calls == []


def test_output_and_condition_are_written_but_never_read_from_the_backend(stack):
    """The real backend cannot give them back (405): reads are answered by the runtime itself."""
    eid, uid, c = stack.execution()
    assert_ok(c.post(f"/executions/{eid}/output", {"data": {"n": 1}}), {"success": True})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": True}), {"success": True})
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": {"n": 1}})
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": True}})
    paths = {(r.method, r.path) for r in stack.fb.requests if f"/executions/{eid}/" in r.path}
    assert paths == {("GET", f"/api/internal/executions/{eid}/context"),
                     ("POST", f"/api/internal/executions/{eid}/output"),
                     ("POST", f"/api/internal/executions/{eid}/condition")}, paths


# ---- the real context shape ----------------------------------------------------------------

def test_context_without_event_has_event_id_minus_one_and_a_start_time(stack):
    eid, uid, c = stack.execution()
    data = c.get(f"/executions/{eid}/context").json()["data"]
    assert data["eventId"] == "-1" and data["event"] is None and data["eventName"] is None
    assert isinstance(data["startTime"], str) and data["startTime"]      # the runtime's own: the backend has none
    assert data["user"] == {"id": uid, "email": None, "name": None}


# ---- values: the runtime sends strings, the backend keeps text ------------------------------

@pytest.mark.parametrize("value,sent", [
    ([1, "x", True], '[1,"x",true]'),                 # never a Postgres array literal
    ([], "[]"),
    ({}, "{}"),                                       # a raw {} would be a 500; the text "{}" is not
    ({"a": "x\u0000"}, '{"a":"x\\u0000"}'),           # a NUL inside JSON text is an escape, not a NUL
    (12345678901234567890, "12345678901234567890"),   # all digits: no JS double on the way
    (9007199254740993, "9007199254740993"),
    (1.5e3, "1500.0"),
])
def test_put_sends_a_string_and_reads_back_the_value(stack, value, sent):
    eid, uid, c = stack.execution()
    p = _vpath(eid, "v")
    assert_ok(c.put(p, {"value": value}), {"success": True})
    w = [w for w in stack.fb.variable_writes if w["userId"] == uid]
    assert len(w) == 1 and isinstance(w[0]["value"], str) and w[0]["status"] == 200, w
    assert stack.fb.variable(uid, "v") == w[0]["value"]
    if sent != "1500.0":
        assert w[0]["value"] == sent
    _uncache(stack, uid, "v")
    assert_ok(c.get(p), {"success": True, "data": {"key": "v", "value": value}})


def test_raw_null_never_reaches_the_backend(stack):
    """The real backend answers a raw JSON null with a 500; the runtime never sends one
    (today it stores the text "null"; test_real_backend_refusals.py wants a 400)."""
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "n"), {"value": None})
    assert r.status in (200, 400), r
    w = [w for w in stack.fb.variable_writes if w["userId"] == uid]
    assert all(x["hasValue"] and x["value"] is not None and x["status"] == 200 for x in w), w


def test_nul_in_a_string_is_not_a_retried_503(stack):
    """The real backend answers a NUL in the text with a 500. Today the runtime passes the
    string on and answers 502 backend_error (one attempt); test_real_backend_refusals.py
    wants a 400 before any backend call. Either way: no 503, no retry, nothing stored."""
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, "z"), {"value": "a\u0000b"})
    assert r.status in (400, 502), r
    assert_error(r, r.status, "invalid_body" if r.status == 400 else "backend_error")
    puts = stack.fb.requests_to(f"/api/internal/variables/{uid}/z", "PUT")
    assert len(puts) <= 1, [p.status for p in puts]
    assert stack.fb.variable(uid, "z") is None
    assert_error(c.get(_vpath(eid, "z")), 404, "variable_not_found")


@pytest.mark.parametrize("seeded,stored,read", [
    ([1, "x", True], '{"1","x","true"}', '{"1","x","true"}'),      # an array literal is not JSON: a string
    ([], "{}", {}),                                                 # ... unless it spells "{}"
    (12345678901234567890, "12345678901234567000", 12345678901234567000),   # digits lost in the backend
    (9007199254740993, "9007199254740992", 9007199254740992),
    (1.5e3, "1500", 1500),
    (True, "true", True),
    ({"b": 1, "10": 2}, '{"10":2,"b":1}', {"10": 2, "b": 1}),
])
def test_values_written_by_others_are_read_as_the_backend_holds_them(stack, seeded, stored, read):
    """A non-string value put into the backend by another writer (the Cronium app's own
    variables page, an older runtime) is stored as node-postgres writes it."""
    eid, uid, c = stack.execution()
    stack.fb.seed_variable(uid, "w", seeded)
    assert stack.fb.variable(uid, "w") == stored
    assert_ok(c.get(_vpath(eid, "w")), {"success": True, "data": {"key": "w", "value": read}})


# ---- keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key,ok", [("k" * 255, True), ("\u00e9" * 127, True), ("\u00e9" * 128, False),
                                    ("\u00e9" * 256, False), ("a\u0000b", False)])
def test_key_limits_are_met_before_the_backend(stack, key, ok):
    """The backend refuses keys over 255 characters (500); the runtime's 255 bytes is stricter."""
    eid, uid, c = stack.execution()
    r = c.put(_vpath(eid, key), {"value": 1})
    if ok:
        assert_ok(r, {"success": True})
        assert stack.fb.variable(uid, key) == "1"
    else:
        assert_error(r, 400, "invalid_key")
        assert not [w for w in stack.fb.variable_writes if w["userId"] == uid]


# ---- connections ----------------------------------------------------------------------------

def test_backend_closing_idle_keep_alive_after_5s_is_not_an_error(stack):
    assert stack.fb.idle_timeout == 5.0
    eid, uid, c = stack.execution()
    stack.fb.seed_variable(uid, "a", "1")
    stack.fb.seed_variable(uid, "b", "2")
    assert_ok(c.get(_vpath(eid, "a")), {"success": True, "data": {"key": "a", "value": 1}})
    time.sleep(5.6)     # every connection the runtime keeps to the backend is closed by now
    t0 = time.monotonic()
    assert_ok(c.get(_vpath(eid, "b")), {"success": True, "data": {"key": "b", "value": 2}})
    assert time.monotonic() - t0 < 1.0
    gets = stack.fb.requests_to(f"/api/internal/variables/{uid}/b", "GET")
    assert [g.status for g in gets] == [200], [(g.status, g.fault) for g in gets]
