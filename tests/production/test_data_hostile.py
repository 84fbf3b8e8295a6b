"""Data correctness when Valkey or the backend misbehave (issue 9: defects 4, 11, 13, 14, 15, 17).

Real binary, real redis-server, the backend fake. Each test asserts the
concrete outcome: the status and code, the value read back, what the backend
stored, how long it took.
"""
import json
import os
import signal
import socket
import threading
import time

import pytest

from lib.backend import RICH
from lib.http import Client, assert_error, assert_ok
from lib.proc import HOST

from ._support import run_threads

VARS = "/api/internal/variables/*"


def _vpath(eid, key):
    from urllib.parse import quote
    return f"/executions/{eid}/variables/{quote(key, safe='')}"


def _val(key, v):
    return {"success": True, "data": {"key": key, "value": v}}


def _var_key(uid, key):
    return f"cronium:user:{{{uid}}}:var:{key}"


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------------------
# defect 13: an acknowledged write is never followed by a read of the old value
# ---------------------------------------------------------------------------

def test_put_at_maxmemory_noeviction_never_reads_old(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "old"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), _val("k", "old"))           # cached now
    assert st.redis_cmd("GET", _var_key(uid, "k")) == b'"old"'
    st.redis_cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
    st.redis_cmd("CONFIG", "SET", "maxmemory", "1")                 # every SET: -OOM
    try:
        for i in range(5):
            new = f"new-{i}-" + "x" * 2000
            r = c.put(_vpath(eid, "k"), {"value": new})
            if r.status == 200:
                for _ in range(3):
                    assert_ok(c.get(_vpath(eid, "k")), _val("k", new))
            else:
                assert r.status in (502, 503), r
        # The stale entry was deleted (DEL works at maxmemory), not left for its TTL.
        assert st.redis_cmd("GET", _var_key(uid, "k")) in (None,)
    finally:
        st.redis_cmd("CONFIG", "SET", "maxmemory", "0")
    m = st.metrics()
    assert m.value("cronium_runtime_cache_invalidations_total") >= 1


def test_refused_set_and_del_bypass_the_cache(make_stack):
    """Valkey connected but refusing SET and DEL (ACL: -NOPERM): reads go to the backend."""
    st = make_stack(fake_kwargs=RICH)   # it deletes a variable: the fake's opt-in DELETE
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": 1}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), _val("k", 1))
    assert_ok(c.post(f"/executions/{eid}/output", {"data": {"a": 1}}), {"success": True})
    assert st.redis_cmd("GET", f"cronium:exec:{{{eid}}}:output") == b'{"a":1}'
    st.redis_cmd("ACL", "SETUSER", "default", "-set", "-del", "-unlink")
    try:
        assert_ok(c.put(_vpath(eid, "k"), {"value": 2}), {"success": True})
        for _ in range(3):
            assert_ok(c.get(_vpath(eid, "k")), _val("k", 2))
        assert st.redis_cmd("GET", _var_key(uid, "k")) == b"1"   # still stale in Valkey: bypassed
        # output and condition too
        assert_ok(c.post(f"/executions/{eid}/output", {"data": {"a": 2}}), {"success": True})
        assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": {"a": 2}})
        st.redis_cmd("ACL", "SETUSER", "default", "+set")
        # a delete that cannot reach the cache: never reads back the old value
        assert_ok(c.delete(_vpath(eid, "k")), {"success": True})
        assert_error(c.get(_vpath(eid, "k")), 404, "variable_not_found")
    finally:
        st.redis_cmd("ACL", "SETUSER", "default", "+@all")
    # once DEL works again the key is invalidated (retried in the background)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and st.redis_cmd("GET", _var_key(uid, "k")) is not None:
        time.sleep(0.1)
    assert st.redis_cmd("GET", _var_key(uid, "k")) is None
    assert_error(c.get(_vpath(eid, "k")), 404, "variable_not_found")


