"""Variables: key encodings, values that must round-trip exactly, sharing per user,
and atomic increments under concurrency (docs/api.md §2, §4; runtime API issue)."""
import json
import threading
import urllib.parse
from decimal import Decimal

import pytest

from lib import new_id
from lib.http import Client, assert_error, assert_ok


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(env={"RATE_LIMIT_PER_MIN": 1000000, "RATE_LIMIT_BURST": 100000},
                                 args=["--dev"])


@pytest.fixture
def ex(svc):
    eid = new_id()
    return eid, svc.api(svc.token(eid, user_id=new_id("user")))


def q(key):
    return urllib.parse.quote(key, safe="")


# -- keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("encoded,key", [
    ("a%2Fb", "a/b"),
    ("a%2fb", "a/b"),
    ("with%20space", "with space"),
    ("plus+sign", "plus+sign"),
    ("%252F", "%2F"),                       # decoded once only
    ("x%2Fincrement", "x/increment"),       # not the increment route
    ("dots.and-dash_ok~", "dots.and-dash_ok~"),
    ("%D0%BA%D0%BB%D1%8E%D1%87-%F0%9F%94%91", "ключ-🔑"),
    ("caf%C3%A9", "café"),
    ("a%3Fb%23c", "a?b#c"),
    ("quote%22back%5Cslash", 'quote"back\\slash'),
])
def test_key_encodings_round_trip(ex, encoded, key):
    eid, api = ex
    assert_ok(api.put(f"/executions/{eid}/variables/{encoded}", {"value": key}), {"success": True})
    assert_ok(api.get(f"/executions/{eid}/variables/{encoded}"), {"success": True, "data": {"key": key, "value": key}})
    # the same key, encoded the canonical way, names the same variable
    assert_ok(api.get(f"/executions/{eid}/variables/{q(key)}"), {"success": True, "data": {"key": key, "value": key}})


def test_slash_key_is_distinct_from_path_segments(ex):
    eid, api = ex
    assert_ok(api.put(f"/executions/{eid}/variables/a%2Fb", {"value": 1}), {"success": True})
    assert_error(api.get(f"/executions/{eid}/variables/a/b"), 404, "not_found")
    assert_error(api.get(f"/executions/{eid}/variables/a"), 404, "variable_not_found")


def test_increment_on_slash_key(ex):
    eid, api = ex
    assert_ok(api.post(f"/executions/{eid}/variables/a%2Fb/increment", {"by": 3}),
              {"success": True, "data": {"key": "a/b", "value": 3}})


def test_key_255_bytes_ok_256_invalid(ex):
    eid, api = ex
    for key in ("k" * 255, "é" * 127 + "k", "🔑" * 63 + "abc"):
        assert len(key.encode()) == 255
        assert_ok(api.put(f"/executions/{eid}/variables/{q(key)}", {"value": 1}), {"success": True})
        assert_ok(api.get(f"/executions/{eid}/variables/{q(key)}"), {"success": True, "data": {"key": key, "value": 1}})
    for key in ("k" * 256, "é" * 128, "🔑" * 64):
        assert len(key.encode()) == 256
        for method, suffix, body in (("GET", "", None), ("PUT", "", '{"value":1}'), ("DELETE", "", None),
                                     ("POST", "/increment", None)):
            r = api.request(method, f"/executions/{eid}/variables/{q(key)}{suffix}", body=body)
            assert_error(r, 400, "invalid_key")
    r = api.head(f"/executions/{eid}/variables/{q('k' * 256)}")
    assert r.status == 400 and r.body == b"", r


@pytest.mark.parametrize("encoded", ["%00", "a%00b", "a%0Ab", "%0D", "tab%09", "%1F", "del%7F"])
def test_control_characters_invalid_key(ex, encoded):
    eid, api = ex
    assert_error(api.put(f"/executions/{eid}/variables/{encoded}", '{"value":1}'), 400, "invalid_key")
    assert_error(api.get(f"/executions/{eid}/variables/{encoded}"), 400, "invalid_key")


@pytest.mark.parametrize("encoded", ["%FF", "a%C3", "%C0%AF", "%ED%A0%80", "%F8%88%80%80%80"])
def test_non_utf8_invalid_key(ex, encoded):
    eid, api = ex
    assert_error(api.put(f"/executions/{eid}/variables/{encoded}", '{"value":1}'), 400, "invalid_key")


def test_empty_key_invalid(ex):
    eid, api = ex
    assert_error(api.put(f"/executions/{eid}/variables/", '{"value":1}'), 400, "invalid_key")
    assert_error(api.get(f"/executions/{eid}/variables/"), 400, "invalid_key")
    assert_error(api.post(f"/executions/{eid}/variables//increment", ""), 400, "invalid_key")


