"""Every endpoint of docs/api.md §4 in production mode (backend fake + redis-server),
with the exact envelopes, and what the backend receives for each (§6)."""
import datetime as dt
import json
import re
import urllib.parse

import pytest

from lib import new_id
from lib.http import Client, assert_error, assert_ok

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")

CTX = {
    "jobId": "job-77",
    "eventId": "ev-9",
    "metadata": {"input": {"x": 1, "nested": {"a": [1, 2, {"b": None}]}, "s": "héllo"}, "trigger": "cron"},
    "event": {"id": "ev-9", "name": "Nightly report", "type": "NODEJS", "tags": ["a"]},
    "user": {"id": "ignored-here", "email": "u@example.test"},
}


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{urllib.parse.quote(key, safe='')}"


# ---- input, context ---------------------------------------------------------------

def test_input_is_metadata_input(stack):
    eid, _, c = stack.execution(**CTX)
    assert_ok(c.get(f"/executions/{eid}/input"), {"success": True, "data": CTX["metadata"]["input"]})


def test_input_left_out_when_execution_has_none(stack):
    eid, _, c = stack.execution(metadata={"other": 1})
    assert_ok(c.get(f"/executions/{eid}/input"), {"success": True})


def test_context_has_the_section5_fields(stack):
    eid, uid, c = stack.execution(**CTX)
    body = assert_ok_shape(c.get(f"/executions/{eid}/context"))
    data = body["data"]
    assert set(data) == {"executionId", "jobId", "eventId", "eventName", "eventType", "userId", "startTime",
                         "metadata", "event", "user"}, data
    assert data["executionId"] == eid
    assert data["jobId"] == "job-77"
    assert data["eventId"] == "ev-9"
    assert data["eventName"] == "Nightly report"
    assert data["eventType"] == "NODEJS"
    assert data["userId"] == uid
    assert isinstance(data["startTime"], str) and RFC3339.match(data["startTime"]), data["startTime"]
    assert data["metadata"] == CTX["metadata"]
    # the event as the real backend sends it: with its content, runLocation and serverId
    assert data["event"] == {**CTX["event"], "content": "", "runLocation": "LOCAL", "serverId": None}
    assert data["user"] == CTX["user"]
    # the backend was asked with its bearer token, on the §6 path
    reqs = stack.fb.requests_to(f"/api/internal/executions/{eid}/context", "GET")
    assert len(reqs) == 1, [r.path for r in stack.fb.requests]
    assert reqs[0].header("Authorization") == f"Bearer {stack.backend_token}"


def assert_ok_shape(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert body.get("success") is True and set(body) == {"success", "data"}, body
    return body


def test_context_null_event_and_user(stack):
    eid, uid, c = stack.execution(event=None, user=None)
    data = assert_ok_shape(c.get(f"/executions/{eid}/context"))["data"]
    assert data["event"] is None and data["user"] is None
    assert data["eventName"] in (None, "") and data["eventType"] in (None, ""), data


@pytest.mark.parametrize("field,expected", [
    ("event.name", "Nightly report"),
    ("eventName", "Nightly report"),
    ("metadata.input.x", 1),
    ("metadata.input.nested", {"a": [1, 2, {"b": None}]}),
    ("metadata.trigger", "cron"),
    ("jobId", "job-77"),
])
def test_context_field(stack, field, expected):
    eid, _, c = stack.execution(**CTX)
    assert_ok(c.get(f"/executions/{eid}/context?field={field}"), {"success": True, "data": expected})


def test_context_missing_field_leaves_data_out(stack):
    eid, _, c = stack.execution(**CTX)
    assert_ok(c.get(f"/executions/{eid}/context?field=metadata.nope.deeper"), {"success": True})


def test_context_fetched_once_per_execution(stack):
    eid, _, c = stack.execution(**CTX)
    for _ in range(5):
        assert c.get(f"/executions/{eid}/context").status == 200
        assert c.get(f"/executions/{eid}/input").status == 200
    assert stack.fb.count(f"/api/internal/executions/{eid}/context", "GET") == 1


# ---- output -----------------------------------------------------------------------

def test_output_set_and_get(stack):
    eid, _, c = stack.execution()
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True})
    data = {"rows": [1, 2.5, "x", None, True], "é": {"deep": []}}
    assert_ok(c.post(f"/executions/{eid}/output", {"data": data}), {"success": True})
    last = stack.fb.last_output(eid)
    assert last is not None, stack.fb.outputs
    assert last["output"] == data
    assert isinstance(last["timestamp"], str) and RFC3339.match(last["timestamp"]), last
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": data})
    # falsy outputs are outputs too
    for v in (0, False, "", None):
        assert_ok(c.post(f"/executions/{eid}/output", {"data": v}), {"success": True})
        assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": v})
    assert [o["output"] for o in stack.fb.outputs[eid]][-4:] == [0, False, "", None]