def test_wrongtype_key_is_replaced(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    st.fb.seed_variable(uid, "k", "7")
    with st.redis.client() as r:
        assert r.cmd("RPUSH", _var_key(uid, "k"), "a", "b") == 2
    assert_ok(c.get(_vpath(eid, "k")), _val("k", 7))
    # the wrong-typed key is not ours: deleted, so the cache works again
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and st.redis_cmd("TYPE", _var_key(uid, "k")) == "list":
        time.sleep(0.05)
    assert st.redis_cmd("TYPE", _var_key(uid, "k")) != "list"
    assert_ok(c.put(_vpath(eid, "k"), {"value": 8}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), _val("k", 8))


def test_5000_refused_cache_writes_then_reconnect_all_read_back_new(make_stack):
    """5000 acknowledged writes Valkey refused (connected, -NOPERM: its data kept, like an
    outage of writes), then Valkey's connections restart: every key reads back new, and
    Valkey itself no longer holds an old value (more than any fixed-size list)."""
    st = make_stack()
    eid, uid, c = st.execution()
    n = 5000
    keys = [f"k{i}" for i in range(n)]
    # The old values, cached the way the service caches them.
    with st.redis.client() as r:
        for i in range(0, n, 500):
            chunk = []
            for k in keys[i:i + 500]:
                chunk += [_var_key(uid, k), "1"]
            assert r.cmd("MSET", *chunk) == "OK"
    assert_ok(c.get(_vpath(eid, keys[0])), _val(keys[0], 1))          # served from the cache
    st.redis_cmd("ACL", "SETUSER", "default", "-set", "-del", "-unlink")
    try:
        def writer(t):
            cl = st.client(eid, uid)
            for k in keys[t::8]:
                r = cl.put(_vpath(eid, k), {"value": 2})
                assert r.status == 200, r
        errs = run_threads(8, writer, timeout=240)
        assert not errs, errs[:3]
        stale = _read_all(st, eid, uid, keys[::10], 2)
        assert not stale, f"{len(stale)} of {n // 10} keys read back stale while Valkey refuses, e.g. {stale[:5]}"
    finally:
        st.redis_cmd("ACL", "SETUSER", "default", "+@all")
    st.redis_cmd("CLIENT", "KILL", "TYPE", "normal")                 # the service reconnects
    st.wait_ready("ready", "up", timeout=15)
    stale = _read_all(st, eid, uid, keys, 2)
    assert not stale, f"{len(stale)} of {n} keys read back stale, e.g. {stale[:5]}"
    # and Valkey itself no longer holds the old values (other processes read it too)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with st.redis.client() as r:
            left = [k for k in keys if r.cmd("GET", _var_key(uid, k)) == b"1"]
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"{len(left)} keys still stale in Valkey: {left[:5]}"


def _read_all(st, eid, uid, keys, want):
    stale = []
    lock = threading.Lock()

    def reader(t):
        cl = st.client(eid, uid)
        for k in keys[t::8]:
            r = cl.get(_vpath(eid, k))
            assert r.status == 200, r
            if r.json()["data"]["value"] != want:
                with lock:
                    stale.append(k)
    errs = run_threads(8, reader, timeout=240)
    assert not errs, errs[:3]
    return stale


# ---------------------------------------------------------------------------
# defect 11 (the store's half): what the cache returns is not trusted
# ---------------------------------------------------------------------------

def test_invalid_cached_values_are_misses(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    st.fb.seed_variable(uid, "k", "5")
    st.redis_cmd("SET", _var_key(uid, "k"), 'not json {"')
    assert_ok(c.get(_vpath(eid, "k")), _val("k", 5))
    # a context naming another execution and user
    eid2 = "exec-poisoned"
    st.fb.seed_execution({"executionId": eid2, "userId": "the-owner"})
    st.redis_cmd("SET", f"cronium:exec:{{{eid2}}}:context",
                 json.dumps({"executionId": "someone-else", "userId": "victim"}))
    c2 = st.client(eid2, "the-owner")
    r = c2.get(f"/executions/{eid2}/context")
    assert r.status == 200, r
    assert r.json()["data"]["executionId"] == eid2 and r.json()["data"]["userId"] == "the-owner", r
    # output / condition of the wrong shape
    st.redis_cmd("SET", f"cronium:exec:{{{eid}}}:output", "{{{{")
    r = c.get(f"/executions/{eid}/output")
    assert r.status == 200 and r.json() == {"success": True}, r
    st.redis_cmd("SET", f"cronium:exec:{{{eid}}}:condition", '"yes"')
    assert_ok(c.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": None}})
    m = st.metrics()
    assert m.value("cronium_runtime_cache_invalid_total", kind="variable") >= 1
    assert m.value("cronium_runtime_cache_invalid_total", kind="context") >= 1


# ---------------------------------------------------------------------------
# defect 14: an error reply to the lock is not "busy"
# ---------------------------------------------------------------------------

def test_increments_with_valkey_refusing_the_lock(make_stack):
    # Declared alone on its port: the in-process line is enough (issue 13).
    st = make_stack(env={"SINGLE_PROCESS": "true"})
    eid, uid, c = st.execution()
    st.redis_cmd("ACL", "SETUSER", "default", "-set")
    try:
        for i in range(1, 6):
            t0 = time.monotonic()
            assert_ok(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), _val("n", i))
            assert time.monotonic() - t0 < 1.5, f"increment {i} took {time.monotonic() - t0:.2f}s"
    finally:
        st.redis_cmd("ACL", "SETUSER", "default", "+@all")
    assert st.fb.variable(uid, "n") == "5"


def test_increments_refused_at_once_when_valkey_refuses_the_lock_and_others_may_share(make_stack):
    # Not declared alone (Valkey configured): no lock means no increment, and
    # the refusal is immediate (an error reply is not "busy").
    st = make_stack()
    eid, uid, c = st.execution()
    st.redis_cmd("ACL", "SETUSER", "default", "-set")
    try:
        t0 = time.monotonic()
        assert_error(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), 503, "cache_unavailable")
        assert time.monotonic() - t0 < 1.5
    finally:
        st.redis_cmd("ACL", "SETUSER", "default", "+@all")
    assert st.fb.variable(uid, "n") is None


# ---------------------------------------------------------------------------
# defect 15: the per-key increment queue
# ---------------------------------------------------------------------------

def test_increment_queue_is_bounded(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    c.get(f"/executions/{eid}/context")
    st.fb.set_delay(2.0, path=f"/api/internal/variables/*/n", method="GET", count=1)
    results = []
    lock = threading.Lock()

    def inc(i):
        cl = st.client(eid, uid, timeout=20)
        if i:
            time.sleep(0.3)      # the first one holds the line
        r = cl.post(_vpath(eid, "n") + "/increment", {"by": 1})
        with lock:
            results.append(r)
    errs = run_threads(80, inc, timeout=60)
    assert not errs, errs[:3]
    ok = [r for r in results if r.status == 200]
    limited = [r for r in results if r.status == 429]
    assert len(ok) + len(limited) == 80, [r for r in results if r.status not in (200, 429)][:3]
    assert len(limited) >= 80 - 1 - 64, (len(ok), len(limited))
    for r in limited:
        assert_error(r, 429, "rate_limited")
    assert st.fb.variable(uid, "n") == str(len(ok))


def test_queued_increment_keeps_its_deadline(make_stack):
    st = make_stack(env={"WRITE_TIMEOUT": "3s"})       # operation budget: 2 s
    eid, uid, c = st.execution()
    c.get(f"/executions/{eid}/context")
    st.fb.set_delay(30, path="/api/internal/variables/*/n", method="GET")
    results = {}

    def inc(i):
        cl = st.client(eid, uid, timeout=20)
        time.sleep(0.2 * i)
        t0 = time.monotonic()
        r = cl.post(_vpath(eid, "n") + "/increment", {"by": 1})
        results[i] = (r, time.monotonic() - t0)
    errs = run_threads(5, inc, timeout=40)
    assert not errs, errs[:3]
    for i, (r, took) in sorted(results.items()):
        assert_error(r, 503, "backend_unavailable")
        assert took < 3.0, f"increment {i} answered after {took:.2f}s (deadline 2 s)"
    st.fb.set_delay(0, path="/api/internal/variables/*/n", method="GET")
    time.sleep(1.0)
    assert st.fb.count(VARS, "PUT") == 0, st.fb.counts()
    assert st.fb.variable(uid, "n") is None


def _raw_increment(port, token, eid, key):
    s = socket.create_connection((HOST, port), timeout=5)
    body = b'{"by":1}'
    s.sendall(b"POST " + _vpath(eid, key).encode() + b"/increment HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def test_queued_increment_of_a_client_that_gave_up_is_not_counted(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    c.get(f"/executions/{eid}/context")
    st.fb.set_delay(1.5, path="/api/internal/variables/*/n", method="GET", count=1)
    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "r", st.client(eid, uid, timeout=20).post(_vpath(eid, "n") + "/increment", {"by": 1})))
    t.start()
    time.sleep(0.3)
    gone = [_raw_increment(st.port, st.token(eid, uid), eid, "n") for _ in range(3)]
    time.sleep(0.3)
    for s in gone:   # the script's curl timed out: the connection is reset
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    t.join(20)
    assert_ok(first["r"], _val("n", 1))
    time.sleep(1.0)
    assert st.fb.variable(uid, "n") == "1", st.fb.variable_writes
    assert st.metrics().value("cronium_runtime_increments_dropped_total") >= 3
    assert_ok(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), _val("n", 2))