def test_key_with_raw_utf8_in_path(svc, ex):
    eid, api = ex
    assert_ok(api.put(f"/executions/{eid}/variables/{q('über')}", {"value": "u"}), {"success": True})
    with svc.raw() as c:
        c.send(f"GET /executions/{eid}/variables/über HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {api.token}\r\n\r\n".encode("utf-8"))
        r = c.read_response()
    # Either accepted as the same key or refused as a bad request; never another key or a 500.
    if r.status == 200:
        assert r.json() == {"success": True, "data": {"key": "über", "value": "u"}}
    else:
        assert_error(r, 400)


# -- values ------------------------------------------------------------------------------

VALUES = [
    0, 1, -1, False, True, "", None, [], {}, 0.5, -0.25, 1e-7,
    "plain", "ünïcödé ✓ 🚀 中文", "line\nbreak\ttab", 'quote " and \\ backslash', ["nul\u0000inside"],
    "\u2028\u2029", "</script>&<>",
    {"nested": {"deeper": {"deepest": [1, "two", None, False, {"x": []}]}}},
    [0, False, "", None, [], {}],
    {"": "empty key", "k with space": 1, "ü": "ü"},
    "x" * 100_000,
    list(range(1000)),
]


@pytest.mark.parametrize("value", VALUES, ids=[f"v{i}" for i in range(len(VALUES))])
def test_values_round_trip(ex, value):
    eid, api = ex
    p = f"/executions/{eid}/variables/val"
    assert_ok(api.put(p, {"value": value}), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "val", "value": value}})


@pytest.mark.parametrize("value,back", [("42", 42), ("true", True), ("null", None), ("-1.5", -1.5),
                                        ('{"a":1}', {"a": 1}), ("[1]", [1]),
                                        ("4 2", "4 2"), ("", ""), ("yes", "yes"), ('"q"', '"q"')])
def test_json_looking_strings_read_back_as_in_production(ex, value, back):
    # docs/api.md §6: the backend keeps values in a text column, so a string that is
    # itself JSON text reads back as the value it spells; dev mode does the same,
    # so a script tested here behaves the same in production.
    eid, api = ex
    p = f"/executions/{eid}/variables/s"
    assert_ok(api.put(p, {"value": value}), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "s", "value": back}})


@pytest.mark.parametrize("text", ["12345678901234567890123", "-98765432109876543210", "9007199254740993",
                                  "18446744073709551616", "0.1000000000000000055511151231257827",
                                  "1.5e300", "123456789.123456789123456789", "-0", "1E+2", "2.50"])
def test_big_numbers_round_trip_exactly(ex, text):
    eid, api = ex
    p = f"/executions/{eid}/variables/num"
    assert_ok(api.put(p, '{"value":' + text + '}'), {"success": True})
    r = api.get(p)
    assert r.status == 200, r
    body = json.loads(r.body, parse_float=Decimal, parse_int=Decimal)
    assert body["data"]["value"] == Decimal(text), f"{text} came back as {r.body!r}"
    # Exactly: the number's text is spliced back, not re-printed through a double.
    assert text.encode() in r.body, f"{text} came back as {r.body!r}"


def test_value_with_escapes_exact(ex):
    eid, api = ex
    p = f"/executions/{eid}/variables/esc"
    assert_ok(api.put(p, '{"value":"\\ud83d\\ude80 \\u00e9 \\/ \\u0001"}'), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "esc", "value": "🚀 é / \u0001"}})
    # A NUL only inside a nested value (a top-level string with one is refused: see below).
    assert_ok(api.put(p, '{"value":["\\u0000"]}'), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "esc", "value": ["\u0000"]}})


def test_value_whitespace_in_body_is_fine(ex):
    eid, api = ex
    p = f"/executions/{eid}/variables/ws"
    assert_ok(api.put(p, '\n {  "value" :\t[ 1 , { "a" : null } ]  }\r\n'), {"success": True})
    assert_ok(api.get(p), {"success": True, "data": {"key": "ws", "value": [1, {"a": None}]}})


def test_duplicate_keys_in_body(ex):
    eid, api = ex
    p = f"/executions/{eid}/variables/dup"
    r = api.put(p, '{"value":1,"value":2}')
    if r.status == 200:  # last one wins, as in most JSON parsers, or refused
        assert_ok(api.get(p), {"success": True, "data": {"key": "dup", "value": 2}})
    else:
        assert_error(r, 400, "invalid_body")


# -- sharing -------------------------------------------------------------------------------

def test_variables_shared_by_executions_of_one_user(svc):
    user = new_id("user")
    a, b = new_id(), new_id()
    api_a = svc.api(svc.token(a, user_id=user))
    api_b = svc.api(svc.token(b, user_id=user))
    assert_ok(api_a.put(f"/executions/{a}/variables/shared", {"value": {"from": "a"}}), {"success": True})
    assert_ok(api_b.get(f"/executions/{b}/variables/shared"),
              {"success": True, "data": {"key": "shared", "value": {"from": "a"}}})
    assert_ok(api_b.post(f"/executions/{b}/variables/cnt/increment", ""), {"success": True, "data": {"key": "cnt", "value": 1}})
    assert_ok(api_a.post(f"/executions/{a}/variables/cnt/increment", ""), {"success": True, "data": {"key": "cnt", "value": 2}})
    assert_ok(api_b.delete(f"/executions/{b}/variables/shared"), {"success": True})
    assert_error(api_a.get(f"/executions/{a}/variables/shared"), 404, "variable_not_found")


