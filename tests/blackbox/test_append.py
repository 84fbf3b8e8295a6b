"""POST /executions/{id}/variables/{key}/append in dev mode (docs/api.md §4):
separator, a missing variable starts empty, a non-string is a 409, bad bodies
are a 400 invalid_body, and concurrent appends lose no piece."""
import threading

import pytest

from lib import new_id
from lib.http import assert_error, assert_ok


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(env={"RATE_LIMIT_PER_MIN": 1000000, "RATE_LIMIT_BURST": 100000},
                                 args=["--dev"])


@pytest.fixture
def ex(svc):
    eid, uid = new_id(), new_id("user")
    return eid, uid, svc.api(svc.token(eid, user_id=uid))


def _ap(eid, key):
    return f"/executions/{eid}/variables/{key}/append"


def _ok(key, value):
    return {"success": True, "data": {"key": key, "value": value}}


def test_append_missing_starts_empty_then_separator(ex):
    eid, _, api = ex
    assert_ok(api.post(_ap(eid, "log"), {"value": "first"}), _ok("log", "first"))
    assert_ok(api.post(_ap(eid, "log"), {"value": "second", "separator": ", "}), _ok("log", "first, second"))
    assert_ok(api.post(_ap(eid, "log"), {"value": "ü\n\"x\"", "separator": "\n"}),
              _ok("log", "first, second\nü\n\"x\""))
    assert_ok(api.get(f"/executions/{eid}/variables/log"), _ok("log", "first, second\nü\n\"x\""))


def test_append_to_an_empty_string_and_of_nothing(ex):
    eid, _, api = ex
    assert_ok(api.put(f"/executions/{eid}/variables/e", {"value": ""}), {"success": True})
    assert_ok(api.post(_ap(eid, "e"), {"value": "", "separator": ""}), _ok("e", ""))
    # The separator goes between: none onto empty text (or a missing variable).
    assert_ok(api.post(_ap(eid, "e"), {"value": "a", "separator": "-"}), _ok("e", "a"))
    assert_ok(api.post(_ap(eid, "e"), {"value": "b", "separator": "-"}), _ok("e", "a-b"))
    assert_ok(api.post(_ap(eid, "new"), {"value": "x", "separator": "\n"}), _ok("new", "x"))


@pytest.mark.parametrize("value", [5, 1.5, True, None, [1], {"a": "b"}])
def test_append_to_a_non_string_is_a_conflict(ex, value):
    eid, _, api = ex
    assert_ok(api.put(f"/executions/{eid}/variables/v", {"value": value}), {"success": True})
    assert_error(api.post(_ap(eid, "v"), {"value": "x"}), 409, "conflict")
    assert_ok(api.get(f"/executions/{eid}/variables/v"), _ok("v", value))


def test_a_string_that_spells_a_number_reads_back_as_one(ex):
    # As in production (docs/api.md §6): the append answers the string it made,
    # which reads back as the number it spells; the next append is a 409.
    eid, _, api = ex
    assert_ok(api.post(_ap(eid, "d"), {"value": "4"}), _ok("d", "4"))
    assert_ok(api.get(f"/executions/{eid}/variables/d"), _ok("d", 4))
    assert_error(api.post(_ap(eid, "d"), {"value": "2"}), 409, "conflict")


@pytest.mark.parametrize("body", ["", "{}", '{"value":1}', '{"value":null}', '{"value":"x","separator":1}',
                                  '{"value":"x","separator":null}', "[]", '"x"', "{", '{"separator":"x"}'])
def test_bad_bodies_are_invalid_body(ex, body):
    eid, _, api = ex
    assert_error(api.post(_ap(eid, "b"), body), 400, "invalid_body")
    assert_error(api.get(f"/executions/{eid}/variables/b"), 404, "variable_not_found")


def test_bad_key_and_other_execution(svc, ex):
    eid, _, api = ex
    assert_error(api.post(f"/executions/{eid}/variables/%2E%2E/append", {"value": "x"}), 400, "invalid_key")
    assert_error(api.post(_ap("someone-else", "k"), {"value": "x"}), 403, "execution_mismatch")


def test_append_and_increment_share_a_key(ex):
    eid, _, api = ex
    assert_ok(api.post(f"/executions/{eid}/variables/m/increment", {"by": 1}), _ok("m", 1))
    assert_error(api.post(_ap(eid, "m"), {"value": "x"}), 409, "conflict")
    assert_ok(api.post(_ap(eid, "t"), {"value": "x"}), _ok("t", "x"))
    assert_error(api.post(f"/executions/{eid}/variables/t/increment", {"by": 1}), 409, "conflict")


def test_concurrent_appends_from_two_executions_of_one_user(svc):
    uid = new_id("user")
    eids = [new_id(), new_id()]
    errors = []

    def worker(i):
        eid = eids[i % 2]
        api = svc.api(svc.token(eid, user_id=uid))
        try:
            for j in range(20):
                r = api.post(_ap(eid, "shared"), {"value": f"p{i}.{j}", "separator": ","})
                if r.status != 200:
                    errors.append(r)
        finally:
            api.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    api = svc.api(svc.token(eids[0], user_id=uid))
    r = api.get(f"/executions/{eids[0]}/variables/shared")
    pieces = r.json()["data"]["value"].split(",")
    assert sorted(pieces) == sorted(f"p{i}.{j}" for i in range(10) for j in range(20))