def test_output_requires_data_field(stack):
    eid, _, c = stack.execution()
    assert_error(c.post(f"/executions/{eid}/output", {"output": 1}), 400, "invalid_body")
    assert stack.fb.outputs.get(eid) is None


# ---- condition --------------------------------------------------------------------

def test_condition_set_and_get(stack):
    eid, _, c = stack.execution()
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": None}})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": True}), {"success": True})
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": True}})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": False}), {"success": True})
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": False}})
    sent = stack.fb.conditions[eid]
    assert [s["condition"] for s in sent] == [True, False]
    assert all(RFC3339.match(s["timestamp"]) for s in sent), sent


@pytest.mark.parametrize("body", ['{"condition":"true"}', '{"condition":1}', '{"condition":null}', '{}'])
def test_condition_must_be_bool(stack, body):
    eid, _, c = stack.execution()
    assert_error(c.post(f"/executions/{eid}/condition", body=body), 400, "invalid_body")
    assert eid not in stack.fb.conditions


# ---- variables --------------------------------------------------------------------

def test_variable_lifecycle(rich_stack):
    stack = rich_stack   # deletes: the fake's opt-in DELETE
    eid, uid, c = stack.execution()
    p = _vpath(eid, "greeting")
    assert_error(c.get(p), 404, "variable_not_found")
    r = c.head(p)
    assert r.status == 404 and r.body == b"", r
    assert_ok(c.put(p, {"value": {"hello": "wörld"}}), {"success": True})
    assert stack.fb.variable(uid, "greeting") == '{"hello":"wörld"}'
    assert_ok(c.get(p), {"success": True, "data": {"key": "greeting", "value": {"hello": "wörld"}}})
    r = c.head(p)
    assert r.status == 200 and r.body == b"", r
    assert_ok(c.delete(p), {"success": True})
    assert stack.fb.variable(uid, "greeting") is None
    assert stack.fb.variable_deletes[-1]["key"] == "greeting"
    assert_error(c.get(p), 404, "variable_not_found")
    assert c.head(p).status == 404
    assert_error(c.delete(p), 404, "variable_not_found")


def test_variable_seeded_in_backend_is_read(stack):
    eid, uid, c = stack.execution()
    stack.fb.seed_variable(uid, "seeded", "plain text")
    stack.fb.seed_variable(uid, "num", "17")
    assert_ok(c.get(_vpath(eid, "seeded")), {"success": True, "data": {"key": "seeded", "value": "plain text"}})
    assert_ok(c.get(_vpath(eid, "num")), {"success": True, "data": {"key": "num", "value": 17}})


def test_put_requires_value_field(stack):
    eid, uid, c = stack.execution()
    assert_error(c.put(_vpath(eid, "k"), {"val": 1}), 400, "invalid_body")
    assert_error(c.put(_vpath(eid, "k"), body="{\"value\":1} x"), 400, "invalid_body")
    assert not [w for w in stack.fb.variable_writes if w["userId"] == uid]