def test_variables_isolated_between_users(svc):
    a, b = new_id(), new_id()
    api_a = svc.api(svc.token(a, user_id=new_id("user")))
    api_b = svc.api(svc.token(b, user_id=new_id("user")))
    assert_ok(api_a.put(f"/executions/{a}/variables/mine", {"value": "secret"}), {"success": True})
    assert_error(api_b.get(f"/executions/{b}/variables/mine"), 404, "variable_not_found")
    assert api_b.head(f"/executions/{b}/variables/mine").status == 404
    assert_error(api_b.delete(f"/executions/{b}/variables/mine"), 404, "variable_not_found")
    assert_ok(api_b.put(f"/executions/{b}/variables/mine", {"value": "other"}), {"success": True})
    assert_ok(api_a.get(f"/executions/{a}/variables/mine"), {"success": True, "data": {"key": "mine", "value": "secret"}})


def test_variable_owner_is_the_executions_user_not_a_later_claim(svc):
    owner, intruder = new_id("user"), new_id("user")
    eid = new_id()
    # the first token creates the execution, owned by `owner`
    first = svc.api(svc.token(eid, user_id=owner))
    assert first.get(f"/executions/{eid}/input").status == 200
    # a token for the same execution claiming another user still works on the owner's variables
    other = svc.api(svc.token(eid, user_id=intruder))
    assert_ok(other.put(f"/executions/{eid}/variables/who", {"value": "x"}), {"success": True})
    probe_owner = new_id()
    assert_ok(svc.api(svc.token(probe_owner, user_id=owner)).get(f"/executions/{probe_owner}/variables/who"),
              {"success": True, "data": {"key": "who", "value": "x"}})
    probe_intruder = new_id()
    assert_error(svc.api(svc.token(probe_intruder, user_id=intruder)).get(
        f"/executions/{probe_intruder}/variables/who"), 404, "variable_not_found")


# -- concurrency -------------------------------------------------------------------------------

def test_200_concurrent_increments_from_20_clients(svc):
    user = new_id("user")
    execs = [new_id() for _ in range(4)]  # several executions of one user, same key
    tokens = {e: svc.token(e, user_id=user) for e in execs}
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(20, timeout=10)

    def worker(i):
        e = execs[i % len(execs)]
        api = Client(svc.port, tokens[e], timeout=10)
        try:
            barrier.wait()
            for _ in range(10):
                r = api.post(f"/executions/{e}/variables/hits/increment", "")
                if r.status != 200:
                    with lock:
                        errors.append(r)
                    continue
                with lock:
                    results.append(r.json()["data"]["value"])
        except Exception as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)
        finally:
            api.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "increment workers hung"
    assert not errors, errors[:3]
    assert sorted(results) == list(range(1, 201)), "each increment must see a distinct value"
    final = svc.api(tokens[execs[0]]).get(f"/executions/{execs[0]}/variables/hits")
    assert_ok(final, {"success": True, "data": {"key": "hits", "value": 200}})


def test_concurrent_puts_leave_one_whole_value(svc):
    user = new_id("user")
    eid = new_id()
    tok = svc.token(eid, user_id=user)
    values = [{"writer": i, "blob": str(i) * 5000} for i in range(10)]
    errors = []

    def writer(v):
        api = Client(svc.port, tok)
        try:
            for _ in range(5):
                r = api.put(f"/executions/{eid}/variables/race", {"value": v})
                if r.status != 200:
                    errors.append(r)
        finally:
            api.close()

    threads = [threading.Thread(target=writer, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    got = svc.api(tok).get(f"/executions/{eid}/variables/race").json()["data"]["value"]
    assert got in values


# -- values the backend cannot store ------------------------------------------------------

@pytest.mark.parametrize("path,body", [
    ("", b'{"value":"a\\u0000b"}'),
    ("/append", b'{"value":"\\u0000"}'),
    ("/append", b'{"value":"a","separator":"x\\u0000"}'),
])
def test_nul_in_a_string_is_refused_in_dev_mode_too(ex, path, body):
    # Production's backend keeps text without NUL; dev mode gives the same 400 so a
    # script tested here fails the same way there.
    eid, api = ex
    method = "PUT" if not path else "POST"
    r = api.request(method, f"/executions/{eid}/variables/nul{path}", body=body,
                    headers={"Content-Type": "application/json"})
    err = assert_error(r, 400, "invalid_body")
    assert "NUL" in err["message"]
    assert api.get(f"/executions/{eid}/variables/nul").status == 404
    # Inside an object a NUL is only the escape text: stored and read back.
    r = api.put(f"/executions/{eid}/variables/obj", body=b'{"value":{"s":"a\\u0000"}}')
    assert r.status == 200
    assert api.get(f"/executions/{eid}/variables/obj").json()["data"]["value"] == {"s": "a\u0000"}
