"""Every endpoint of docs/api.md §4 in dev mode, with exact envelopes (runtime API issue)."""
import json
import re
import time

import pytest

from lib import new_id
from lib.http import assert_error, assert_ok
from lib.jwt import claims, make_token

CTX = {
    "executionId": "ctx-exec-1",
    "jobId": "job-42",
    "eventId": "event-7",
    "userId": "ctx-user",
    "metadata": {"input": {"name": "Ada", "count": 3, "flags": [True, False, None],
                           "nested": {"deep": {"x": 1.5}}, "unicode": "héllo ✓ 🚀", "nothing": None},
                 "trigger": "manual"},
    "event": {"id": "event-7", "name": "Nightly report", "type": "PYTHON", "tags": ["a", "b"]},
    "user": {"id": "ctx-user", "email": "ada@example.com"},
}


@pytest.fixture(scope="module")
def svc(module_services, tmp_path_factory):
    f = tmp_path_factory.mktemp("ctx") / "context.json"
    f.write_text(json.dumps(CTX))
    return module_services.start(env={"RATE_LIMIT_PER_MIN": 1000000, "RATE_LIMIT_BURST": 100000},
                                 args=["--dev", "--dev-context", str(f)])


@pytest.fixture(scope="module")
def seeded(svc):
    """API client for the execution seeded from --dev-context."""
    return svc.api(svc.token(CTX["executionId"]))


@pytest.fixture
def fresh(svc):
    """A fresh execution: (id, user, api client)."""
    eid, user = new_id(), new_id("user")
    return eid, user, svc.api(svc.token(eid, user_id=user, job_id="job-f", event_id="ev-f"))


def E(eid, rest):
    return f"/executions/{eid}/{rest}"


# -- dev mode start-up ----------------------------------------------------------

def read_exports(svc):
    deadline = time.monotonic() + 3
    while True:
        out = svc.stdout()
        found = dict(re.findall(r"^export (CRONIUM_[A-Z_]+)=(\S+)$", out, re.M))
        if len(found) >= 3:
            return out, found
        assert time.monotonic() < deadline, f"dev mode did not print the export block: {out!r}"
        time.sleep(0.05)


def test_dev_mode_prints_export_block(svc):
    out, found = read_exports(svc)
    assert found["CRONIUM_RUNTIME_API"] == f"http://127.0.0.1:{svc.port}", found
    assert found["CRONIUM_EXECUTION_ID"] == CTX["executionId"]
    tok = found["CRONIUM_EXECUTION_TOKEN"]
    r = svc.api(tok).get(E(CTX["executionId"], "input"))
    assert_ok(r, {"success": True, "data": CTX["metadata"]["input"]})
    # stdout carries only the export block
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 3 and all(ln.startswith("export ") for ln in lines), out


def test_default_dev_seed(module_services):
    svc = module_services.start(args=["--dev"])
    _, found = read_exports(svc)
    assert found["CRONIUM_EXECUTION_ID"] == "dev-execution"
    api = svc.api(found["CRONIUM_EXECUTION_TOKEN"])
    r = api.get(E("dev-execution", "input"))
    assert r.status == 200, r
    body = r.json()
    assert body["success"] is True and "data" in body, body
    ctx = api.get(E("dev-execution", "context")).json()["data"]
    assert ctx["executionId"] == "dev-execution"
    assert ctx["userId"] == "dev-user"
    assert isinstance(ctx["event"], dict) and ctx["eventName"], ctx


def test_dev_mode_export_block_also_in_a_file_named_in_the_log(svc):
    _, found = read_exports(svc)
    paths = []
    for line in svc.stderr().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        paths += [v for v in obj.values() if isinstance(v, str) and v.startswith("/") and v.endswith(".env")]
    assert paths, "no log line names the file holding the export block"
    text = open(paths[0]).read()
    assert f"export CRONIUM_EXECUTION_TOKEN={found['CRONIUM_EXECUTION_TOKEN']}" in text, text


def test_dev_mode_without_secret_generates_one(module_services):
    svc = module_services.start(env={"JWT_SECRET": None}, args=["--dev"])
    _, found = read_exports(svc)
    r = svc.api(found["CRONIUM_EXECUTION_TOKEN"]).get(E(found["CRONIUM_EXECUTION_ID"], "input"))
    assert r.status == 200, r
    # and a token signed with some other secret is refused
    bad = make_token(claims(found["CRONIUM_EXECUTION_ID"]), "guess")
    assert_error(svc.api(bad).get(E(found["CRONIUM_EXECUTION_ID"], "input")), 401, "invalid_token")


# -- input ------------------------------------------------------------------------

def test_input_seeded(seeded):
    assert_ok(seeded.get(E(CTX["executionId"], "input")), {"success": True, "data": CTX["metadata"]["input"]})