@pytest.mark.parametrize("key", ["a/b", "with space", "ünï©ødé ☃", "50%", "q?x=1&y#z", "k" * 255])
def test_variable_key_encodings(stack, key):
    eid, uid, c = stack.execution()
    p = _vpath(eid, key)
    assert_ok(c.put(p, {"value": "v"}), {"success": True})
    # the backend received the key percent-encoded as one path segment
    assert stack.fb.variable(uid, key) == "v", stack.fb.variables
    put = stack.fb.requests_to(f"/api/internal/variables/{uid}/*", "PUT")[-1]
    assert urllib.parse.unquote(put.path.rsplit("/", 1)[1]) == key, put.path
    assert_ok(c.get(p), {"success": True, "data": {"key": key, "value": "v"}})


def test_variable_key_too_long(stack):
    eid, _, c = stack.execution()
    assert_error(c.put(_vpath(eid, "k" * 256), {"value": 1}), 400, "invalid_key")


def test_variables_belong_to_the_context_user_not_the_token_claim(stack):
    """The token says userId=evil; the backend context says the real user."""
    eid, uid, c = stack.execution(token_user="evil-user")
    stack.fb.seed_variable("evil-user", "secret", "do not read")
    mark = len(stack.fb.requests)
    assert_ok(c.put(_vpath(eid, "mine"), {"value": 5}), {"success": True})
    assert stack.fb.variable(uid, "mine") == "5"
    assert stack.fb.variable("evil-user", "mine") is None
    assert_error(c.get(_vpath(eid, "secret")), 404, "variable_not_found")
    paths = [r.path for r in stack.fb.requests[mark:] if r.path.startswith("/api/internal/variables/")]
    assert paths and all(p.startswith(f"/api/internal/variables/{uid}/") for p in paths), paths


def test_delete_not_supported_405(stack):
    """The real backend (the fake's default): DELETE is a bare 405."""
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "d"), {"value": 1}), {"success": True})
    assert stack.fb.delete_mode == 405
    assert_error(c.delete(_vpath(eid, "d")), 501, "not_supported")
    assert stack.fb.variable(uid, "d") == "1"
    assert_ok(c.get(_vpath(eid, "d")), {"success": True, "data": {"key": "d", "value": 1}})


def test_delete_not_supported_404_html(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "d"), {"value": "x"}), {"success": True})
    stack.fb.delete_mode = 404
    assert_error(c.delete(_vpath(eid, "d")), 501, "not_supported")
    assert stack.fb.variable(uid, "d") == "x"
    assert_ok(c.get(_vpath(eid, "d")), {"success": True, "data": {"key": "d", "value": "x"}})


def test_delete_twice(rich_stack):
    """The second DELETE finds nothing (backend 404 JSON) and says so; GET agrees."""
    stack = rich_stack
    eid, uid, c = stack.execution()
    p = _vpath(eid, "gone")
    assert_ok(c.put(p, {"value": 1}), {"success": True})
    assert_ok(c.delete(p), {"success": True})
    assert_error(c.delete(p), 404, "variable_not_found")
    assert_error(c.get(p), 404, "variable_not_found")


# ---- increment --------------------------------------------------------------------

def test_increment(stack):
    eid, uid, c = stack.execution()
    p = _vpath(eid, "n") + "/increment"
    assert_ok(c.post(p, body=b""), {"success": True, "data": {"key": "n", "value": 1}})
    assert_ok(c.post(p, {"by": 5}), {"success": True, "data": {"key": "n", "value": 6}})
    assert_ok(c.post(p, {"by": -10}), {"success": True, "data": {"key": "n", "value": -4}})
    assert_ok(c.post(p, {"by": 2.5}), {"success": True, "data": {"key": "n", "value": -1.5}})
    assert stack.fb.variable(uid, "n") == "-1.5"
    assert all(isinstance(w["value"], str) for w in stack.fb.variable_writes if w["userId"] == uid)
    assert_ok(c.get(_vpath(eid, "n")), {"success": True, "data": {"key": "n", "value": -1.5}})


def test_increment_of_backend_seeded_number(stack):
    eid, uid, c = stack.execution()
    stack.fb.seed_variable(uid, "cnt", "41")
    assert_ok(c.post(_vpath(eid, "cnt") + "/increment", {"by": 1}),
              {"success": True, "data": {"key": "cnt", "value": 42}})
    assert stack.fb.variable(uid, "cnt") == "42"


