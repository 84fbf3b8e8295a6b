"""The audit sinks against the real binary (issue 12 §2): the JSON-lines file
sink (audit.file) gets every audited request (the sum of "count", 1 when
absent, equals the number of requests), SIGHUP reopens it after a rotation,
a slow backend sink loses events visibly (/ready, /metrics) while the file
stays complete, audit.required refuses writes (503 audit_unavailable, nothing
performed) when a sink cannot take events, and at SIGTERM what is still
queued ends in the file.

Every stack here is its own (make_stack): the tests change audit settings
and send signals."""
import json
import os
import signal
import time

from lib.http import Client, assert_error, assert_ok


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _read_events(path, eid=None):
    """The file's events (for eid); every line must be one JSON object."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    assert not data or data.endswith(b"\n"), data[-200:]
    events = []
    for line in data.splitlines():
        e = json.loads(line)
        assert isinstance(e, dict), line
        events.append(e)
    return [e for e in events if eid is None or e.get("executionId") == eid]


def _count(events):
    return sum(int(e.get("count", 1)) for e in events)


def _wait_count(path, eid, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = _count(_read_events(path, eid))
        if got >= n:
            return got
        time.sleep(0.05)
    return got


def _mixed_requests(c, eid, n):
    """n audited requests over one keep-alive connection: hot reads of one
    key (coalesced), reads of missing keys (404, audited), writes."""
    assert_ok(c.put(_vpath(eid, "hot"), {"value": 1}), {"success": True})
    done = 1
    i = 0
    while done < n:
        if i % 10 < 7:
            r = c.get(_vpath(eid, "hot"))
            assert r.status == 200, r
        elif i % 10 == 7:
            r = c.get(_vpath(eid, f"missing{i % 7}"))
            assert r.status == 404, r
        else:
            r = c.put(_vpath(eid, f"w{i}"), {"value": i})
            assert r.status == 200, r
        done += 1
        i += 1
    return done


def test_file_sink_gets_every_audited_request(make_stack, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    st = make_stack(env={"AUDIT_FILE": path})
    eid, uid, c = st.execution()
    conns0 = st.fb.connections_accepted
    n = _mixed_requests(c, eid, 2000)
    assert _wait_count(path, eid, n) == n
    events = _read_events(path, eid)
    assert len(events) < n / 2, "identical reads were not coalesced"
    hot = [e for e in events if e.get("key") == "hot" and e["action"] == "get_variable"]
    assert hot and max(int(e.get("count", 1)) for e in hot) > 10, hot[:3]
    for e in events:
        assert {"time", "executionId", "userId", "action", "outcome", "status", "requestId"} <= set(e), e
        if int(e.get("count", 1)) > 1:
            assert e["firstTime"] <= e["lastTime"], e
    # The backend sink got the same requests, over kept-alive connections.
    assert st.fb.wait_for(lambda: _count([e for e in st.fb.audit_events if e.get("executionId") == eid]) >= n,
                          timeout=10)
    assert _count([e for e in st.fb.audit_events if e.get("executionId") == eid]) == n
    posts = len(st.fb.requests_to("/api/internal/audit", "POST"))
    assert posts > 50
    assert st.fb.connections_accepted - conns0 <= 16, \
        f"{st.fb.connections_accepted - conns0} connections for {posts} audit POSTs and the variable calls"
    m = st.metrics()
    assert m.value("cronium_runtime_audit_events_total", sink="file", result="written") >= n
    for sink in ("file", "backend"):
        for result in ("dropped", "failed"):
            assert m.value("cronium_runtime_audit_events_total", sink=sink, result=result) == 0, (sink, result)
    body = st.ready().json()
    assert body["checks"]["audit"] == "ok", body


def test_sighup_reopens_the_file(make_stack, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    st = make_stack(env={"AUDIT_FILE": path})
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "before"), {"value": 1}), {"success": True})
    assert _wait_count(path, eid, 1) == 1
    os.rename(path, path + ".1")
    st.svc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path), "SIGHUP did not reopen the audit file"
    assert_ok(c.put(_vpath(eid, "after"), {"value": 2}), {"success": True})
    assert _wait_count(path, eid, 1) == 1
    assert [e["key"] for e in _read_events(path, eid)] == ["after"]
    assert [e["key"] for e in _read_events(path + ".1", eid)] == ["before"]
    assert st.svc.alive()


def test_slow_backend_sink_loses_visibly_file_complete(make_stack, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    st = make_stack(env={"AUDIT_FILE": path, "AUDIT_QUEUE_SIZE": "20"})
    eid, uid, c = st.execution()
    st.fb.set_delay(0.3, path="/api/internal/audit")
    n = 0
    assert_ok(c.put(_vpath(eid, "first"), {"value": 0}), {"success": True})
    n += 1
    for i in range(300):
        r = c.put(_vpath(eid, f"k{i}"), {"value": i})
        assert r.status == 200, r
        n += 1
    assert _wait_count(path, eid, n) == n, "the file sink lost events"
    m = st.metrics()
    lost = m.value("cronium_runtime_audit_events_total", sink="backend", result="dropped")
    assert lost > 0, "the backend sink's loss was not counted"
    assert m.value("cronium_runtime_audit_events_total", sink="file", result="dropped") == 0
    r = st.ready()
    assert r.status == 200, r
    body = r.json()
    assert body["checks"]["audit"] == "lossy", body
    assert body["status"] == "degraded", body
    assert "audit events lost" in st.svc.stderr()
    st.fb.clear_faults()


def test_required_refuses_writes_when_a_sink_cannot_take_events(make_stack):
    # /dev/full: the file opens, every write fails (ENOSPC).
    st = make_stack(env={"AUDIT_FILE": "/dev/full", "AUDIT_REQUIRED": "true"})
    eid, uid, c = st.execution()
    st.fb.seed_variable(uid, "r", "readable")
    # The first write still finds the sink working; its event's write fails.
    assert_ok(c.put(_vpath(eid, "first"), {"value": 1}), {"success": True})
    assert st.fb.wait_for(lambda: st.metrics().value("cronium_runtime_audit_events_total", sink="file",
                                                     result="failed") >= 1, timeout=5)
    st.fb.clear_requests()
    for i in range(5):
        assert_error(c.put(_vpath(eid, f"refused{i}"), {"value": i}), 503, "audit_unavailable")
    assert_error(c.post(f"/executions/{eid}/output", {"data": 1}), 503, "audit_unavailable")
    assert c.get(_vpath(eid, "r")).status == 200         # reads are never refused
    time.sleep(0.2)
    assert st.fb.requests_to(f"/api/internal/variables/{uid}/*", "PUT") == []
    assert st.fb.requests_to(f"/api/internal/executions/{eid}/output", "POST") == []
    assert st.fb.variable(uid, "refused0") is None
    assert st.ready().json()["checks"]["audit"] == "lossy"


def test_required_writes_pass_when_sinks_take_events(make_stack, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    st = make_stack(env={"AUDIT_FILE": path, "AUDIT_REQUIRED": "true"})
    eid, uid, c = st.execution()
    for i in range(20):
        assert_ok(c.put(_vpath(eid, f"k{i}"), {"value": i}), {"success": True})
    assert _wait_count(path, eid, 20) == 20


def test_sigterm_queued_events_end_in_the_file(make_stack, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    st = make_stack(env={"AUDIT_FILE": path, "SHUTDOWN_TIMEOUT": "2s", "AUDIT_COALESCE_WINDOW": "30s"})
    eid, uid, c = st.execution()
    st.fb.set_delay(10.0, path="/api/internal/audit")
    n = 0
    for i in range(50):
        assert_ok(c.put(_vpath(eid, f"k{i}"), {"value": i}), {"success": True})
        n += 1
    for i in range(100):
        assert c.get(_vpath(eid, "k1")).status == 200       # one coalesced event, still in its window
        n += 1
    c.close()
    t0 = time.monotonic()
    st.svc.terminate()
    rc = st.svc.wait_exit(15)
    assert rc == 0, st.svc.stderr()[-3000:]
    assert time.monotonic() - t0 < 10
    events = _read_events(path, eid)
    assert _count(events) == n, (len(events), _count(events), n)
    assert any(int(e.get("count", 1)) == 100 for e in events)
    assert "audit events not shipped to the backend" in st.svc.stderr()
    st.fb.clear_faults()