# ---------------------------------------------------------------------------
# defect 17: backend faults are 502 backend_error / 503 backend_unavailable
# ---------------------------------------------------------------------------

SECRET = "internal-detail-7f3a"


def _no_echo(r):
    assert SECRET not in r.body.decode("utf-8", "replace"), r


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_unexpected_4xx_on_put_is_backend_error(stack, status):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    stack.fb.fail_next(1, status=status, path=VARS, method="PUT", body={"error": SECRET})
    r = c.put(_vpath(eid, "k"), {"value": 1})
    assert_error(r, 502, "backend_error")
    _no_echo(r)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_not_followed_and_token_stays(stack, status):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    seen = []
    lsock = socket.socket()
    lsock.bind((HOST, 0))
    lsock.listen(8)
    lsock.settimeout(0.2)
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                seen.append(conn.recv(65536))
            except OSError:
                seen.append(b"")
            conn.close()
    th = threading.Thread(target=listen, daemon=True)
    th.start()
    try:
        loc = f"http://{HOST}:{port}/api/internal/variables/{uid}/k"
        for method in ("GET", "PUT"):
            stack.fb.respond(status, {"error": SECRET}, count=1, path=VARS, method=method,
                             headers={"Location": loc})
        r = c.get(_vpath(eid, "k"))
        assert_error(r, 502, "backend_error")
        _no_echo(r)
        r = c.put(_vpath(eid, "k"), {"value": 1})
        assert_error(r, 502, "backend_error")
        time.sleep(0.3)
    finally:
        stop.set()
        th.join(2)
        lsock.close()
    assert seen == [], f"the redirect target received {seen!r}"


