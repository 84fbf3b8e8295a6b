"""Variables are per user (docs/api.md §2, §7): shared by the executions of one user,
isolated between users, incremented atomically, cache misses coalesced, and
the cache never ends up behind the backend after a write."""
import threading
import time

from lib.http import Client, assert_error, assert_ok

from ._support import run_threads


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def test_write_in_one_execution_is_read_by_another_at_once(rich_stack):
    stack = rich_stack   # it deletes: the fake's opt-in DELETE
    uid = f"user-share-{time.monotonic_ns()}"
    a, _, ca = stack.execution(user_id=uid)
    b, _, cb = stack.execution(user_id=uid)
    assert_ok(ca.put(_vpath(a, "shared"), {"value": "v0"}), {"success": True})
    for i in range(1, 6):
        # b has the previous value cached (it just read it) ...
        assert_ok(cb.get(_vpath(b, "shared")), {"success": True, "data": {"key": "shared", "value": f"v{i - 1}"}})
        # ... a writes, and b sees the new value on its very next read
        assert_ok(ca.put(_vpath(a, "shared"), {"value": f"v{i}"}), {"success": True})
        assert_ok(cb.get(_vpath(b, "shared")), {"success": True, "data": {"key": "shared", "value": f"v{i}"}})
    assert stack.fb.variable(uid, "shared") == "v5"
    # the same through delete and increment
    assert_ok(cb.delete(_vpath(b, "shared")), {"success": True})
    assert_error(ca.get(_vpath(a, "shared")), 404, "variable_not_found")
    assert_ok(ca.post(_vpath(a, "n") + "/increment", {"by": 2}), {"success": True, "data": {"key": "n", "value": 2}})
    assert_ok(cb.get(_vpath(b, "n")), {"success": True, "data": {"key": "n", "value": 2}})
    assert_ok(cb.post(_vpath(b, "n") + "/increment", {}), {"success": True, "data": {"key": "n", "value": 3}})
    assert_ok(ca.get(_vpath(a, "n")), {"success": True, "data": {"key": "n", "value": 3}})


def test_users_are_isolated(rich_stack):
    stack = rich_stack   # it deletes: the fake's opt-in DELETE
    e1, u1, c1 = stack.execution()
    e2, u2, c2 = stack.execution()
    assert_ok(c1.put(_vpath(e1, "same"), {"value": "one"}), {"success": True})
    assert_error(c2.get(_vpath(e2, "same")), 404, "variable_not_found")
    assert c2.head(_vpath(e2, "same")).status == 404
    assert_ok(c2.put(_vpath(e2, "same"), {"value": "two"}), {"success": True})
    assert_ok(c1.get(_vpath(e1, "same")), {"success": True, "data": {"key": "same", "value": "one"}})
    assert_ok(c2.get(_vpath(e2, "same")), {"success": True, "data": {"key": "same", "value": "two"}})
    assert_ok(c2.delete(_vpath(e2, "same")), {"success": True})
    assert_ok(c1.get(_vpath(e1, "same")), {"success": True, "data": {"key": "same", "value": "one"}})
    assert stack.fb.variable(u1, "same") == "one" and stack.fb.variable(u2, "same") is None
    keys = {k.decode() for k in stack.redis_cmd("KEYS", "cronium:user:*:var:same")}
    assert f"cronium:user:{{{u1}}}:var:same" in keys and f"cronium:user:{{{u2}}}:var:same" not in keys, keys
    # a token naming the other user changes nothing: the user comes from the context
    c1_as_u2 = stack.client(e1, u2)
    assert_ok(c1_as_u2.get(_vpath(e1, "same")), {"success": True, "data": {"key": "same", "value": "one"}})


