"""Increments and appends stay atomic across processes (issue 13 item 2).

Three processes of the binary serve one port (SO_REUSEPORT: each started with
the same PORT), share one redis-server and the backend fake. The lock TTL is
short (200 ms) and the backend is slow now and then: every 0.5 s the next PUT
of the variable waits 0.4 s before the fake applies it, longer than the lock
TTL. A lock that expires while its holder is still writing lets another
process read the old value and write over it: an increment is lost and two
requests answer the same number. Many executions of one user increment one
variable through fresh connections (so the kernel spreads them over the
processes); the backend must end with exactly the count, and the answers must
be exactly 1..count, each once.

Requests answered 429 (the per-key queue is full) or 503 (a wait timed out,
the lock was lost before the write) did nothing and are sent again; the
totals below would show it if one of them had written.
"""
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lib.http import Client, assert_error, assert_ok

PROCESSES = 3
LOCK_TTL = "200ms"
SLOW_PUT_S = 0.4            # > LOCK_TTL: the lock would expire while the PUT runs
SLOW_EVERY_S = 0.5
THREADS = 24
EXECUTIONS = 50
RUN_LIMIT_S = 150


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _start(make_stack):
    st = make_stack(env={"LOCK_TTL": LOCK_TTL, "WRITE_TIMEOUT": "10s", "BACKEND_TIMEOUT": "3s"})
    for _ in range(PROCESSES - 1):
        st.add_service(PORT=str(st.port))
    return st


class _SlowPuts:
    """Every SLOW_EVERY_S, the next PUT matching path is held SLOW_PUT_S before it is applied."""

    def __init__(self, fb, path):
        self.fb, self.path = fb, path
        self.stop = threading.Event()
        self.armed = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(SLOW_EVERY_S):
            self.fb.set_delay(SLOW_PUT_S, path=self.path, method="PUT", count=1)
            self.armed += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(5)
        self.fb.set_delay(0, path=self.path, method="PUT")


def _run_many(st, uid, key, count, send):
    """send(client, eid, i) -> Response, count times from THREADS threads over
    EXECUTIONS executions of uid, each try on a fresh connection; retried on
    429/503. Returns (answers, retried statuses, processes that answered)."""
    eids = [st.execution(user_id=uid)[0] for _ in range(EXECUTIONS)]
    tokens = {e: st.token(e, uid) for e in eids}
    deadline = time.monotonic() + RUN_LIMIT_S
    retried = {}
    lock = threading.Lock()

    def one(i):
        eid = eids[i % len(eids)]
        while True:
            assert time.monotonic() < deadline, f"request {i} still not done after {RUN_LIMIT_S}s"
            c = Client(st.port, tokens[eid], timeout=30)
            try:
                r = send(c, eid, i)
            finally:
                c.close()
            if r.status == 200:
                return r.json()["data"]["value"]
            assert r.status in (429, 503), r
            with lock:
                code = f"{r.status} {r.json().get('code')}"
                retried[code] = retried.get(code, 0) + 1
            time.sleep(random.uniform(0.02, 0.15))

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(one, range(count)))
    return answers, retried


def test_500_increments_across_processes_are_exactly_1_to_500(make_stack):
    st = _start(make_stack)
    uid = "user-xproc-incr"
    count = 500
    t0 = time.monotonic()
    with _SlowPuts(st.fb, f"/api/internal/variables/{uid}/n") as slow:
        answers, retried = _run_many(
            st, uid, "n", count, lambda c, eid, i: c.post(_vpath(eid, "n") + "/increment", {"by": 1}))
    took = time.monotonic() - t0
    print(f"\n{count} increments over {PROCESSES} processes in {took:.1f}s; {slow.armed} slow PUTs; "
          f"retried: {retried}")
    final = st.fb.variable(uid, "n")
    dupes = sorted({v for v in answers if answers.count(v) > 1})
    assert final == str(count) and sorted(answers) == list(range(1, count + 1)), (
        f"backend holds {final!r}; {len(set(answers))} distinct answers of {count}; "
        f"duplicates: {dupes[:20]}; missing: {sorted(set(range(1, count + 1)) - set(answers))[:20]}")


def test_appends_across_processes_lose_no_piece(make_stack):
    st = _start(make_stack)
    uid = "user-xproc-append"
    count = 150
    t0 = time.monotonic()
    with _SlowPuts(st.fb, f"/api/internal/variables/{uid}/log") as slow:
        answers, retried = _run_many(
            st, uid, "log", count,
            lambda c, eid, i: c.post(_vpath(eid, "log") + "/append", {"value": f"p{i}", "separator": ","}))
    took = time.monotonic() - t0
    print(f"\n{count} appends over {PROCESSES} processes in {took:.1f}s; {slow.armed} slow PUTs; "
          f"retried: {retried}")
    final = st.fb.variable(uid, "log")
    pieces = final.split(",")
    assert sorted(pieces) == sorted(f"p{i}" for i in range(count)), (
        f"{len(pieces)} pieces ({len(set(pieces))} distinct) of {count}")
    # Each answer is the string right after that append: lengths 1..count, each once.
    assert sorted(len(a.split(",")) for a in answers) == list(range(1, count + 1))


def test_without_valkey_several_processes_refuse_increments(make_stack):
    """No Valkey and nothing says the process is alone: no cross-process lock,
    so an increment or append is refused (503 cache_unavailable, Retry-After)
    rather than possibly lost; plain reads and writes still work."""
    st = make_stack(valkey=False, env={"SINGLE_PROCESS": "false"})
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "v"), {"value": 1}), {"success": True})
    for r in (c.post(_vpath(eid, "v") + "/increment", {"by": 1}),
              c.post(_vpath(eid, "s") + "/append", {"value": "x"})):
        assert_error(r, 503, "cache_unavailable")
        assert r.header("Retry-After"), r
    assert st.fb.variable(uid, "v") == "1"


def test_valkey_down_refuses_increments_unless_single_process(make_stack):
    st = make_stack(env={"SINGLE_PROCESS": "false"})
    alone = st.add_service(SINGLE_PROCESS="true")
    eid, uid, c = st.execution()
    assert_ok(c.post(_vpath(eid, "n") + "/increment", {"by": 1}), {"success": True, "data": {"key": "n", "value": 1}})
    st.redis.close()
    r = c.post(_vpath(eid, "n") + "/increment", {"by": 1})
    assert_error(r, 503, "cache_unavailable")
    assert r.header("Retry-After"), r
    ca = Client(alone.port, st.token(eid, uid))
    try:
        assert_ok(ca.post(_vpath(eid, "n") + "/increment", {"by": 1}),
                  {"success": True, "data": {"key": "n", "value": 2}})
        assert_ok(ca.post(_vpath(eid, "s") + "/append", {"value": "x"}),
                  {"success": True, "data": {"key": "s", "value": "x"}})
    finally:
        ca.close()
    assert st.fb.variable(uid, "n") == "2"
