"""SIGTERM in production mode: requests waiting on a slow backend are finished
and answered, the audit queue is flushed, and the process exits 0 in time."""
import json
import threading
import time

from lib.http import Client, assert_ok

SHUTDOWN_TIMEOUT = 3.0
ENV = {"SHUTDOWN_TIMEOUT": "3s", "WRITE_TIMEOUT": "5s", "BACKEND_TIMEOUT": "2s"}


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _start_requests(st, eid, uid, n, make_request):
    results = {}
    started = threading.Barrier(n + 1)

    def worker(i):
        c = Client(st.port, st.token(eid, uid), timeout=15)
        c.get("/health")        # connected before the signal
        started.wait(10)
        try:
            results[i] = make_request(c, i)
        except Exception as e:  # noqa: BLE001 - reported by the test
            results[i] = e
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    started.wait(10)
    return threads, results


def test_sigterm_finishes_slow_backend_calls(make_stack):
    st = make_stack(env=ENV)
    eid, uid, c = st.execution()
    assert c.get(f"/executions/{eid}/context").status == 200
    st.fb.seed_variable(uid, "r0", "read-me")
    st.fb.set_delay(1.0, path=f"/api/internal/variables/{uid}/*")
    st.fb.set_delay(1.0, path=f"/api/internal/executions/{eid}/output")
    n = 6

    def req(cl, i):
        if i == 0:
            return cl.get(_vpath(eid, "r0"))
        if i == 1:
            return cl.post(f"/executions/{eid}/output", {"data": {"final": True}})
        return cl.put(_vpath(eid, f"k{i}"), {"value": i})

    threads, results = _start_requests(st, eid, uid, n, req)
    assert st.fb.wait_for(lambda: len([r for r in st.fb.requests if r.status is None]) >= n, timeout=5), \
        "the slow backend calls did not start"
    t0 = time.monotonic()
    st.svc.terminate()
    rc = st.svc.wait_exit(SHUTDOWN_TIMEOUT + 3)
    took = time.monotonic() - t0
    for t in threads:
        t.join(10)
    assert rc == 0, f"exit code {rc} after SIGTERM (None: still running after {SHUTDOWN_TIMEOUT + 3}s)"
    assert took < SHUTDOWN_TIMEOUT + 2, f"exit took {took:.2f}s"
    problems = []
    for i in range(n):
        r = results.get(i)
        if isinstance(r, Exception) or r is None:
            problems.append((i, repr(r)))
        elif r.status != 200:
            problems.append((i, r.status, r.body[:140].decode("utf-8", "replace"), f"after {r.elapsed:.3f}s"))
    assert not problems, (f"{len(problems)} of {n} requests in flight at SIGTERM (backend answering in 1 s, "
                          f"SHUTDOWN_TIMEOUT=3s) were not answered 200: {problems}")
    assert_ok(results[0], {"success": True, "data": {"key": "r0", "value": "read-me"}})
    for i in range(2, n):
        assert st.fb.variable(uid, f"k{i}") == str(i)
    assert st.fb.last_output(eid)["output"] == {"final": True}


def test_sigterm_with_backend_slower_than_the_deadline(make_stack):
    st = make_stack(env={**ENV, "SHUTDOWN_TIMEOUT": "1s"})
    eid, uid, c = st.execution()
    assert c.get(f"/executions/{eid}/context").status == 200
    st.fb.set_delay(20, path=f"/api/internal/variables/{uid}/*")

    def req(cl, i):
        return cl.put(_vpath(eid, f"k{i}"), {"value": i})

    threads, results = _start_requests(st, eid, uid, 3, req)
    assert st.fb.wait_for_count(3, f"/api/internal/variables/{uid}/*", "PUT", timeout=5)
    t0 = time.monotonic()
    st.svc.terminate()
    rc = st.svc.wait_exit(1.0 + 4)
    took = time.monotonic() - t0
    for t in threads:
        t.join(10)
    assert rc == 0, f"exit code {rc}"
    assert took < 1.0 + 3, f"exit took {took:.2f}s with SHUTDOWN_TIMEOUT=1s"
    for i, r in results.items():
        # no success may be claimed for a write the backend never accepted
        assert isinstance(r, Exception) or r.status != 200, (i, r)


def test_sigterm_flushes_the_audit_queue(make_stack):
    st = make_stack(env=ENV)
    eid, uid, c = st.execution()
    st.fb.set_delay(0.3, path="/api/internal/audit")
    for i in range(10):
        assert_ok(c.put(_vpath(eid, f"a{i}"), {"value": i}), {"success": True})
    c.close()
    st.svc.terminate()
    rc = st.svc.wait_exit(SHUTDOWN_TIMEOUT + 3)
    assert rc == 0
    events = [e for e in st.fb.audit_events if isinstance(e, dict) and e.get("executionId") == eid]
    texts = [json.dumps(e.get("details"), ensure_ascii=False) for e in events]
    missing = [i for i in range(10) if not any(f'"a{i}"' in t for t in texts)]
    assert not missing, f"audit events of PUT a{missing} lost at shutdown ({len(events)} events arrived)"


def test_sigterm_deadline_while_valkey_hangs(make_stack):
    """The shutdown deadline passes while reads still wait on a hung Valkey:
    the clients are stopped under them, their late callbacks must not use
    the stopped clients, and the process still exits 0."""
    import os
    import signal
    st = make_stack(env={**ENV, "SHUTDOWN_TIMEOUT": "300ms", "VALKEY_TIMEOUT": "3s"})
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "h"), {"value": 1}), {"success": True})
    os.kill(st.redis.proc.pid, signal.SIGSTOP)
    try:
        def req(cl, i):
            return cl.get(_vpath(eid, "h"))

        threads, results = _start_requests(st, eid, uid, 4, req)
        time.sleep(0.3)     # the GETs are waiting on Valkey now
        t0 = time.monotonic()
        st.svc.terminate()
        rc = st.svc.wait_exit(5)
        took = time.monotonic() - t0
    finally:
        os.kill(st.redis.proc.pid, signal.SIGCONT)
    for t in threads:
        t.join(10)
    assert rc == 0, f"exit code {rc} (None: still running)\n{st.svc.stderr()[-3000:]}"
    assert took < 3, f"exit took {took:.2f}s with SHUTDOWN_TIMEOUT=300ms"