def test_200_concurrent_increments_across_two_executions(stack):
    uid = f"user-incr-{time.monotonic_ns()}"
    a, _, _ = stack.execution(user_id=uid)
    b, _, _ = stack.execution(user_id=uid)
    seen = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(i):
        eid = a if i % 2 else b
        c = stack.client(eid, uid)
        barrier.wait(10)
        for _ in range(10):
            r = c.post(_vpath(eid, "counter") + "/increment", {"by": 1})
            assert r.status == 200, r
            with lock:
                seen.append(r.json()["data"]["value"])

    errors = run_threads(20, worker, timeout=60)
    assert not errors, errors[:3]
    assert sorted(seen) == list(range(1, 201)), f"values returned are not 1..200: {sorted(seen)[:20]}..."
    assert_ok(stack.client(a, uid).get(_vpath(a, "counter")),
              {"success": True, "data": {"key": "counter", "value": 200}})
    assert stack.fb.variable(uid, "counter") == "200"
    stack.redis_cmd("FLUSHALL")
    assert_ok(stack.client(b, uid).get(_vpath(b, "counter")),
              {"success": True, "data": {"key": "counter", "value": 200}})


def test_concurrent_cache_misses_are_coalesced(stack):
    eid, uid, _ = stack.execution()
    stack.fb.seed_variable(uid, "hot", '{"big":[1,2,3]}')
    c0 = stack.client(eid, uid)
    assert c0.get(f"/executions/{eid}/context").status == 200
    stack.redis_cmd("FLUSHALL")
    path = f"/api/internal/variables/{uid}/hot"
    stack.fb.set_delay(0.5, path=path, method="GET")
    before = stack.metrics().value("cronium_runtime_backend_coalesced_total")
    n = 40
    barrier = threading.Barrier(n)
    results = []
    lock = threading.Lock()

    def worker(i):
        c = stack.client(eid, uid)
        c.get("/health")           # connect first, so the GETs start together
        barrier.wait(10)
        r = c.get(_vpath(eid, "hot"))
        with lock:
            results.append(r)

    errors = run_threads(n, worker, timeout=30)
    assert not errors, errors[:3]
    stack.fb.set_delay(0, path=path, method="GET")
    for r in results:
        assert_ok(r, {"success": True, "data": {"key": "hot", "value": {"big": [1, 2, 3]}}})
    gets = stack.fb.count(path, "GET")
    assert gets <= 4, f"{n} parallel cache misses made {gets} backend GETs"
    after = stack.metrics().value("cronium_runtime_backend_coalesced_total")
    assert after - before >= n - gets, (before, after, gets)


def test_cache_not_left_stale_by_a_read_racing_a_write(stack):
    """A backend read that started before a write and answers after it must not
    put the old value back into the cache (the write was acknowledged; every
    later read must see it, docs/api.md §7 "the cache is then updated")."""
    eid, uid, c = stack.execution()
    assert c.get(f"/executions/{eid}/context").status == 200
    stack.fb.seed_variable(uid, "race", "old")
    path = f"/api/internal/variables/{uid}/race"
    # the read is served from the backend's data at once; its answer travels slowly
    stack.fb.set_delay(0.6, path=path, method="GET", count=1, when="after")
    got = {}

    def slow_read():
        got["r"] = stack.client(eid, uid).get(_vpath(eid, "race"))

    t = threading.Thread(target=slow_read, daemon=True)
    t.start()
    assert stack.fb.wait_for_count(1, path, "GET", timeout=5)
    time.sleep(0.05)
    assert_ok(c.put(_vpath(eid, "race"), {"value": "new"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "race")), {"success": True, "data": {"key": "race", "value": "new"}})
    t.join(10)
    assert not t.is_alive()
    assert got["r"].status == 200 and got["r"].json()["data"]["value"] in ("old", "new"), got["r"]
    time.sleep(0.1)
    assert stack.fb.variable(uid, "race") == "new"
    cached = stack.redis_cmd("GET", f"cronium:user:{{{uid}}}:var:race")
    assert cached in (None, b'"new"'), \
        f"after the acknowledged PUT of \"new\", Valkey holds {cached!r} (put back by the late read)"
    assert_ok(c.get(_vpath(eid, "race")), {"success": True, "data": {"key": "race", "value": "new"}})