def test_500_and_bad_json_are_backend_errors(stack):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    stack.fb.respond(500, SECRET, count=1, path=VARS, method="GET")
    r = c.get(_vpath(eid, "a"))
    assert_error(r, 502, "backend_error")
    _no_echo(r)
    stack.fb.respond(200, "not json " + SECRET, count=1, path=VARS, method="GET")
    r = c.get(_vpath(eid, "b"))
    assert_error(r, 502, "backend_error")
    _no_echo(r)
    stack.fb.respond(500, SECRET, count=1, path=VARS, method="GET")
    r = c.post(_vpath(eid, "n") + "/increment", {"by": 1})
    assert_error(r, 502, "backend_error")
    _no_echo(r)
    stack.fb.respond(302, {"error": SECRET}, count=1, path=VARS, method="PUT", headers={"Location": "/x"})
    assert_error(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), 502, "backend_error")
    eid2, uid2, c2 = stack.execution()
    stack.fb.respond(200, "[1,2", count=1, path=f"*/{eid2}/context", method="GET")
    assert_error(c2.get(f"/executions/{eid2}/context"), 502, "backend_error")
    stack.fb.clear_faults()


def test_context_without_user_is_backend_error(stack):
    eid = "exec-nouser-" + os.urandom(4).hex()
    stack.fb.seed_execution({"executionId": eid, "jobId": "j", "metadata": {}}, complete=False)
    c = stack.client(eid, "someone")
    r = c.get(f"/executions/{eid}/context")
    assert r.status == 200, r
    for r in (c.get(_vpath(eid, "k")), c.put(_vpath(eid, "k"), {"value": 1}),
              c.post(_vpath(eid, "k") + "/increment", {"by": 1})):
        assert_error(r, 502, "backend_error")