def test_input_fresh_execution_has_no_data(fresh):
    eid, _, api = fresh
    assert_ok(api.get(E(eid, "input")), {"success": True})


# -- output -----------------------------------------------------------------------

def test_output_set_and_get(fresh):
    eid, _, api = fresh
    assert_ok(api.get(E(eid, "output")), {"success": True})
    assert_ok(api.post(E(eid, "output"), {"data": {"rows": 3, "ok": True}}), {"success": True})
    assert_ok(api.get(E(eid, "output")), {"success": True, "data": {"rows": 3, "ok": True}})
    assert_ok(api.post(E(eid, "output"), {"data": "second"}), {"success": True})
    assert_ok(api.get(E(eid, "output")), {"success": True, "data": "second"})


@pytest.mark.parametrize("value", [0, False, "", None, [], {}, "ünï", [1, [2, {"3": None}]]])
def test_output_values_round_trip(fresh, value):
    eid, _, api = fresh
    assert_ok(api.post(E(eid, "output"), {"data": value}), {"success": True})
    assert_ok(api.get(E(eid, "output")), {"success": True, "data": value})


@pytest.mark.parametrize("body", ['{}', '{"output":1}', '[1]', '1', 'null', '', 'nope',
                                  '{"data":1} x', '{"data":1,}'])
def test_output_bad_bodies(fresh, body):
    eid, _, api = fresh
    assert_error(api.post(E(eid, "output"), body), 400, "invalid_body")


# -- context ----------------------------------------------------------------------

CONTEXT_FIELDS = {"executionId", "jobId", "eventId", "eventName", "eventType", "userId", "startTime",
                  "metadata", "event", "user"}


def test_context_seeded(seeded):
    r = seeded.get(E(CTX["executionId"], "context"))
    assert r.status == 200, r
    body = r.json()
    assert set(body) == {"success", "data"} and body["success"] is True
    d = body["data"]
    assert set(d) == CONTEXT_FIELDS, set(d) ^ CONTEXT_FIELDS
    assert d["executionId"] == CTX["executionId"]
    assert d["jobId"] == CTX["jobId"]
    assert d["eventId"] == CTX["eventId"]
    assert d["userId"] == CTX["userId"]
    assert d["eventName"] == "Nightly report"
    assert d["eventType"] == "PYTHON"
    assert d["metadata"] == CTX["metadata"]
    assert d["event"] == CTX["event"]
    assert d["user"] == CTX["user"]
    assert isinstance(d["startTime"], str) and re.match(r"^\d{4}-\d{2}-\d{2}T", d["startTime"]), d


@pytest.mark.parametrize("field,expected", [
    ("event.name", "Nightly report"),
    ("eventName", "Nightly report"),
    ("event.tags", ["a", "b"]),
    ("metadata.input.count", 3),
    ("metadata.input.nested.deep", {"x": 1.5}),
    ("metadata.input.flags", [True, False, None]),
    ("user.email", "ada@example.com"),
    ("executionId", CTX["executionId"]),
    ("event", CTX["event"]),
    ("event.tags.1", "b"),
    ("metadata.input.flags.0", True),
    ("metadata.input.flags.2", None),
])
def test_context_field(seeded, field, expected):
    assert_ok(seeded.get(E(CTX["executionId"], f"context?field={field}")), {"success": True, "data": expected})


def test_context_field_holding_null_is_data_null(seeded):
    # a field that exists and holds null is a value, not a missing field
    assert_ok(seeded.get(E(CTX["executionId"], "context?field=metadata.input.nothing")),
              {"success": True, "data": None})


@pytest.mark.parametrize("field", ["nope", "event.nope", "metadata.input.name.deeper", "user.email.x",
                                   "event.tags.2", "event.tags.x", "event.tags.-1"])
def test_context_missing_field_leaves_data_out(seeded, field):
    assert_ok(seeded.get(E(CTX["executionId"], f"context?field={field}")), {"success": True})


def test_context_field_percent_encoded(seeded):
    assert_ok(seeded.get(E(CTX["executionId"], "context?field=event%2Ename")),
              {"success": True, "data": "Nightly report"})


def test_context_fresh_execution(svc):
    eid, user = new_id(), new_id("user")
    api = svc.api(svc.token(eid, user_id=user, job_id="job-f", event_id="ev-f"))
    d = api.get(E(eid, "context")).json()["data"]
    assert d["executionId"] == eid
    assert d["userId"] == user
    assert d["jobId"] == "job-f"
    assert d["eventId"] == "ev-f"
    assert d["event"] is None
    assert_ok(api.get(E(eid, "context?field=event.name")), {"success": True})