def test_two_runtime_processes_share_variables_and_increment_atomically(make_stack):
    st = make_stack()
    other = st.add_service()
    uid = "user-pods"
    a, _, ca = st.execution(user_id=uid)
    b, _, _ = st.execution(user_id=uid)
    cb = Client(other.port, st.token(b, uid))
    assert_ok(ca.put(_vpath(a, "x"), {"value": 1}), {"success": True})
    assert_ok(cb.get(_vpath(b, "x")), {"success": True, "data": {"key": "x", "value": 1}})
    assert_ok(ca.put(_vpath(a, "x"), {"value": 2}), {"success": True})
    assert_ok(cb.get(_vpath(b, "x")), {"success": True, "data": {"key": "x", "value": 2}})
    cb.close()

    seen = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def worker(i):
        port, eid = (st.port, a) if i % 2 else (other.port, b)
        c = Client(port, st.token(eid, uid))
        barrier.wait(10)
        try:
            for _ in range(10):
                r = c.post(_vpath(eid, "pods") + "/increment", {"by": 1})
                assert r.status == 200, r
                with lock:
                    seen.append(r.json()["data"]["value"])
        finally:
            c.close()

    errors = run_threads(10, worker, timeout=60)
    assert not errors, errors[:3]
    assert sorted(seen) == list(range(1, 101)), sorted(seen)
    assert st.fb.variable(uid, "pods") == "100"


def _increment_after_put_with_a_read_in_flight(st, eid, uid):
    """A read of the variable is in flight at the backend (it read "0" and its
    answer is slow); then a PUT of 10 is acknowledged; then an increment is
    sent. The increment must build on 10: any read it uses has to start after
    the PUT was accepted (docs/api.md §4: increment is atomic per user and key)."""
    c = st.client(eid, uid)
    assert c.get(f"/executions/{eid}/context").status == 200
    st.fb.seed_variable(uid, "ctr", "0")
    path = f"/api/internal/variables/{uid}/ctr"
    st.fb.set_delay(0.8, path=path, method="GET", count=1, when="after")
    got = {}
    t = threading.Thread(target=lambda: got.update(r=st.client(eid, uid).get(_vpath(eid, "ctr"))), daemon=True)
    t.start()
    assert st.fb.wait_for_count(1, path, "GET", timeout=5), "the read did not reach the backend"
    assert_ok(c.put(_vpath(eid, "ctr"), {"value": 10}), {"success": True})
    assert st.fb.variable(uid, "ctr") == "10"
    r = c.post(_vpath(eid, "ctr") + "/increment", {"by": 1})
    t.join(10)
    assert not t.is_alive()
    assert got["r"].status == 200, got["r"]
    assert r.status == 200, r
    assert r.json()["data"]["value"] == 11 and st.fb.variable(uid, "ctr") == "11", (
        f"increment after an acknowledged PUT of 10 answered {r.json()['data']['value']!r} and the backend "
        f"holds {st.fb.variable(uid, 'ctr')!r}: it reused a backend read that started before the PUT")


def test_increment_never_reuses_a_read_older_than_the_last_write(stack):
    eid, uid, _ = stack.execution()
    stack.redis_cmd("FLUSHALL")     # the read below misses the cache and goes to the backend
    _increment_after_put_with_a_read_in_flight(stack, eid, uid)


def test_increment_never_reuses_a_read_older_than_the_last_write_without_valkey(make_stack):
    st = make_stack(valkey=False)
    eid, uid, _ = st.execution()
    _increment_after_put_with_a_read_in_flight(st, eid, uid)


def test_read_after_acknowledged_write_without_valkey(make_stack):
    """Valkey off: a GET sent after a PUT was acknowledged must not join a
    backend read that started before that PUT (it would return the old value)."""
    st = make_stack(valkey=False)
    uid = "user-ryw"
    a, _, ca = st.execution(user_id=uid)
    b, _, cb = st.execution(user_id=uid)
    assert ca.get(f"/executions/{a}/context").status == 200
    assert cb.get(f"/executions/{b}/context").status == 200
    st.fb.seed_variable(uid, "v", "old")
    path = f"/api/internal/variables/{uid}/v"
    st.fb.set_delay(0.8, path=path, method="GET", count=1, when="after")
    got = {}
    t = threading.Thread(target=lambda: got.update(r=st.client(b, uid).get(_vpath(b, "v"))), daemon=True)
    t.start()
    assert st.fb.wait_for_count(1, path, "GET", timeout=5)
    assert_ok(ca.put(_vpath(a, "v"), {"value": "new"}), {"success": True})
    r = cb.get(_vpath(b, "v"))
    t.join(10)
    assert_ok(r, {"success": True, "data": {"key": "v", "value": "new"}})
