"""GET output / GET condition when the cache lost the value (docs/api.md §4, §7): the
real backend cannot give an output or a condition back, so they live in Valkey for
cache.ttl (and in the process that set them). Once both have lost a value that was
set, the answer is 404 `value_unknown`, not the "never set" answer."""
import time

from lib.http import Client, assert_error, assert_ok
from static._openapi import Spec

SPEC = Spec()


def _documented(method, path, r):
    SPEC.check(method, path, r.status, {k.lower(): v for k, v in r.headers}, r.body)
    return r


TTL = 1.0


def _fresh_client(st, eid, uid):
    """A new runtime process on the same backend and Valkey: nothing in its memory."""
    svc = st.add_service()
    c = Client(svc.port, st.token(eid, uid))
    st._clients.append(c)
    return c


def test_output_and_condition_lost_by_the_cache_are_unknown(make_stack):
    st = make_stack(env={"CACHE_TTL": "1s"})
    eid, uid, c = st.execution()
    assert_ok(c.post(f"/executions/{eid}/output", {"data": {"rows": 3}}), {"success": True})
    assert_ok(c.post(f"/executions/{eid}/condition", {"condition": True}), {"success": True})
    # The process that set them still knows them.
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": {"rows": 3}})
    time.sleep(TTL + 0.5)               # the cached values expire
    assert st.redis_cmd("EXISTS", f"cronium:exec:{{{eid}}}:output") == 0
    c2 = _fresh_client(st, eid, uid)
    body = assert_error(_documented("GET", f"/executions/{eid}/output", c2.get(f"/executions/{eid}/output")),
                        404, "value_unknown")
    assert "cache" in body["message"] and "output" in body["message"], body
    body = assert_error(_documented("GET", f"/executions/{eid}/condition",
                                    c2.get(f"/executions/{eid}/condition")), 404, "value_unknown")
    assert "condition" in body["message"], body
    # Setting it again makes it known again.
    assert_ok(c2.post(f"/executions/{eid}/output", {"data": 7}), {"success": True})
    assert_ok(c2.get(f"/executions/{eid}/output"), {"success": True, "data": 7})


def test_evicted_output_is_unknown_to_another_process(make_stack):
    st = make_stack()
    eid, uid, c = st.execution()
    assert_ok(c.post(f"/executions/{eid}/output", {"data": "done"}), {"success": True})
    c2 = _fresh_client(st, eid, uid)
    assert_ok(c2.get(f"/executions/{eid}/output"), {"success": True, "data": "done"})
    st.redis_cmd("DEL", f"cronium:exec:{{{eid}}}:output")      # evicted
    c3 = _fresh_client(st, eid, uid)
    assert_error(c3.get(f"/executions/{eid}/output"), 404, "value_unknown")
    # The setting process still has it in memory, whatever Valkey lost.
    assert_ok(c.get(f"/executions/{eid}/output"), {"success": True, "data": "done"})


def test_never_set_is_the_plain_answer(make_stack):
    st = make_stack(env={"CACHE_TTL": "1s"})
    eid, uid, c = st.execution()
    time.sleep(TTL + 0.2)
    c2 = _fresh_client(st, eid, uid)
    for cl in (c, c2):
        assert_ok(cl.get(f"/executions/{eid}/output"), {"success": True})
        assert_ok(cl.get(f"/executions/{eid}/condition"), {"success": True, "data": {"condition": None}})