def test_increment_conflict_and_bad_by(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "s"), {"value": "abc"}), {"success": True})
    assert_error(c.post(_vpath(eid, "s") + "/increment", {"by": 1}), 409, "conflict")
    assert stack.fb.variable(uid, "s") == "abc"
    assert_error(c.post(_vpath(eid, "n") + "/increment", {"by": "1"}), 400, "invalid_body")
    assert stack.fb.variable(uid, "n") is None


# ---- tool actions -----------------------------------------------------------------

def test_tool_action_params(rich_stack):
    stack = rich_stack   # the fake's opt-in tools route
    eid, uid, c = stack.execution(token_user="not-the-user")
    params = {"to": "a@b.test", "n": [1, {"x": None}], "ok": False}
    r = c.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": params})
    assert_ok(r, {"success": True, "data": {"success": True, "data": {"tool": "email", "action": "send",
                                                                      "params": params}}})
    call = stack.fb.tool_calls[-1]
    assert call == {"executionId": eid, "userId": uid, "tool": "email", "action": "send", "params": params}


def test_tool_action_config_synonym(rich_stack):
    stack = rich_stack
    eid, uid, c = stack.execution()
    cfg = {"channel": "#ops", "text": "hi ☃"}
    r = c.post("/tool-actions/execute", {"tool": "slack", "action": "post", "config": cfg})
    assert_ok(r, {"success": True, "data": {"success": True, "data": {"tool": "slack", "action": "post",
                                                                      "params": cfg}}})
    assert stack.fb.tool_calls[-1] == {"executionId": eid, "userId": uid, "tool": "slack", "action": "post",
                                       "params": cfg}


def test_tool_action_backend_result_passed_through(rich_stack):
    stack = rich_stack
    eid, uid, c = stack.execution()
    result = {"success": False, "data": None, "error": "quota exceeded", "metadata": {"retryIn": 30}}
    stack.fb.set_tool_result("sms", result, action="send")
    r = c.post("/tool-actions/execute", {"tool": "sms", "action": "send", "params": {}})
    assert_ok(r, {"success": True, "data": result})


def test_tool_action_backend_without_route(stack):
    """The real backend (the fake's default): the JSON catch-all 404."""
    eid, uid, c = stack.execution()
    assert stack.fb.tools_route is False
    r = c.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": {}})
    assert_error(r, 501, "not_supported")


# ---- unknown execution, wrong execution ----------------------------------------------

@pytest.mark.parametrize("method,suffix,body", [
    ("GET", "/input", None),
    ("GET", "/context", None),
    ("GET", "/output", None),
    ("POST", "/output", {"data": 1}),
    ("GET", "/condition", None),
    ("POST", "/condition", {"condition": True}),
    ("GET", "/variables/k", None),
    ("HEAD", "/variables/k", None),
    ("PUT", "/variables/k", {"value": 1}),
    ("DELETE", "/variables/k", None),
    ("POST", "/variables/k/increment", {"by": 1}),
])
def test_unknown_execution(stack, method, suffix, body):
    eid = new_id("ghost")
    c = stack.client(eid, "u-ghost")
    r = c.request(method, f"/executions/{eid}{suffix}", json_body=body)
    if method == "HEAD":
        assert r.status == 404 and r.body == b"", r
    else:
        assert_error(r, 404, "execution_not_found")
    assert stack.fb.count(f"/api/internal/executions/{eid}/context", "GET") >= 1
    assert not any(w["userId"] == "u-ghost" for w in stack.fb.variable_writes)


def test_unknown_execution_tool_action(stack):
    eid = new_id("ghost")
    c = stack.client(eid, "u-ghost")
    r = c.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": {}})
    assert_error(r, 404, "execution_not_found")


def test_execution_mismatch(stack):
    eid, _, c = stack.execution()
    other, _, _ = stack.execution()
    assert_error(c.get(f"/executions/{other}/input"), 403, "execution_mismatch")
    assert_error(c.put(_vpath(other, "k"), {"value": 1}), 403, "execution_mismatch")