def test_context_job_id_from_snake_case_claim(svc):
    eid = new_id()
    tok = make_token(claims(eid, user_id="snake-user", job_id="snake-job"), svc.secret)
    d = svc.api(tok).get(E(eid, "context")).json()["data"]
    assert d["jobId"] == "snake-job", d
    assert d["userId"] == "snake-user", d


# -- condition --------------------------------------------------------------------

def test_condition_set_and_get(fresh):
    eid, _, api = fresh
    assert_ok(api.get(E(eid, "condition")), {"success": True, "data": {"condition": None}})
    assert_ok(api.post(E(eid, "condition"), {"condition": True}), {"success": True})
    assert_ok(api.get(E(eid, "condition")), {"success": True, "data": {"condition": True}})
    assert_ok(api.post(E(eid, "condition"), {"condition": False}), {"success": True})
    assert_ok(api.get(E(eid, "condition")), {"success": True, "data": {"condition": False}})


@pytest.mark.parametrize("body", ['{"condition":"yes"}', '{"condition":1}', '{"condition":null}',
                                  '{}', '{"condition":true} {}', 'true', '', '{"condition":[true]}'])
def test_condition_bad_bodies(fresh, body):
    eid, _, api = fresh
    assert_error(api.post(E(eid, "condition"), body), 400, "invalid_body")
    assert_ok(api.get(E(eid, "condition")), {"success": True, "data": {"condition": None}})


# -- variables ----------------------------------------------------------------------

def test_variable_lifecycle(fresh):
    eid, _, api = fresh
    p = E(eid, "variables/counter")
    assert_error(api.get(p), 404, "variable_not_found")
    h = api.head(p)
    assert h.status == 404 and h.body == b"", h
    assert_ok(api.put(p, {"value": 42}), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "counter", "value": 42}})
    h = api.head(p)
    assert h.status == 200 and h.body == b"", h
    assert h.header("X-Request-Id")
    assert_ok(api.put(p, {"value": "replaced"}), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "counter", "value": "replaced"}})
    assert_ok(api.delete(p), {"success": True})
    assert_error(api.get(p), 404, "variable_not_found")
    assert_error(api.delete(p), 404, "variable_not_found")
    assert api.head(p).status == 404


def test_variable_head_over_raw_socket_has_no_body(svc, fresh):
    eid, _, api = fresh
    assert_ok(api.put(E(eid, "variables/h"), {"value": "some text"}), {"success": True})
    tok = api.token
    with svc.raw() as c:
        c.send((f"HEAD /executions/{eid}/variables/h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n"
                f"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").encode())
        r = c.read_response("HEAD")
        assert r.status == 200, r
        assert c.read_response().json()["status"] == "healthy"


@pytest.mark.parametrize("body", ['{}', '{"val":1}', '[1]', '"x"', '', 'nope', '{"value":1} trailing',
                                  '{"value":1}}', '{"value":}', '{"value":1', "{'value':1}",
                                  '{"value":NaN}', '{"value":01}'])
def test_put_variable_bad_bodies(fresh, body):
    eid, _, api = fresh
    assert_error(api.put(E(eid, "variables/k"), body), 400, "invalid_body")
    assert_error(api.get(E(eid, "variables/k")), 404, "variable_not_found")


def test_put_variable_invalid_utf8_body(fresh):
    eid, _, api = fresh
    assert_error(api.put(E(eid, "variables/k"), b'{"value":"\xff\xfe"}'), 400, "invalid_body")


def test_increment(fresh):
    eid, _, api = fresh
    p = E(eid, "variables/hits/increment")
    assert_ok(api.post(p, ""), {"success": True, "data": {"key": "hits", "value": 1}})
    assert_ok(api.post(p, {"by": 5}), {"success": True, "data": {"key": "hits", "value": 6}})
    assert_ok(api.post(p, {"by": -10}), {"success": True, "data": {"key": "hits", "value": -4}})
    assert_ok(api.post(p, {}), {"success": True, "data": {"key": "hits", "value": -3}})
    assert_ok(api.get(E(eid, "variables/hits")), {"success": True, "data": {"key": "hits", "value": -3}})
    assert_ok(api.post(p, {"by": 0.5}), {"success": True, "data": {"key": "hits", "value": -2.5}})


def test_increment_existing_numeric_value(fresh):
    eid, _, api = fresh
    assert_ok(api.put(E(eid, "variables/n"), {"value": 10}), {"success": True})
    assert_ok(api.post(E(eid, "variables/n/increment"), {"by": 2}),
              {"success": True, "data": {"key": "n", "value": 12}})


@pytest.mark.parametrize("value", ["abc", True, None, [1], {"a": 1}])
def test_increment_non_number_is_conflict(fresh, value):
    eid, _, api = fresh
    assert_ok(api.put(E(eid, "variables/s"), {"value": value}), {"success": True})
    assert_error(api.post(E(eid, "variables/s/increment"), {"by": 1}), 409, "conflict")
    assert_ok(api.get(E(eid, "variables/s")), {"success": True, "data": {"key": "s", "value": value}})


