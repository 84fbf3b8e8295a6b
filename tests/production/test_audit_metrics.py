"""Audit events shipped to the backend (§6 audit call) and the production
metrics (issue "production data path": cache, Valkey, backend, audit)."""
import json
import re
import time

from lib.http import assert_error, assert_ok

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _events_for(fb, eid):
    return [e for e in fb.audit_events if isinstance(e, dict) and e.get("executionId") == eid]


def _check_event_shape(e):
    assert {"executionId", "action", "details", "metadata", "timestamp"} <= set(e), e
    assert isinstance(e["action"], str) and e["action"], e
    assert isinstance(e["details"], dict) and e["details"], e
    assert isinstance(e["metadata"], dict), e
    assert isinstance(e["timestamp"], str) and RFC3339.match(e["timestamp"]), e


def test_audit_events_for_successes(rich_stack):
    stack = rich_stack   # a tool action that succeeds needs the fake's opt-in tools route
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "audited"), {"value": 1}), {"success": True})
    assert_ok(c.get(_vpath(eid, "audited")), {"success": True, "data": {"key": "audited", "value": 1}})
    assert c.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": {}}).status == 200
    assert stack.fb.wait_for(lambda: len(_events_for(stack.fb, eid)) >= 3, timeout=5), stack.fb.audit_events[-5:]
    events = _events_for(stack.fb, eid)
    for e in events:
        _check_event_shape(e)
    assert len({e["action"] for e in events}) >= 3, [e["action"] for e in events]
    texts = [json.dumps(e["details"]) for e in events]
    assert any('"audited"' in t for t in texts), texts
    assert any('"email"' in t for t in texts), texts
    reqs = stack.fb.requests_to("/api/internal/audit", "POST")
    assert reqs and all(r.header("Authorization") == f"Bearer {stack.backend_token}" for r in reqs)


def test_audit_event_for_a_denial(stack):
    eid, uid, c = stack.execution()
    other, _, _ = stack.execution()
    assert_error(c.get(_vpath(other, "x")), 403, "execution_mismatch")
    assert stack.fb.wait_for(
        lambda: any(e for e in stack.fb.audit_events
                    if isinstance(e, dict) and e.get("executionId") in (eid, other)), timeout=5), \
        "no audit event for a 403 execution_mismatch"
    events = [e for e in stack.fb.audit_events if isinstance(e, dict) and e.get("executionId") in (eid, other)]
    for e in events:
        _check_event_shape(e)
    text = json.dumps(events)
    assert "403" in text or "denied" in text or "execution_mismatch" in text, events


def test_audit_failure_does_not_affect_requests(stack):
    eid, uid, c = stack.execution()
    stack.fb.respond(500, {"error": "Internal server error"}, path="/api/internal/audit")
    stack.fb.set_delay(0.5, path="/api/internal/audit")
    t0 = time.monotonic()
    for i in range(5):
        assert_ok(c.put(_vpath(eid, f"k{i}"), {"value": i}), {"success": True})
    assert time.monotonic() - t0 < 1.0, "requests waited for the audit calls"
    assert stack.fb.wait_for(lambda: stack.metrics().value("cronium_runtime_audit_events_total", result="failed") > 0,
                             timeout=5)


METRICS = {
    "cronium_runtime_cache_requests_total": "counter",
    "cronium_runtime_valkey_up": "gauge",
    "cronium_runtime_backend_requests_total": "counter",
    "cronium_runtime_backend_retries_total": "counter",
    "cronium_runtime_backend_request_duration_seconds": "histogram",
    "cronium_runtime_backend_coalesced_total": "counter",
    "cronium_runtime_audit_events_total": "counter",
}


def test_metrics_present_with_types(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "m"), {"value": 1}), {"success": True})
    m = stack.metrics()
    for name, typ in METRICS.items():
        assert m.types.get(name) == typ, f"# TYPE {name} {typ} missing (got {m.types.get(name)!r})"
    names = m.names()
    for name in METRICS:
        if METRICS[name] == "histogram":
            assert {name + "_bucket", name + "_sum", name + "_count"} <= names, name
            assert m.has(name + "_bucket", le="+Inf")
        else:
            assert name in names, name
    assert m.value("cronium_runtime_valkey_up") == 1
    for kind in ("variable", "context"):
        for result in ("hit", "miss"):
            assert m.has("cronium_runtime_cache_requests_total", kind=kind, result=result), (kind, result)


def test_metrics_move(stack):
    eid, uid, c = stack.execution()
    m0 = stack.metrics()
    assert_ok(c.put(_vpath(eid, "mv"), {"value": 1}), {"success": True})
    assert_ok(c.get(_vpath(eid, "mv")), {"success": True, "data": {"key": "mv", "value": 1}})
    stack.redis_cmd("DEL", f"cronium:user:{{{uid}}}:var:mv")
    assert_ok(c.get(_vpath(eid, "mv")), {"success": True, "data": {"key": "mv", "value": 1}})
    # The two identical GETs may be one coalesced event with "count": 2 (audit.coalesceWindow).
    assert stack.fb.wait_for(lambda: sum(int(e.get("count", 1)) for e in _events_for(stack.fb, eid)) >= 3,
                             timeout=5)
    time.sleep(0.1)
    m1 = stack.metrics()

    def d(name, **lb):
        return m1.value(name, **lb) - m0.value(name, **lb)

    assert d("cronium_runtime_cache_requests_total", kind="variable", result="hit") >= 1
    assert d("cronium_runtime_cache_requests_total", kind="variable", result="miss") >= 1
    assert d("cronium_runtime_backend_requests_total") >= 3      # context, PUT, GET
    assert d("cronium_runtime_backend_request_duration_seconds_count") >= 3
    assert d("cronium_runtime_audit_events_total", result="sent") >= 3
    statuses = {lb.get("status") for n, lb, v in m1.samples if n == "cronium_runtime_backend_requests_total"}
    assert "200" in statuses, statuses


def test_audit_reads_off_keeps_writes_and_denials(make_stack):
    """AUDIT_READS=false: a successful GET sends no audit event; a PUT and a
    403 still do."""
    st = make_stack(env={"AUDIT_READS": "false"})
    eid, uid, c = st.execution()
    other, _, _ = st.execution()
    assert_ok(c.put(_vpath(eid, "w"), {"value": 2}), {"success": True})
    for _ in range(3):
        assert_ok(c.get(_vpath(eid, "w")), {"success": True, "data": {"key": "w", "value": 2}})
    assert_error(c.get(_vpath(other, "w")), 403, "execution_mismatch")
    assert st.fb.wait_for(lambda: len(_events_for(st.fb, eid)) >= 2, timeout=5), st.fb.audit_events
    time.sleep(0.3)  # a read event, if one were sent, would have arrived by now
    actions = sorted(e["action"] for e in _events_for(st.fb, eid))
    assert actions == ["get_variable", "set_variable"], actions  # the one get_variable is the 403
    denial = [e for e in _events_for(st.fb, eid) if e["action"] == "get_variable"][0]
    assert denial["details"]["status"] == 403, denial