def test_every_backend_call_carries_the_backend_token(stack):
    eid, _, c = stack.execution()
    c.put(_vpath(eid, "t"), {"value": 1})
    c.get(_vpath(eid, "t"))
    c.post(f"/executions/{eid}/output", {"data": 1})
    reqs = [r for r in stack.fb.requests if eid in r.path or r.path.startswith("/api/internal/variables/")]
    assert reqs
    bad = [(r.method, r.path, r.header("Authorization")) for r in reqs
           if r.header("Authorization") != f"Bearer {stack.backend_token}"]
    assert not bad, bad
    ct = {r.header("Content-Type") for r in reqs if r.method in ("PUT", "POST")}
    assert all(c_ and c_.startswith("application/json") for c_ in ct), ct


# ---- ids and keys that need percent-encoding toward the backend (§6 "fixed") ------------

def test_execution_and_user_ids_are_percent_encoded_toward_the_backend(stack):
    eid = f"ex/{new_id('e')} ü?#"
    uid = f"us/{new_id('u')} ☃%"
    stack.fb.seed_execution({"executionId": eid, "userId": uid, "metadata": {"input": 5}})
    c = stack.client(eid, uid)
    q = urllib.parse.quote(eid, safe="")
    assert_ok(c.get(f"/executions/{q}/input"), {"success": True, "data": 5})
    assert_ok(c.put(f"/executions/{q}/variables/a%2Fb", {"value": 1}), {"success": True})
    assert stack.fb.variable(uid, "a/b") == "1"
    assert_ok(c.post(f"/executions/{q}/output", {"data": "o"}), {"success": True})
    assert stack.fb.last_output(eid)["output"] == "o"
    ctx_paths = [r.path for r in stack.fb.requests if r.path.endswith("/context") and "%2F" in r.path]
    assert f"/api/internal/executions/{q}/context" in ctx_paths, ctx_paths
    var_paths = [r.path for r in stack.fb.requests_to("/api/internal/variables/*", "PUT")]
    assert f"/api/internal/variables/{urllib.parse.quote(uid, safe='')}/a%2Fb" in var_paths, var_paths[-3:]
    assert stack.redis_cmd("EXISTS", f"cronium:user:{{{uid}}}:var:a/b") == 1
    assert stack.redis_cmd("EXISTS", f"cronium:exec:{{{eid}}}:context") == 1


def test_large_value_round_trips(stack):
    eid, uid, c = stack.execution()
    big = {"blob": "é" * 200_000, "list": list(range(5000))}
    assert_ok(c.put(_vpath(eid, "big"), {"value": big}), {"success": True})
    assert_ok(c.get(_vpath(eid, "big")), {"success": True, "data": {"key": "big", "value": big}})
    stack.redis_cmd("DEL", f"cronium:user:{{{uid}}}:var:big")
    assert_ok(c.get(_vpath(eid, "big")), {"success": True, "data": {"key": "big", "value": big}})


def test_output_and_condition_survive_a_cache_flush(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.post(f"/executions/{eid}/output", {"data": {"r": [0, False]}}), {"success": True})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": False}), {"success": True})
    stack.redis_cmd("FLUSHALL")
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": {"r": [0, False]}})
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": False}})
    assert_ok(c.get(f"/executions/{eid}/input"), {"success": True})


def test_concurrent_first_requests_share_one_context_fetch(stack):
    import threading
    eid, uid, _ = stack.execution(metadata={"input": {"k": 1}})
    path = f"/api/internal/executions/{eid}/context"
    stack.fb.set_delay(0.4, path=path, method="GET")
    n = 30
    barrier = threading.Barrier(n)
    out = []

    def worker(i):
        cl = stack.client(eid, uid)
        cl.get("/health")
        barrier.wait(10)
        out.append(cl.get(f"/executions/{eid}/input"))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    stack.fb.set_delay(0, path=path, method="GET")
    assert len(out) == n
    for r in out:
        assert_ok(r, {"success": True, "data": {"k": 1}})
    assert stack.fb.count(path, "GET") <= 3, f"{n} parallel first requests made {stack.fb.count(path, 'GET')} context fetches"
