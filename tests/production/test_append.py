"""POST .../variables/{key}/append in production mode (docs/api.md §4): one
read-modify-write against the backend under the increment's per-key line and
Valkey lock; the backend stores the string, the cache its read-back form."""
import threading

from lib.http import Client, assert_error, assert_ok

from ._support import run_threads


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _ok(key, value):
    return {"success": True, "data": {"key": key, "value": value}}


def test_append_missing_key_and_separator(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.post(_vpath(eid, "log") + "/append", {"value": "a"}), _ok("log", "a"))
    assert stack.fb.variable(uid, "log") == "a"
    assert_ok(c.post(_vpath(eid, "log") + "/append", {"value": "b", "separator": "\n"}), _ok("log", "a\nb"))
    assert_ok(c.post(_vpath(eid, "log") + "/append", {"value": "c", "separator": ", "}), _ok("log", "a\nb, c"))
    assert stack.fb.variable(uid, "log") == "a\nb, c"
    assert_ok(c.get(_vpath(eid, "log")), _ok("log", "a\nb, c"))


def test_append_to_a_number_is_a_conflict_and_writes_nothing(stack):
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "n"), {"value": 5}), {"success": True})
    assert_error(c.post(_vpath(eid, "n") + "/append", {"value": "x"}), 409, "conflict")
    assert stack.fb.variable(uid, "n") == "5"
    stack.fb.seed_variable(uid, "obj", {"a": 1})
    assert_error(c.post(_vpath(eid, "obj") + "/append", {"value": "x"}), 409, "conflict")
    assert_error(c.post(_vpath(eid, "n") + "/append", {"value": 1}), 400, "invalid_body")


def test_append_builds_on_a_value_written_elsewhere(stack):
    """Append reads the backend, never a cached value that may be behind it."""
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "s"), {"value": "old"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "s")), _ok("s", "old"))      # now cached
    stack.fb.seed_variable(uid, "s", "new")                  # changed behind the cache
    assert_ok(c.post(_vpath(eid, "s") + "/append", {"value": "!"}), _ok("s", "new!"))
    assert_ok(c.get(_vpath(eid, "s")), _ok("s", "new!"))


def test_200_concurrent_appends_from_many_connections(stack):
    uid = "user-append-200"
    eids = [stack.execution(user_id=uid)[0] for _ in range(10)]
    seen = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(i):
        eid = eids[i % len(eids)]
        c = Client(stack.port, stack.token(eid, uid), timeout=30)
        barrier.wait(10)
        try:
            for j in range(10):
                r = c.post(_vpath(eid, "log") + "/append", {"value": f"{i}-{j}", "separator": "|"})
                assert r.status == 200, r
                with lock:
                    seen.append(r.json()["data"]["value"])
        finally:
            c.close()

    errors = run_threads(20, worker, timeout=120)
    assert not errors, errors[:3]
    final = stack.fb.variable(uid, "log")
    pieces = final.split("|")
    assert len(pieces) == 200 and sorted(pieces) == sorted(f"{i}-{j}" for i in range(20) for j in range(10))
    assert sorted(len(v.split("|")) for v in seen) == list(range(1, 201))
    r = Client(stack.port, stack.token(eids[0], uid)).get(_vpath(eids[0], "log"))
    assert_ok(r, _ok("log", final))