@pytest.mark.parametrize("declare_length", [True, False])
def test_huge_backend_body_is_refused_with_bounded_memory(stack, declare_length):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    rss0 = _rss_kib(stack.svc.proc.pid)
    stack.fb.clear_requests()
    stack.fb.stream_next(1, path=VARS, method="GET", size=50 << 20, chunk=1 << 20,
                         declare_length=declare_length)
    t0 = time.monotonic()
    r = c.get(_vpath(eid, "k"), timeout=20)
    assert_error(r, 502, "backend_error")
    assert time.monotonic() - t0 < 5, r
    assert stack.fb.count(VARS, "GET") == 1, "a too-large answer must not be fetched again"
    grew = _rss_kib(stack.svc.proc.pid) - rss0
    assert grew < 40 * 1024, f"RSS grew by {grew} KiB for a 50 MiB answer"


def test_slow_drip_backend_is_unavailable_in_time(stack):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    stack.fb.stream_next(None, path=VARS, method="GET", body=b'{"key":"k","value":"1"}' + b" " * 200,
                         chunk=1, interval=0.1)
    t0 = time.monotonic()
    r = c.get(_vpath(eid, "k"), timeout=20)
    took = time.monotonic() - t0
    stack.fb.clear_faults()
    assert_error(r, 503, "backend_unavailable")
    assert took < 5.5, f"answered after {took:.2f}s"


def test_unreachable_backend_is_unavailable(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    c.get(f"/executions/{eid}/context")
    st.fb.stop()
    try:
        assert_error(c.get(_vpath(eid, "k")), 503, "backend_unavailable")
    finally:
        st.fb.start()


# ---------------------------------------------------------------------------
# defect 4 (the backend half): dot segments never reach the backend as such
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", [".", "..", "a..b", ".x", "...", "./.."])
def test_dot_segment_keys_are_encoded_at_the_backend(stack, key):
    eid, uid, c = stack.execution()
    c.get(f"/executions/{eid}/context")
    stack.fb.clear_requests()
    r = c.put(_vpath(eid, key), {"value": 1})
    if r.status == 400:
        assert_error(r, 400, "invalid_key")
        assert stack.fb.count(None, "PUT") == 0
        return
    assert_ok(r, {"success": True})
    puts = stack.fb.requests_to(None, "PUT")
    assert len(puts) == 1, stack.fb.counts()
    path = puts[0].path
    prefix = f"/api/internal/variables/{uid}/"
    assert path.startswith(prefix), path
    seg = path[len(prefix):]
    assert "." not in seg and "/" not in seg, path
    assert "%2E" in seg, path
    assert stack.fb.variable(uid, key) == "1"
    assert_ok(c.get(_vpath(eid, key)), _val(key, 1))