@pytest.mark.parametrize("body", ['{"by":"2"}', '{"by":null}', '{"by":true}', '{"by":[1]}', '[]',
                                  'nope', '{"by":1} x'])
def test_increment_bad_bodies(fresh, body):
    eid, _, api = fresh
    assert_error(api.post(E(eid, "variables/c/increment"), body), 400, "invalid_body")
    assert_error(api.get(E(eid, "variables/c")), 404, "variable_not_found")


# -- tool actions ---------------------------------------------------------------------

def test_tool_action_with_params(fresh):
    _, _, api = fresh
    params = {"to": "ops@example.com", "subject": "Hi ✓", "n": [1, 2]}
    r = api.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": params})
    assert_ok(r, {"success": True, "data": {"success": True,
                                            "data": {"tool": "email", "action": "send", "params": params},
                                            "metadata": {"dev": True}}})


def test_tool_action_with_config(fresh):
    _, _, api = fresh
    cfg = {"channel": "#ops", "text": "hello"}
    r = api.post("/tool-actions/execute", {"tool": "slack", "action": "post", "config": cfg})
    assert_ok(r, {"success": True, "data": {"success": True,
                                            "data": {"tool": "slack", "action": "post", "params": cfg},
                                            "metadata": {"dev": True}}})


@pytest.mark.parametrize("body", ['{"action":"a","params":{}}', '{"tool":"t","params":{}}',
                                  '{"tool":1,"action":"a","params":{}}', '{"tool":"t","action":["a"],"params":{}}',
                                  '{"tool":"t","action":"a","params":"p"}', '{"tool":"t","action":"a","params":[1]}',
                                  '', 'x', '{"tool":"t","action":"a","params":{}} x'])
def test_tool_action_bad_bodies(fresh, body):
    _, _, api = fresh
    assert_error(api.post("/tool-actions/execute", body), 400, "invalid_body")


def test_tool_action_needs_token(svc):
    assert_error(svc.api().post("/tool-actions/execute", {"tool": "t", "action": "a", "params": {}}),
                 401, "missing_token")


# -- headers on API responses -----------------------------------------------------------

def test_api_responses_are_json_with_request_id(fresh):
    eid, _, api = fresh
    for r in (api.get(E(eid, "input")), api.get(E(eid, "variables/none")),
              api.post(E(eid, "output"), "bad")):
        assert (r.header("Content-Type") or "").split(";")[0] == "application/json", r
        assert r.header("X-Request-Id"), r
        assert int(r.header("Content-Length")) == len(r.body), r


def test_tokens_never_logged(svc):
    """A mixed workload on fresh executions; no token (nor any piece of one) reaches the log."""
    tokens = []
    for i in range(15):
        eid = new_id()
        tok = svc.token(eid, user_id=new_id("user"))
        tokens.append(tok)
        api = svc.api(tok)
        api.put(E(eid, "variables/k"), {"value": i})
        api.post(E(eid, "variables/c/increment"), "nope")
        api.post(E(eid, "variables/c/increment"), "")
        api.get(E(eid, "variables/k"))
        api.post("/tool-actions/execute", {"tool": "t", "action": "a", "params": {}})
        api.get(E(new_id(), "input"))  # mismatch
    time.sleep(0.3)  # the log is written at the end of a loop iteration
    log = svc.stderr()
    # every HS256 token starts with the same header segment
    assert "eyJhbGciOiJIUzI1NiI" not in log, "token bytes in the log: " + log[log.find("eyJhbGci") - 300:][:600]
    for tok in tokens:
        assert tok.split(".")[2] not in log


def log_objects(svc):
    out = []
    for line in svc.stderr().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_audit_events_in_dev_log(svc):
    eid, user = new_id(), new_id("user")
    api = svc.api(svc.token(eid, user_id=user))
    assert api.put(E(eid, "variables/audit-key-1"), {"value": 1}).status == 200
    assert api.post("/tool-actions/execute", {"tool": "audit-tool-1", "action": "go", "params": {}}).status == 200
    assert api.get(E(new_id(), "input")).status == 403  # a denial is audited too
    time.sleep(0.3)
    objs = [o for o in log_objects(svc) if eid in o.values()]

    def has(*values):
        return any(all(v in o.values() for v in values) for o in objs)

    assert has("audit-key-1"), "no audit event names the variable key"
    assert has("audit-tool-1"), "no audit event names the tool"
    assert any(403 in o.values() or "denied" in o.values() for o in objs
               if "audit-key-1" not in o.values() and "audit-tool-1" not in o.values()), \
        "the denied request left no audit event"
