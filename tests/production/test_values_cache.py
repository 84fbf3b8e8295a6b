"""Value encoding toward the backend (docs/api.md §6), type consistency between the
cache and the backend, and the Valkey keys and TTLs of §7."""
import json
import threading
import time
import urllib.parse

import pytest

from lib.http import assert_ok, canon

CACHE_TTL_MS = 3600 * 1000   # the stack runs with CACHE_TTL=1h
LOCK_TTL_MS = 5000           # and LOCK_TTL=5s

# (id, value sent, value every read must give back)
VALUES = [
    ("zero", 0, 0),
    ("false", False, False),
    ("true", True, True),
    ("empty-string", "", ""),
    ("null", None, None),
    ("negative", -7, -7),
    ("float", 1.5, 1.5),
    ("big-int", 12345678901234567890, 12345678901234567890),
    ("plain-string", "plain", "plain"),
    ("unicode", "héllo ☃ 𝄞 \"q\" \\ \n\t end", "héllo ☃ 𝄞 \"q\" \\ \n\t end"),
    ("nested-object", {"a": {"b": [1, {"c": None}], "d": False}, "e": "", "10": 1, "2": 2},
     {"a": {"b": [1, {"c": None}], "d": False}, "e": "", "10": 1, "2": 2}),
    ("array", [1, "a", None, [True, {"x": []}], 0.25], [1, "a", None, [True, {"x": []}], 0.25]),
    ("empty-array", [], []),
    ("empty-object", {}, {}),
    # documented consequence of the text column: a string that spells JSON reads back as that value
    ("string-42", "42", 42),
    ("string-true", "true", True),
    ("string-array", "[1,2]", [1, 2]),
    ("string-not-json", "{not json", "{not json"),
]


def _compact(text):
    """True if `text` has no whitespace outside JSON strings."""
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in " \t\r\n":
            return False
    return True


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{urllib.parse.quote(key, safe='')}"


def _hits(stack):
    return stack.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit")


@pytest.mark.parametrize("vid,value,expected", VALUES, ids=[v[0] for v in VALUES])
def test_backend_receives_strings(stack, vid, value, expected):
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, vid), {"value": value}), {"success": True})
    writes = [w for w in stack.fb.variable_writes if w["userId"] == uid and w["key"] == vid]
    assert len(writes) == 1, writes
    sent = writes[0]["value"]
    assert writes[0]["hasValue"] and isinstance(sent, str), f"backend received a non-string value: {writes[0]!r}"
    if isinstance(value, str):
        assert sent == value, f"a JSON string must be sent as itself: sent {sent!r}"
    else:
        assert canon(json.loads(sent)) == canon(value), f"sent {sent!r} is not the JSON text of {value!r}"
        assert _compact(sent), f"sent text is not compact JSON: {sent!r}"
    assert stack.fb.variable(uid, vid) == sent


@pytest.mark.parametrize("vid,value,expected", VALUES, ids=[v[0] for v in VALUES])
def test_type_consistency_cache_backend_cache(stack, vid, value, expected):
    eid, uid, c = stack.execution()
    p = _vpath(eid, vid)
    want = {"success": True, "data": {"key": vid, "value": expected}}
    cache_key = f"cronium:user:{{{uid}}}:var:{vid}"
    assert_ok(c.put(p, {"value": value}), {"success": True})

    # 1. right after the write: the cache holds the read-back form
    cached = stack.redis_cmd("GET", cache_key)
    assert cached is not None, f"{cache_key} not written to Valkey after PUT"
    assert canon(json.loads(cached)) == canon(expected), f"cache holds {cached!r}, expected {expected!r}"
    hits0 = _hits(stack)
    r1 = c.get(p)
    assert_ok(r1, want)
    assert _hits(stack) > hits0, "the first read was not answered by the cache"

    # 2. cache emptied: the backend answers
    stack.redis_cmd("FLUSHALL")
    gets0 = stack.fb.count(f"/api/internal/variables/{uid}/*", "GET")
    r2 = c.get(p)
    assert_ok(r2, want)
    assert stack.fb.count(f"/api/internal/variables/{uid}/*", "GET") == gets0 + 1, "the read after FLUSHALL did not reach the backend"

    # 3. cache refilled by that read
    refilled = stack.redis_cmd("GET", cache_key)
    assert refilled is not None and canon(json.loads(refilled)) == canon(expected), refilled
    hits1 = _hits(stack)
    r3 = c.get(p)
    assert_ok(r3, want)
    assert _hits(stack) > hits1, "the third read was not answered by the cache"
    assert r1.body == r2.body == r3.body, (r1.body, r2.body, r3.body)


def test_exec_keys_and_ttl(stack):
    eid, uid, c = stack.execution(metadata={"input": {"a": 1}})
    assert c.get(f"/executions/{eid}/context").status == 200
    assert_ok(c.post(f"/executions/{eid}/output", {"data": {"o": [1, None]}}), {"success": True})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": True}), {"success": True})
    # (the rate limiter's :rl key comes and goes with its bucket: not part of this layout)
    keys = sorted(k.decode() for k in stack.redis_cmd("KEYS", f"cronium:exec:{{{eid}}}:*")
                  if not k.decode().endswith(":rl"))
    markers = [f"cronium:exec:{{{eid}}}:{s}:known" for s in ("output", "condition")]
    assert keys == sorted([f"cronium:exec:{{{eid}}}:{s}" for s in ("context", "output", "condition")] + markers), keys
    # The markers that say an output and a condition were set outlive them (7 days here).
    for k in markers:
        assert stack.redis_cmd("GET", k) == b"1"
        assert 7 * 86_400_000 - 60_000 < stack.redis_cmd("PTTL", k) <= 7 * 86_400_000, k
        keys.remove(k)
    ctx = json.loads(stack.redis_cmd("GET", f"cronium:exec:{{{eid}}}:context"))
    assert ctx["executionId"] == eid and ctx["userId"] == uid, ctx
    assert json.loads(stack.redis_cmd("GET", f"cronium:exec:{{{eid}}}:output")) == {"o": [1, None]}
    assert json.loads(stack.redis_cmd("GET", f"cronium:exec:{{{eid}}}:condition")) is True
    for k in keys:
        pttl = stack.redis_cmd("PTTL", k)
        assert CACHE_TTL_MS - 60_000 < pttl <= CACHE_TTL_MS, f"{k}: PTTL {pttl}, CACHE_TTL is 1h"


