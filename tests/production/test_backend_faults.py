"""Backend faults (docs/api.md §6 retries, §3 503 backend_unavailable): retries with
the whole body, an outage, a slow backend, 4xx never retried, Retry-After."""
import json
import threading
import time

import pytest

from lib.http import assert_error, assert_ok

# The stacks here run with WRITE_TIMEOUT=4s (so the backend deadline is below
# it), BACKEND_TIMEOUT=1s, BACKEND_RETRY_DELAY=50ms, BACKEND_MAX_RETRIES=3.
ENV = {"WRITE_TIMEOUT": "4s", "BACKEND_TIMEOUT": "1s", "BACKEND_RETRY_DELAY": "50ms", "BACKEND_MAX_RETRIES": "3"}
WRITE_TIMEOUT = 4.0
MARGIN = 1.0
VARS = "/api/internal/variables/*"


@pytest.fixture
def st(make_stack):
    return make_stack(env=ENV)


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _warm(st, c, eid):
    """Fetch the context once so later faults hit only the call under test."""
    assert c.get(f"/executions/{eid}/context").status == 200


def test_503_twice_then_200_resends_the_whole_body(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    value = {"report": "x" * 3000, "n": [1, 2, 3], "u": "☃"}
    st.fb.fail_sequence([503, 503], path=VARS, method="PUT")
    r = c.put(_vpath(eid, "big"), {"value": value})
    assert_ok(r, {"success": True})
    puts = st.fb.requests_to(VARS, "PUT")
    assert len(puts) == 3, [(p.status, p.fault) for p in puts]
    assert [p.status for p in puts] == [503, 503, 200]
    bodies = [p.body for p in puts]
    assert bodies[0] == bodies[1] == bodies[2], "retries did not resend the same body"
    sent = json.loads(bodies[0])
    assert set(sent) == {"value"} and isinstance(sent["value"], str), bodies[0][:200]
    assert json.loads(sent["value"]) == value, bodies[0][:200]
    assert all(int(p.header("Content-Length") or -1) == len(bodies[0]) for p in puts)
    assert json.loads(st.fb.variable(uid, "big")) == value
    assert_ok(c.get(_vpath(eid, "big")), {"success": True, "data": {"key": "big", "value": value}})
    m = st.metrics()
    assert m.value("cronium_runtime_backend_retries_total") >= 2


@pytest.mark.parametrize("status", [502, 504])
def test_other_retryable_statuses(st, status):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_sequence([status], path=VARS, method="PUT")
    assert_ok(c.put(_vpath(eid, "k"), {"value": 1}), {"success": True})
    assert [p.status for p in st.fb.requests_to(VARS, "PUT")] == [status, 200]


def test_dropped_connection_is_retried(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.drop_next(1, path=VARS, method="GET")
    st.fb.seed_variable(uid, "k", "7")
    assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": 7}})
    assert st.fb.count(VARS, "GET") == 2


def test_backend_stopped_put_answers_503_and_nothing_half_written(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    assert_ok(c.put(_vpath(eid, "old"), {"value": "v1"}), {"success": True})
    st.fb.stop()
    try:
        r = c.put(_vpath(eid, "old"), {"value": "v2"})
        assert_error(r, 503, "backend_unavailable")
        assert r.elapsed < WRITE_TIMEOUT, f"answered after {r.elapsed:.2f}s, beyond the deadline"
        r = c.put(_vpath(eid, "absent"), {"value": "new"})
        assert_error(r, 503, "backend_unavailable")
        assert r.elapsed < WRITE_TIMEOUT
        # while the backend is away, reads see the old value (or fail), never v2
        r = c.get(_vpath(eid, "old"))
        assert r.status in (200, 503), r
        if r.status == 200:
            assert r.json()["data"]["value"] == "v1", r
    finally:
        st.fb.start()
    assert st.fb.variable(uid, "old") == "v1"
    assert st.fb.variable(uid, "absent") is None
    assert_ok(c.get(_vpath(eid, "old")), {"success": True, "data": {"key": "old", "value": "v1"}})
    assert_error(c.get(_vpath(eid, "absent")), 404, "variable_not_found")
    st.redis_cmd("FLUSHALL")
    assert_ok(c.get(_vpath(eid, "old")), {"success": True, "data": {"key": "old", "value": "v1"}})
    assert_error(c.get(_vpath(eid, "absent")), 404, "variable_not_found")
    # and a new write works again
    assert_ok(c.put(_vpath(eid, "old"), {"value": "v3"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "old")), {"success": True, "data": {"key": "old", "value": "v3"}})
    assert st.fb.variable(uid, "old") == "v3"


def test_backend_stopped_other_writes_answer_503(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.stop()
    try:
        for r in (c.post(f"/executions/{eid}/output", {"data": 1}),
                  c.post(f"/executions/{eid}/condition", {"condition": True}),
                  c.post(_vpath(eid, "n") + "/increment", {"by": 1}),
                  c.delete(_vpath(eid, "n")),
                  c.post("/tool-actions/execute", {"tool": "t", "action": "a", "params": {}})):
            assert_error(r, 503, "backend_unavailable")
            assert r.elapsed < WRITE_TIMEOUT
    finally:
        st.fb.start()
    assert eid not in st.fb.outputs and eid not in st.fb.conditions
    assert st.fb.variable(uid, "n") is None
    # what was not accepted is not visible either
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True})
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": None}})


def test_backend_down_context_unknown_answers_503(st):
    eid, uid, c = st.execution()
    st.fb.stop()
    try:
        r = c.get(f"/executions/{eid}/input")
        assert_error(r, 503, "backend_unavailable")
        assert r.elapsed < WRITE_TIMEOUT
    finally:
        st.fb.start()
    assert c.get(f"/executions/{eid}/input").status == 200


def test_backend_slow_but_within_timeout(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.set_delay(0.4, path=VARS, method="PUT")
    r = c.put(_vpath(eid, "slow"), {"value": 1})
    assert_ok(r, {"success": True})
    assert 0.35 < r.elapsed < WRITE_TIMEOUT, r.elapsed
    assert st.fb.count(VARS, "PUT") == 1, "a slow but successful answer was retried"


def test_backend_too_slow_answers_503_within_deadline(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.set_delay(30, path=VARS, method="GET")
    st.fb.seed_variable(uid, "s", "1")
    r = c.get(_vpath(eid, "s"))
    assert_error(r, 503, "backend_unavailable")
    assert r.elapsed < WRITE_TIMEOUT, f"503 came after {r.elapsed:.2f}s; WRITE_TIMEOUT is {WRITE_TIMEOUT}s"
    assert r.elapsed > 0.9, f"gave up after {r.elapsed:.2f}s, before one BACKEND_TIMEOUT (1s)"
    st.fb.set_delay(0, path=VARS, method="GET")
    assert_ok(c.get(_vpath(eid, "s")), {"success": True, "data": {"key": "s", "value": 1}})


def test_slow_backend_does_not_block_other_requests(st):
    """One loop, no threads: a request waiting on the backend must not stall the others."""
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    assert_ok(c.put(_vpath(eid, "fast"), {"value": 1}), {"success": True})
    st.fb.set_delay(0.8, path=f"/api/internal/variables/{uid}/slow", method="PUT")
    done = {}

    def slow():
        done["r"] = st.client(eid, uid).put(_vpath(eid, "slow"), {"value": 2})

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    for _ in range(20):
        assert_ok(c.get(_vpath(eid, "fast")), {"success": True, "data": {"key": "fast", "value": 1}})
    assert time.monotonic() - t0 < 1.0
    assert "r" not in done
    t.join(10)
    assert_ok(done["r"], {"success": True})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_4xx_is_never_retried(st, status):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_next(1, status=status, path=VARS, method="PUT", body={"error": "refused by test"})
    r = c.put(_vpath(eid, "k"), {"value": 1})
    assert r.status >= 400, r
    time.sleep(0.3)   # a retry would have happened by now (BACKEND_RETRY_DELAY=50ms)
    assert st.fb.count(VARS, "PUT") == 1, f"a {status} was retried: {st.fb.counts()}"
    assert st.fb.variable(uid, "k") is None
    # a refused write is not visible
    assert_error(c.get(_vpath(eid, "k")), 404, "variable_not_found")


@pytest.mark.parametrize("status", [400, 403, 422])
def test_4xx_on_get_is_never_retried(st, status):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_next(1, status=status, path=VARS, method="GET")
    r = c.get(_vpath(eid, "k"))
    assert r.status >= 400, r
    time.sleep(0.3)
    assert st.fb.count(VARS, "GET") == 1, st.fb.counts()


def test_retry_after_honoured_on_429(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_next(1, status=429, path=VARS, method="PUT", retry_after=1)
    r = c.put(_vpath(eid, "k"), {"value": 1})
    assert_ok(r, {"success": True})
    puts = st.fb.requests_to(VARS, "PUT")
    assert [p.status for p in puts] == [429, 200], [(p.status, p.fault) for p in puts]
    gap = puts[1].received_at - puts[0].received_at
    assert gap >= 0.9, f"retried {gap:.3f}s after a 429 with Retry-After: 1"
    assert gap < 2.5, gap
    assert puts[0].body == puts[1].body


def test_retry_after_beyond_deadline_gives_up_at_once(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_next(1, status=429, path=VARS, method="PUT", retry_after=30)
    r = c.put(_vpath(eid, "k"), {"value": 1})
    assert_error(r, 503, "backend_unavailable")
    assert r.elapsed < WRITE_TIMEOUT, r.elapsed
    assert st.fb.count(VARS, "PUT") == 1
    assert st.fb.variable(uid, "k") is None


def test_persistent_503_exhausts_retries(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.respond(503, {"error": "Service Unavailable"}, path=VARS, method="PUT")
    r = c.put(_vpath(eid, "k"), {"value": 1})
    assert_error(r, 503, "backend_unavailable")
    assert r.elapsed < WRITE_TIMEOUT
    n = st.fb.count(VARS, "PUT")
    assert n == 4, f"expected 1 attempt + BACKEND_MAX_RETRIES=3 retries, got {n}"
    bodies = {p.body for p in st.fb.requests_to(VARS, "PUT")}
    assert len(bodies) == 1 and b'"value"' in next(iter(bodies))


def test_ready_reports_backend_down_after_failures(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.stop()
    try:
        for i in range(3):
            assert c.put(_vpath(eid, f"k{i}"), {"value": i}).status == 503
        r = st.ready()
        body = r.json()
        assert body["checks"]["backend"] == "down", body
        assert body["status"] in ("unready", "degraded") and r.status == (503 if body["status"] == "unready" else 200), \
            (r.status, body)
    finally:
        st.fb.start()
    assert_ok(c.put(_vpath(eid, "k"), {"value": 1}), {"success": True})
    r = st.ready()
    assert r.status == 200 and r.json() == {"status": "ready", "checks": {"valkey": "up", "backend": "up", "audit": "ok"}, "ratelimit": "valkey"}, r


def test_500_is_not_retried(st):
    """Only connect errors, timeouts, 502/503/504 and 429 are retried (§6)."""
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.fail_next(1, status=500, path="/api/internal/tools/execute")
    r = c.post("/tool-actions/execute", {"tool": "email", "action": "send", "params": {"to": "x"}})
    assert r.status >= 500, r
    time.sleep(0.3)
    assert st.fb.count("/api/internal/tools/execute", "POST") == 1, st.fb.counts()


def test_increment_write_retried_counts_once(st):
    eid, uid, c = st.execution()
    _warm(st, c, eid)
    st.fb.seed_variable(uid, "n", "5")
    st.fb.fail_sequence([503], path=VARS, method="PUT")
    assert_ok(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), {"success": True, "data": {"key": "n", "value": 6}})
    assert st.fb.variable(uid, "n") == "6"
    puts = st.fb.requests_to(VARS, "PUT")
    assert [p.status for p in puts] == [503, 200] and puts[0].body == puts[1].body


def test_wrong_backend_token_is_a_dependency_failure(make_stack):
    st = make_stack(env={**ENV, "BACKEND_TOKEN": "wrong-token"})
    eid, uid, c = st.execution()
    r = c.get(f"/executions/{eid}/input")
    assert_error(r, 503, "backend_unavailable")
    reqs = st.fb.requests_to(f"/api/internal/executions/{eid}/context", "GET")
    assert len(reqs) == 1 and reqs[0].status == 401, [(q.status, q.header("Authorization")) for q in reqs]
    assert reqs[0].header("Authorization") == "Bearer wrong-token"
