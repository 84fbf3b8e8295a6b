"""Valkey is a cache (docs/api.md §1): killed under load the service keeps working
through the backend and /ready says degraded; restarted, it is used again."""
import random
import threading
import time

from lib.http import Client, assert_ok

# One process, declared alone on its port: its increments go on through the
# outage under the in-process line (issue 13; without SINGLE_PROCESS they
# would be refused, see test_cross_process.py).
ENV = {"VALKEY_TIMEOUT": "300ms", "SINGLE_PROCESS": "true"}


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _hits(st):
    return st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit")


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.records = []   # (kind, start, end, status or exception text)

    def add(self, kind, start, end, outcome):
        with self.lock:
            self.records.append((kind, start, end, outcome))


def test_valkey_killed_under_load_then_restarted(make_stack):
    st = make_stack(env=ENV)
    uid = "user-vk"
    eid, _, c = st.execution(user_id=uid, metadata={"input": {"a": 1}})
    n_rw, n_incr = 6, 2
    for i in range(n_rw):
        assert_ok(c.put(_vpath(eid, f"own{i}"), {"value": f"w{i}-0"}), {"success": True})
    assert_ok(c.put(_vpath(eid, "common"), {"value": {"shared": True}}), {"success": True})
    rec = Recorder()
    stop = threading.Event()
    last_put = {}
    incr_values = []
    mismatches = []

    def timed(kind, fn):
        t0 = time.monotonic()
        try:
            r = fn()
            outcome = r.status
        except Exception as e:  # noqa: BLE001 - a failed request, recorded
            r, outcome = None, f"{type(e).__name__}: {e}"
        rec.add(kind, t0, time.monotonic(), outcome)
        return r

    def rw_worker(i):
        cl = Client(st.port, st.token(eid, uid), timeout=8)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                v = f"w{i}-{n}"
                r = timed("put", lambda: cl.put(_vpath(eid, f"own{i}"), {"value": v}))
                if r is not None and r.status == 200:
                    last_put[i] = v
                r = timed("get-own", lambda: cl.get(_vpath(eid, f"own{i}")))
                if r is not None and r.status == 200 and i in last_put and r.json()["data"]["value"] != last_put[i]:
                    mismatches.append((i, last_put[i], r.json()))
                timed("get-common", lambda: cl.get(_vpath(eid, "common")))
                if n % 5 == 0:
                    timed("context", lambda: cl.get(f"/executions/{eid}/context"))
        finally:
            cl.close()

    def incr_worker(i):
        cl = Client(st.port, st.token(eid, uid), timeout=8)
        try:
            while not stop.is_set():
                r = timed("incr", lambda: cl.post(_vpath(eid, "ctr") + "/increment", {"by": 1}))
                if r is not None and r.status == 200:
                    incr_values.append(r.json()["data"]["value"])
        finally:
            cl.close()

    threads = [threading.Thread(target=rw_worker, args=(i,), daemon=True) for i in range(n_rw)]
    threads += [threading.Thread(target=incr_worker, args=(i,), daemon=True) for i in range(n_incr)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.2)
        t_kill = time.monotonic()
        st.redis.kill()
        time.sleep(1.8)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads), "load threads did not finish"

    records = rec.records
    failed = [r for r in records if r[3] != 200]
    after_kill_ok = [r for r in records if r[1] > t_kill + 0.05 and r[3] == 200]
    assert len(records) > 200, f"the load made only {len(records)} requests"
    assert len(after_kill_ok) > 50, f"only {len(after_kill_ok)} requests succeeded after Valkey was killed"
    not_in_flight = [r for r in failed if not (r[1] <= t_kill <= r[2])]
    assert not not_in_flight, f"requests failed that were not in flight at the kill: {not_in_flight[:5]}"
    assert len(failed) <= len(threads), failed[:10]
    assert not mismatches, f"a read did not return the thread's own last write: {mismatches[:3]}"
    # increments stayed atomic through the outage
    assert sorted(incr_values) == list(range(1, len(incr_values) + 1)), sorted(incr_values)[-20:]
    ctr = st.fb.variable(uid, "ctr")
    assert ctr is not None and int(ctr) >= len(incr_values)
    assert int(ctr) - len(incr_values) <= sum(1 for r in failed if r[0] == "incr"), (ctr, len(incr_values))

    r, body = st.wait_ready("degraded", "down", timeout=5)
    assert r.status == 200 and body == {"status": "degraded", "checks": {"valkey": "down", "backend": "up", "audit": "ok"}, "ratelimit": "local"}, body
    assert st.metrics().value("cronium_runtime_valkey_up") == 0
    # still serving while Valkey is away, values from the backend
    for i in range(n_rw):
        if i in last_put:
            assert_ok(c.get(_vpath(eid, f"own{i}")),
                      {"success": True, "data": {"key": f"own{i}", "value": last_put[i]}})

    # Valkey back on the same port: reconnected and used again within 10 s
    t_restart = time.monotonic()
    st.redis.start()
    r, body = st.wait_ready("ready", "up", timeout=10)
    assert body == {"status": "ready", "checks": {"valkey": "up", "backend": "up", "audit": "ok"}, "ratelimit": "valkey"}, body
    hits0 = _hits(st)
    used = False
    while time.monotonic() - t_restart < 10 and not used:
        assert_ok(c.get(_vpath(eid, "common")), {"success": True, "data": {"key": "common", "value": {"shared": True}}})
        used = _hits(st) > hits0
        if not used:
            time.sleep(0.1)
    assert used, "no variable cache hit within 10 s of Valkey's restart"
    assert st.metrics().value("cronium_runtime_valkey_up") == 1
    assert st.redis_cmd("EXISTS", f"cronium:user:{{{uid}}}:var:common") == 1