def test_variable_keys_are_per_user_with_ttl(stack):
    eid, uid, c = stack.execution()
    key = "dir/sub key ☃"
    assert_ok(c.put(_vpath(eid, key), {"value": [1, 2]}), {"success": True})
    vkey = f"cronium:user:{{{uid}}}:var:{key}"
    assert stack.redis_cmd("EXISTS", vkey) == 1, stack.redis_cmd("KEYS", f"*{uid}*")
    assert json.loads(stack.redis_cmd("GET", vkey)) == [1, 2]
    assert CACHE_TTL_MS - 60_000 < stack.redis_cmd("PTTL", vkey) <= CACHE_TTL_MS
    # nothing about variables under the execution's keys (the rate limiter's
    # `rl` key lives there for as long as its bucket is not full again)
    exec_keys = [k.decode() for k in stack.redis_cmd("KEYS", f"*{eid}*")]
    prefix = f"cronium:exec:{{{eid}}}:"
    assert all(k.startswith(prefix) and k[len(prefix):] in ("context", "output", "condition", "rl",
                                                             "output:known", "condition:known")
               for k in exec_keys), exec_keys
    # a read after FLUSHALL refills the key with the TTL
    stack.redis_cmd("FLUSHALL")
    assert_ok(c.get(_vpath(eid, key)), {"success": True, "data": {"key": key, "value": [1, 2]}})
    assert CACHE_TTL_MS - 60_000 < stack.redis_cmd("PTTL", vkey) <= CACHE_TTL_MS


def test_delete_removes_the_cache_key(rich_stack):
    stack = rich_stack   # the fake's opt-in DELETE
    eid, uid, c = stack.execution()
    assert_ok(c.put(_vpath(eid, "d"), {"value": 1}), {"success": True})
    vkey = f"cronium:user:{{{uid}}}:var:d"
    assert stack.redis_cmd("EXISTS", vkey) == 1
    assert_ok(c.delete(_vpath(eid, "d")), {"success": True})
    assert stack.redis_cmd("EXISTS", vkey) == 0


def test_increment_lock_key_with_owner_token_and_ttl(stack):
    eid, uid, c = stack.execution()
    stack.fb.seed_variable(uid, "ctr", "10")
    # hold the increment inside its backend read so the lock can be looked at
    stack.fb.set_delay(0.8, path=f"/api/internal/variables/{uid}/ctr", method="GET", count=1)
    result = {}

    def incr():
        cl = stack.client(eid, uid)
        result["r"] = cl.post(_vpath(eid, "ctr") + "/increment", {"by": 1})

    t = threading.Thread(target=incr, daemon=True)
    t.start()
    lock_key = f"cronium:user:{{{uid}}}:lock:ctr"
    seen = None
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline and seen is None:
        owner = stack.redis_cmd("GET", lock_key)
        if owner is not None:
            seen = (owner, stack.redis_cmd("PTTL", lock_key))
        else:
            time.sleep(0.01)
    t.join(10)
    assert not t.is_alive()
    assert_ok(result["r"], {"success": True, "data": {"key": "ctr", "value": 11}})
    assert seen is not None, f"no {lock_key} in Valkey while the increment ran: {stack.redis_cmd('KEYS', '*lock*')}"
    owner, pttl = seen
    assert len(owner) >= 8, f"lock value is not an owner token: {owner!r}"
    assert 0 < pttl <= LOCK_TTL_MS, f"lock PTTL {pttl}, LOCK_TTL is 5s"
    assert stack.redis_cmd("EXISTS", lock_key) == 0, "lock not released after the increment"
    assert stack.fb.variable(uid, "ctr") == "11"


def test_lock_of_another_owner_is_waited_for_and_not_taken(stack):
    """A lock held by another owner (another runtime) makes the increment wait; it is not stolen."""
    eid, uid, c = stack.execution()
    lock_key = f"cronium:user:{{{uid}}}:lock:held"
    assert stack.redis_cmd("SET", lock_key, "someone-else", "PX", "3000") == "OK"
    result = {}

    def incr():
        result["r"] = stack.client(eid, uid).post(_vpath(eid, "held") + "/increment", {"by": 3})

    t = threading.Thread(target=incr, daemon=True)
    t.start()
    time.sleep(0.4)
    assert "r" not in result, f"the increment did not wait for the other owner's lock: {result.get('r')!r}"
    assert stack.redis_cmd("GET", lock_key) == b"someone-else", "the other owner's lock was taken or deleted"
    assert stack.fb.variable(uid, "held") is None
    stack.redis_cmd("DEL", lock_key)        # the other owner is done
    t.join(10)
    assert not t.is_alive()
    assert_ok(result["r"], {"success": True, "data": {"key": "held", "value": 3}})
    assert stack.fb.variable(uid, "held") == "3"