def test_service_starts_with_valkey_down_and_connects_later(make_stack):
    st = make_stack(env=ENV)
    st.redis.kill()
    st.svc.stop()
    svc = st.add_service()
    eid, uid, _ = st.execution()
    c = Client(svc.port, st.token(eid, uid))
    try:
        r, body = st_ready(svc)
        assert body["checks"]["valkey"] == "down" and body["status"] == "degraded" and r.status == 200, body
        assert_ok(c.put(_vpath(eid, "k"), {"value": 1}), {"success": True})
        assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": 1}})
        st.redis.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r, body = st_ready(svc)
            if body["checks"]["valkey"] == "up":
                break
            time.sleep(0.1)
        assert body == {"status": "ready", "checks": {"valkey": "up", "backend": "up", "audit": "ok"}, "ratelimit": "valkey"}, body
        assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": 1}})
        assert st.redis_cmd("EXISTS", f"cronium:user:{{{uid}}}:var:k") == 1
    finally:
        c.close()


def st_ready(svc):
    c = Client(svc.port)
    try:
        r = c.get("/ready")
        return r, r.json()
    finally:
        c.close()


def test_valkey_hanging_requests_bypass_it(make_stack):
    """A Valkey that accepts but never answers (SIGSTOP) costs at most the
    command timeout, never a failed request."""
    import os
    import signal
    st = make_stack(env=ENV)
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "x"}), {"success": True})
    os.kill(st.redis.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for _ in range(3):
            r = c.get(_vpath(eid, "k"))
            assert_ok(r, {"success": True, "data": {"key": "k", "value": "x"}})
            assert r.elapsed < 2.0, f"a read took {r.elapsed:.2f}s with Valkey hanging (VALKEY_TIMEOUT=300ms)"
        assert_ok(c.put(_vpath(eid, "k"), {"value": "y"}), {"success": True})
        assert st.fb.variable(uid, "k") == "y"
        assert time.monotonic() - t0 < 8
    finally:
        os.kill(st.redis.proc.pid, signal.SIGCONT)
    # once it answers again, no stale value survives the write acknowledged while it hung
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if st.ready().json()["checks"]["valkey"] == "up":
            break
        time.sleep(0.1)
    time.sleep(0.3)
    cached = st.redis_cmd("GET", f"cronium:user:{{{uid}}}:var:k")
    assert cached in (None, b'"y"'), (
        f"PUT \"y\" was acknowledged (backend holds {st.fb.variable(uid, 'k')!r}) while Valkey hung; "
        f"after it recovered Valkey still holds {cached!r}, so reads depend on the cache")
    assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": "y"}})


def test_without_valkey_configured(make_stack):
    st = make_stack(valkey=False)
    r = st.ready()
    assert r.status == 200 and r.json() == {"status": "ready", "checks": {"valkey": "disabled", "backend": "up", "audit": "ok"}, "ratelimit": "local"}, r
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": [0]}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": [0]}})
    assert_ok(c.post(_vpath(eid, "k2") + "/increment", {"by": 2}), {"success": True, "data": {"key": "k2", "value": 2}})
    assert st.fb.variable(uid, "k2") == "2"
