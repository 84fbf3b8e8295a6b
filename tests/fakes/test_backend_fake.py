"""Tests of the fake Cronium backend (tests/fakes/backend.py).

Run from /work/main:  /usr/bin/python3 -m pytest tests/fakes
Everything listens on 127.0.0.1 on ports picked at run time.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from fakes.backend import RICH, js_number_text, pg_array_literal, stored_text_of
from lib.backend import FakeBackend, start_fake, stop_fake

TOKEN = "t0ken"
AUTH = {"Authorization": "Bearer " + TOKEN}
BACKEND_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend.py")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def fb():
    fake = start_fake(token=TOKEN)
    fake.seed_execution({"executionId": "exec-1", "jobId": "job-9", "userId": "user-7",
                         "metadata": {"input": {"n": 1}}, "event": {"id": "5", "name": "E", "type": "BASH"}})
    try:
        yield fake
    finally:
        problems = stop_fake(fake)
    assert problems == []


@pytest.fixture
def rich(fb):
    """The same fake with the opt-in richer backend (DELETE, tool actions)."""
    fb.configure({"rich": True})
    return fb


def call(fake, method, path, body=None, headers=None, auth=True, timeout=5):
    """One request on a fresh connection; returns (status, headers dict lower-cased, body bytes)."""
    h = dict(AUTH) if auth else {}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def read_response(f):
    """Read one HTTP/1.1 response (Content-Length framed) from a socket file."""
    status_line = f.readline()
    assert status_line, "connection closed before a response"
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    return status, headers, f.read(n) if n else b""


def raw_socket(fake):
    s = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    return s, s.makefile("rb")


# -- auth --------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/internal/executions/exec-1/context", None),
    ("POST", "/api/internal/executions/exec-1/output", {"output": 1, "timestamp": "x"}),
    ("POST", "/api/internal/executions/exec-1/condition", {"condition": True, "timestamp": "x"}),
    ("GET", "/api/internal/variables/user-7/k", None),
    ("PUT", "/api/internal/variables/user-7/k", {"value": "v"}),
    ("DELETE", "/api/internal/variables/user-7/k", None),
    ("POST", "/api/internal/tools/execute", {"executionId": "exec-1", "userId": "user-7", "tool": "slack",
                                             "action": "send", "params": {}}),
    ("POST", "/api/internal/audit", {"executionId": "exec-1", "action": "a", "details": {}}),
]


@pytest.mark.parametrize("method,path,body", ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "bearer " + TOKEN, TOKEN, "Bearer ", "Basic " + TOKEN])
def test_every_route_refuses_a_bad_token(rich, method, path, body, header):
    fb = rich
    fb.seed_variable("user-7", "k", "v")
    headers = {} if header is None else {"Authorization": header}
    st, hd, data = call(fb, method, path, body, headers=headers, auth=False)
    assert (st, data) == (401, b'{"error":"Unauthorized"}')
    assert hd["content-type"] == "application/json"
    assert fb.variable("user-7", "k") == "v"        # nothing was changed
    assert fb.outputs == {} and fb.audit_events == [] and fb.conditions == {}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer " + TOKEN])
def test_real_default_answers_missing_routes_before_auth(fb, header):
    """DELETE on a variable is a bare 405 and tools/execute the catch-all 404,
    whatever the Authorization header (Next answers them before the route runs)."""
    fb.seed_variable("user-7", "k", "v")
    headers = {} if header is None else {"Authorization": header}
    st, hd, data = call(fb, "DELETE", "/api/internal/variables/user-7/k", headers=headers, auth=False)
    assert (st, data) == (405, b"") and "allow" not in hd and "content-type" not in hd
    st, hd, data = call(fb, "POST", "/api/internal/tools/execute", ROUTES[6][2], headers=headers, auth=False)
    assert st == 404 and hd["content-type"] == "application/json"
    assert fb.variable("user-7", "k") == "v" and fb.tool_calls == [] and fb.variable_deletes == []


def test_lenient_auth_is_the_real_backends_check(fb):
    fb.strict_auth = False
    assert call(fb, "GET", "/api/internal/executions/exec-1/context", headers={"Authorization": TOKEN},
                auth=False)[0] == 200
    assert call(fb, "GET", "/api/internal/executions/exec-1/context", headers={"Authorization": "Bearer "},
                auth=False)[0] == 401
    assert call(fb, "GET", "/api/internal/executions/exec-1/context", auth=False)[0] == 401


def test_token_none_disables_auth():
    with FakeBackend(token=None) as fake:
        fake.seed_execution({"executionId": "e"})
        assert call(fake, "GET", "/api/internal/executions/e/context", auth=False)[0] == 200


# -- context -------------------------------------------------------------------

def test_context_is_answered_in_the_real_shape(fb):
    st, hd, data = call(fb, "GET", "/api/internal/executions/exec-1/context")
    assert st == 200 and hd["content-type"] == "application/json"
    # eventId from the event (a string), the event's real extra fields, a user, no startTime
    assert data == (b'{"executionId":"exec-1","jobId":"job-9","eventId":"5","userId":"user-7",'
                    b'"metadata":{"input":{"n":1}},"event":{"id":"5","name":"E","type":"BASH",'
                    b'"content":"","runLocation":"LOCAL","serverId":null},'
                    b'"user":{"id":"user-7","email":null,"name":null}}')
    assert int(hd["content-length"]) == len(data)


@pytest.mark.parametrize("seeded,event_id", [
    ({}, "-1"),                                   # no event: the job row's "-1", never null
    ({"eventId": None, "event": None}, "-1"),
    ({"eventId": 42}, "42"),                      # a number becomes its text
    ({"eventId": "ev-1", "event": {"id": "other"}}, "ev-1"),
])
def test_context_event_id_is_always_a_string(fb, seeded, event_id):
    fb.seed_execution({"executionId": "e2", "userId": "u", **seeded})
    got = json.loads(call(fb, "GET", "/api/internal/executions/e2/context")[2])
    assert got["eventId"] == event_id


def test_context_has_no_start_time_and_keeps_given_fields(fb):
    fb.seed_execution({"executionId": "e3", "userId": "u", "startTime": "2025-01-01T00:00:00Z",
                       "startedAt": "x", "user": None, "extra": 1,
                       "event": {"id": "9", "name": "n", "type": "T", "content": "echo", "serverId": 3}})
    got = json.loads(call(fb, "GET", "/api/internal/executions/e3/context")[2])
    assert "startTime" not in got and "startedAt" not in got
    assert got["user"] is None and got["extra"] == 1
    assert got["event"] == {"id": "9", "name": "n", "type": "T", "content": "echo", "serverId": 3,
                            "runLocation": "LOCAL"}
    fb.seed_execution({"executionId": "e4", "startTime": "t"}, complete=False)   # verbatim
    assert json.loads(call(fb, "GET", "/api/internal/executions/e4/context")[2]) == {
        "executionId": "e4", "startTime": "t"}


def test_context_of_unknown_execution_is_404(fb):
    st, _, data = call(fb, "GET", "/api/internal/executions/nope/context")
    assert (st, data) == (404, b'{"error":"Execution not found"}')


def test_context_id_is_percent_decoded(fb):
    fb.seed_execution({"executionId": "exec_a/b", "userId": "u"})
    st, _, data = call(fb, "GET", "/api/internal/executions/exec_a%2Fb/context")
    assert st == 200 and json.loads(data)["executionId"] == "exec_a/b"


def test_head_context_has_length_but_no_body(fb):
    s, f = raw_socket(fb)
    try:
        s.sendall(b"HEAD /api/internal/executions/exec-1/context HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
                  b"GET /api/internal/executions/nope/context HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        line = f.readline()
        assert line.startswith(b"HTTP/1.1 200")
        hdrs = {}
        while True:
            l2 = f.readline()
            if l2 == b"\r\n":
                break
            k, _, v = l2.decode().partition(":")
            hdrs[k.lower()] = v.strip()
        assert int(hdrs["content-length"]) > 0
        st, _, body = read_response(f)   # the next response follows right away: no HEAD body
        assert (st, body) == (404, b'{"error":"Execution not found"}')
    finally:
        f.close()
        s.close()


# -- variables -----------------------------------------------------------------

TEXT_CASES = [
    (b'{"value":"hello"}', "hello"),
    (b'{"value":""}', ""),
    (b'{"value":"42"}', "42"),
    (b'{"value":5}', "5"),
    (b'{"value":5.0}', "5"),
    (b'{"value":-0.5}', "-0.5"),
    (b'{"value":1E2}', "100"),
    (b'{"value":1e21}', "1e+21"),
    (b'{"value":0.0000001}', "1e-7"),
    (b'{"value":12345678901234567890}', "12345678901234567000"),
    (b'{"value":-0}', "0"),
    (b'{"value":true}', "true"),
    (b'{"value":false}', "false"),
    (b'{"value":{"a":[1,2.50],"b":null,"c":"x\\"y"}}', '{"a":[1,2.5],"b":null,"c":"x\\"y"}'),
    (b'{"value":{"b":1,"10":2,"2":3}}', '{"2":3,"10":2,"b":1}'),
    (b'{"value":{"\xc3\xa9":"\\u00fc\\n"}}', '{"\u00e9":"\u00fc\\n"}'),
    (b'{"value":[1,"a",null,[true,2.0],{"k":"v"}]}', '{"1","a",NULL,{"true","2"},"{\\"k\\":\\"v\\"}"}'),
    (b'{"value":["a\\"b","c\\\\d"]}', '{"a\\"b","c\\\\d"}'),
    (b'{"value":[]}', "{}"),
    (b'{"value":{"a":{}}}', '{"a":{}}'),
    (rb'{"value":"\u00e9\ud83d\ude00"}', "\u00e9\U0001f600"),
    (b'{"other":1,"value":"v","value":"w"}', "w"),
]


@pytest.mark.parametrize("body,stored", TEXT_CASES)
def test_put_stores_the_text_the_real_column_would_hold(fb, body, stored):
    st, _, data = call(fb, "PUT", "/api/internal/variables/user-7/k", body,
                       headers={"Content-Type": "application/json"})
    assert (st, data) == (200, b'{"success":true}')
    assert fb.variable("user-7", "k") == stored
    st, _, data = call(fb, "GET", "/api/internal/variables/user-7/k")
    got = json.loads(data)
    assert st == 200 and list(got) == ["key", "value", "updatedAt"]
    assert got["key"] == "k" and got["value"] == stored and ISO_MS.match(got["updatedAt"])
    w = fb.variable_writes[-1]
    assert w["stored"] == stored and w["hasValue"] and w["status"] == 200
    assert w["value"] == json.loads(body)["value"]      # what the client sent, as sent


@pytest.mark.parametrize("body", [b'{"value":null}', b'{"value":{}}', b'{}', b'null', b'[1]', b'"x"', b'5',
                                  b'{"value":', b'', b'{"value":NaN}', b'{"value":"a\\u0000b"}',
                                  b'{"value":"v"} x'])
def test_put_that_the_real_backend_refuses_is_500(fb, body):
    fb.seed_variable("user-7", "k", "old")
    st, _, data = call(fb, "PUT", "/api/internal/variables/user-7/k", body)
    assert (st, data) == (500, b'{"error":"Internal server error"}')
    assert fb.variable("user-7", "k") == "old"
    assert fb.variable_writes[-1]["status"] == 500 and fb.variable_writes[-1]["stored"] is None


@pytest.mark.parametrize("key,status", [("k" * 255, 200), ("\u00e9" * 255, 200), ("k" * 256, 500),
                                        ("\u00e9" * 256, 500), ("a%00b", 500)])
def test_put_key_over_255_characters_is_500(fb, key, status):
    """varchar(255) counts characters, not bytes; Postgres text holds no NUL."""
    path = "/api/internal/variables/user-7/" + urllib.parse.quote(key, safe="%")
    st, _, data = call(fb, "PUT", path, {"value": "v"})
    assert st == status
    if status == 500:
        assert data == b'{"error":"Internal server error"}' and fb.variables == {}
    else:
        assert fb.variables == {("user-7", key): "v"}


def test_js_number_precision_is_lost_above_2_to_53(fb):
    for sent, stored in ((b"9007199254740993", "9007199254740992"), (b"9007199254740991", "9007199254740991"),
                         (b"-12345678901234567891", "-12345678901234567000"), (b"0.1e1", "1"),
                         (b"123456789012345678901234", "1.2345678901234569e+23")):
        assert call(fb, "PUT", "/api/internal/variables/user-7/n", b'{"value":' + sent + b"}")[0] == 200
        assert fb.variable("user-7", "n") == stored, sent


def test_variable_writes_record_non_string_values_as_sent(fb):
    call(fb, "PUT", "/api/internal/variables/user-7/a", {"value": "5"})
    call(fb, "PUT", "/api/internal/variables/user-7/b", {"value": 5})
    sent = [(w["key"], w["value"]) for w in fb.variable_writes]
    assert sent == [("a", "5"), ("b", 5)]
    assert [type(w["value"]) for w in fb.variable_writes] == [str, int]
    assert fb.variable("user-7", "a") == fb.variable("user-7", "b") == "5"


def test_get_missing_variable_is_404(fb):
    st, _, data = call(fb, "GET", "/api/internal/variables/user-7/missing")
    assert (st, data) == (404, b'{"error":"Variable not found"}')


def test_variables_are_per_user(fb):
    call(fb, "PUT", "/api/internal/variables/u1/k", {"value": "one"})
    call(fb, "PUT", "/api/internal/variables/u2/k", {"value": "two"})
    assert json.loads(call(fb, "GET", "/api/internal/variables/u1/k")[2])["value"] == "one"
    assert json.loads(call(fb, "GET", "/api/internal/variables/u2/k")[2])["value"] == "two"


@pytest.mark.parametrize("raw_user,raw_key,user,key", [
    ("user-7", "a%2Fb", "user-7", "a/b"),
    ("user-7", "%252F", "user-7", "%2F"),          # decoded once only
    ("user-7", "caf%C3%A9%20x", "user-7", "caf\u00e9 x"),
    ("user-7", "a+b", "user-7", "a+b"),
    ("u%3A1", "k%3Fq%23", "u:1", "k?q#"),
])
def test_path_segments_are_percent_decoded_once(fb, raw_user, raw_key, user, key):
    path = "/api/internal/variables/%s/%s" % (raw_user, raw_key)
    assert call(fb, "PUT", path, {"value": "v"})[0] == 200
    assert fb.variables == {(user, key): "v"}
    st, _, data = call(fb, "GET", path)
    assert st == 200 and json.loads(data)["key"] == key
    assert fb.last_request(method="PUT").path == path    # the raw path stays recorded


def test_delete_supported(rich):
    fb = rich
    fb.seed_variable("user-7", "k", "v")
    st, _, data = call(fb, "DELETE", "/api/internal/variables/user-7/k")
    assert (st, data) == (200, b'{"success":true}')
    assert fb.variable("user-7", "k") is None
    st, _, data = call(fb, "DELETE", "/api/internal/variables/user-7/k")
    assert (st, data) == (404, b'{"error":"Variable not found"}')
    assert [d["existed"] for d in fb.variable_deletes] == [True, False]


@pytest.mark.parametrize("mode,status,ctype", [(None, 405, None), (405, 405, None),
                                                (404, 404, "text/html; charset=utf-8")])
def test_delete_unsupported(fb, mode, status, ctype):
    fb.seed_variable("user-7", "k", "v")
    if mode is not None:
        fb.delete_mode = mode
    st, hd, data = call(fb, "DELETE", "/api/internal/variables/user-7/k")
    assert st == status and hd.get("content-type") == ctype
    if status == 405:   # the real answer: empty, and no Allow header
        assert data == b"" and "allow" not in hd
    assert fb.variable("user-7", "k") == "v" and fb.variable_deletes == []


def test_options_lists_the_methods_of_a_route(fb):
    st, hd, _ = call(fb, "OPTIONS", "/api/internal/variables/user-7/k")
    assert st == 204 and hd["allow"] == "GET, HEAD, PUT, OPTIONS"
    fb.configure({"rich": True})
    assert call(fb, "OPTIONS", "/api/internal/variables/user-7/k")[1]["allow"] == "GET, HEAD, PUT, OPTIONS"
    assert call(fb, "OPTIONS", "/api/internal/tools/execute")[1]["allow"] == "POST, OPTIONS"


# -- output, condition, tools, audit ----------------------------------------------

def test_output_is_stored(fb):
    body = {"output": {"rows": [1, 2], "ok": False}, "timestamp": "2025-01-01T00:00:00Z"}
    st, _, data = call(fb, "POST", "/api/internal/executions/exec-1/output", body)
    assert (st, data) == (200, b'{"success":true}')
    call(fb, "POST", "/api/internal/executions/exec-1/output", {"output": 0, "timestamp": "t2"})
    assert fb.outputs["exec-1"] == [body, {"output": 0, "timestamp": "t2"}]
    assert fb.last_output("exec-1") == {"output": 0, "timestamp": "t2"}


def test_condition_is_stored(fb):
    st, _, data = call(fb, "POST", "/api/internal/executions/exec-1/condition",
                       {"condition": False, "timestamp": "ts"})
    assert (st, data) == (200, b'{"success":true}')
    assert fb.conditions == {"exec-1": [{"condition": False, "timestamp": "ts"}]}


@pytest.mark.parametrize("what", ["output", "condition"])
def test_output_and_condition_for_unknown_execution_and_bad_json(fb, what):
    st, _, data = call(fb, "POST", "/api/internal/executions/nope/%s" % what, {what: 1, "timestamp": "t"})
    assert (st, data) == (404, b'{"error":"Execution not found"}')
    st, _, data = call(fb, "POST", "/api/internal/executions/exec-1/%s" % what, b"{not json")
    assert (st, data) == (500, b'{"error":"Internal server error"}')
    assert fb.outputs == {} and fb.conditions == {}


TOOL = {"executionId": "exec-1", "userId": "user-7", "tool": "slack", "action": "send",
        "params": {"channel": "#x", "n": [1]}}


@pytest.mark.parametrize("what", ["output", "condition"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_output_and_condition_cannot_be_read_back(fb, what, method):
    """The real backend has no way to give an output or a condition back."""
    call(fb, "POST", "/api/internal/executions/exec-1/%s" % what, {what: True, "timestamp": "t"})
    st, hd, data = call(fb, method, "/api/internal/executions/exec-1/%s" % what)
    assert (st, data) == (405, b"") and "allow" not in hd


def test_tools_route_is_the_json_catch_all_by_default(fb):
    st, hd, data = call(fb, "POST", "/api/internal/tools/execute", TOOL)
    got = json.loads(data)
    assert st == 404 and hd["content-type"] == "application/json"
    assert list(got) == ["error", "message", "statusCode", "timestamp"]
    assert got["error"] == "Not Found" and got["statusCode"] == 404 and ISO_MS.match(got["timestamp"])
    assert got["message"] == "API endpoint '/api/internal/tools/execute' does not exist"
    assert fb.tool_calls == []


def test_tool_default_echoes(rich):
    fb = rich
    st, _, data = call(fb, "POST", "/api/internal/tools/execute", TOOL)
    assert st == 200
    assert json.loads(data) == {"success": True, "data": {"tool": "slack", "action": "send",
                                                          "params": {"channel": "#x", "n": [1]}}}
    assert fb.tool_calls == [TOOL]


def test_tool_results_are_configurable(rich):
    fb = rich
    fb.set_tool_result("slack", {"success": False, "data": None, "error": "boom"})
    fb.set_tool_result("slack", lambda req: {"success": True, "data": req["params"]["n"]}, action="send")
    fb.set_tool_result("email", {"success": False, "error": "No connection"}, status=404)
    assert json.loads(call(fb, "POST", "/api/internal/tools/execute", TOOL)[2]) == {"success": True, "data": [1]}
    other = dict(TOOL, action="edit")
    assert json.loads(call(fb, "POST", "/api/internal/tools/execute", other)[2])["error"] == "boom"
    st, _, data = call(fb, "POST", "/api/internal/tools/execute", dict(TOOL, tool="email"))
    assert st == 404 and json.loads(data)["error"] == "No connection"


def test_tool_bad_requests(rich):
    fb = rich
    st, _, data = call(fb, "POST", "/api/internal/tools/execute", {"tool": "slack"})
    assert (st, json.loads(data)) == (400, {"success": False, "error": "Invalid tool-action request"})
    st, _, data = call(fb, "POST", "/api/internal/tools/execute", dict(TOOL, executionId="nope"))
    assert (st, json.loads(data)) == (404, {"success": False, "error": "Execution not found"})
    fb.tools_route = False
    st, hd, data = call(fb, "POST", "/api/internal/tools/execute", TOOL)
    assert st == 404 and hd["content-type"] == "application/json" and b"does not exist" in data


def test_audit_events_are_recorded(fb):
    ev = {"executionId": "exec-1", "action": "set_variable", "details": {"key": "k"},
          "metadata": {"key": "k"}, "timestamp": "t"}
    st, _, data = call(fb, "POST", "/api/internal/audit", ev)
    assert (st, data) == (200, b'{"success":true}')
    assert fb.wait_for(lambda: len(fb.audit_events) == 1, timeout=2)
    assert fb.audit_events == [ev]
    assert call(fb, "POST", "/api/internal/audit", b"nope")[0] == 500


def test_unknown_routes_wrong_methods_and_redirects(fb):
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        st, hd, data = call(fb, method, "/api/internal/nothing", auth=False)
        assert st == 404 and hd["content-type"] == "application/json", method
        assert json.loads(data)["message"] == "API endpoint '/api/internal/nothing' does not exist"
    st, hd, _ = call(fb, "GET", "/executions/exec-1/context")
    assert st == 307 and hd["location"] == "/en/executions/exec-1/context"
    st, hd, data = call(fb, "POST", "/api/internal/executions/exec-1/context", {}, auth=False)
    assert (st, data) == (405, b"") and "allow" not in hd
    st, hd, _ = call(fb, "GET", "/api/internal/audit/")
    assert st == 308 and hd["location"] == "/api/internal/audit"
    st, hd, _ = call(fb, "GET", "/api/internal/variables//k")         # an empty segment
    assert st == 308 and hd["location"] == "/api/internal/variables/k"
    st, hd, _ = call(fb, "PUT", "/api/internal/variables/user-7/k/", {"value": "v"})
    assert st == 308 and hd["location"] == "/api/internal/variables/user-7/k" and fb.variables == {}


def test_idle_keep_alive_connection_is_closed_after_the_real_5s():
    with FakeBackend(token=None) as fake:
        assert fake.idle_timeout == 5.0
        s, f = raw_socket(fake)
        try:
            s.sendall(b"GET /api/internal/variables/u/k HTTP/1.1\r\nHost: x\r\n\r\n")
            st, hd, _ = read_response(f)
            assert st == 404 and hd["keep-alive"] == "timeout=5"
            t0 = time.monotonic()
            s.settimeout(8)
            assert f.read(1) == b""                       # the server closed it
            assert 4.5 <= time.monotonic() - t0 < 7.0
        finally:
            f.close()
            s.close()


# -- inspection -------------------------------------------------------------------

def test_requests_are_recorded_whole(fb):
    body = b'{"value":"x y"}'
    call(fb, "PUT", "/api/internal/variables/user-7/k?x=1", body,
         headers={"X-Execution-ID": "exec-1", "Content-Type": "application/json"})
    call(fb, "GET", "/api/internal/variables/user-7/k")
    call(fb, "GET", "/api/internal/variables/user-7/k")
    r = fb.requests[0]
    assert (r.method, r.path, r.query, r.version) == ("PUT", "/api/internal/variables/user-7/k", "x=1", "HTTP/1.1")
    assert r.body == body and r.json() == {"value": "x y"} and r.status == 200 and r.fault is None
    assert r.header("authorization") == "Bearer " + TOKEN and r.header("x-execution-id") == "exec-1"
    assert fb.counts() == {"PUT /api/internal/variables/user-7/k": 1, "GET /api/internal/variables/user-7/k": 2}
    assert fb.count("/api/internal/variables/*") == 3 and fb.count(method="GET") == 2
    fb.clear_requests()
    assert fb.requests == [] and fb.variable("user-7", "k") == "x y"


# -- faults ----------------------------------------------------------------------------

def test_fail_next_then_normal(fb):
    fb.fail_next(2, status=503, retry_after=1)
    for _ in range(2):
        st, hd, data = call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})
        assert (st, hd["retry-after"], json.loads(data)) == (503, "1", {"error": "Service Unavailable"})
        assert fb.variable("user-7", "k") is None       # not processed
    st, hd, _ = call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})
    assert st == 200 and "retry-after" not in hd and fb.variable("user-7", "k") == "v"
    assert [r.fault for r in fb.requests] == ["status:503", "status:503", None]
    assert [r.status for r in fb.requests] == [503, 503, 200]
    assert all(r.body == b'{"value": "v"}' for r in fb.requests)   # every attempt's body is recorded


def test_fail_sequence_path_and_method_filters(fb):
    fb.fail_sequence([502, 429], path="/api/internal/variables/*", method="GET", body="upstream")
    assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 200
    assert call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})[0] == 200
    st, hd, data = call(fb, "GET", "/api/internal/variables/user-7/k")
    assert (st, data, hd["content-type"]) == (502, b"upstream", "text/plain; charset=utf-8")
    assert call(fb, "GET", "/api/internal/variables/user-7/k")[0] == 429
    assert call(fb, "GET", "/api/internal/variables/user-7/k")[0] == 200


def test_respond_forever_until_cleared(fb):
    fb.respond(500, {"error": "Internal server error"}, path="*/context")
    for _ in range(3):
        assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 500
    fb.clear_faults()
    assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 200


def test_fault_answer_keeps_the_connection_alive(fb):
    fb.fail_next(1, status=503)
    conn = http.client.HTTPConnection("127.0.0.1", fb.port, timeout=5)
    try:
        for expected in (503, 200):
            conn.request("GET", "/api/internal/executions/exec-1/context", headers=AUTH)
            r = conn.getresponse()
            r.read()
            assert r.status == expected
    finally:
        conn.close()
    assert {r.connection for r in fb.requests} == {fb.requests[0].connection}


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_drop_next_closes_without_an_answer(fb, mode):
    fb.drop_next(1, path="/api/internal/variables/*", mode=mode)
    with pytest.raises((ConnectionError, http.client.BadStatusLine)):
        call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})
    assert fb.variable("user-7", "k") is None
    assert call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})[0] == 200
    assert [(r.fault, r.status) for r in fb.requests] == [("drop", None), (None, 200)]


def test_drop_after_processing_loses_only_the_answer(fb):
    fb.drop_next(1, when="after")
    with pytest.raises(ConnectionError):
        call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "v"})
    assert fb.variable("user-7", "k") == "v" and fb.requests[0].fault == "drop-after"


def test_delay_per_path_and_count(fb):
    fb.set_delay(0.3, path="/api/internal/audit")
    fb.set_delay(0.3, path="*/context", count=1)
    t0 = time.monotonic()
    assert call(fb, "POST", "/api/internal/audit", {"action": "x"})[0] == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 200
    assert call(fb, "GET", "/api/internal/variables/user-7/x")[0] == 404
    assert time.monotonic() - t0 < 0.25
    fb.set_delay(0, path="/api/internal/audit")
    t0 = time.monotonic()
    call(fb, "POST", "/api/internal/audit", {"action": "x"})
    assert time.monotonic() - t0 < 0.25


def test_delay_beyond_client_timeout(fb):
    fb.set_delay(2.0)
    with pytest.raises(TimeoutError):
        call(fb, "GET", "/api/internal/executions/exec-1/context", timeout=0.3)


# -- stop / start ---------------------------------------------------------------------

def test_stop_refuses_and_start_keeps_state_and_port(fb):
    port = fb.port
    call(fb, "PUT", "/api/internal/variables/user-7/k", {"value": "kept"})
    fb.fail_next(1, status=503)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/api/internal/variables/user-7/k", headers=AUTH)
    r = conn.getresponse()
    r.read()
    assert r.status == 503 and not r.will_close           # an idle keep-alive connection is left open
    fb.stop()
    assert not fb.running
    conn.sock.settimeout(2)
    try:
        assert conn.sock.recv(1) == b""                   # stop() closed it
    except ConnectionResetError:
        pass
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    fb.start()
    assert fb.port == port
    st, _, data = call(fb, "GET", "/api/internal/variables/user-7/k")
    assert st == 200 and json.loads(data)["value"] == "kept"
    assert call(fb, "GET", "/api/internal/executions/exec-1/context")[0] == 200
    assert fb.count("/api/internal/variables/user-7/k") == 3


def test_stop_interrupts_a_delayed_request(fb):
    fb.set_delay(30)
    errors = []

    def client():
        try:
            call(fb, "GET", "/api/internal/executions/exec-1/context", timeout=10)
        except Exception as e:  # the answer never comes
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    assert fb.wait_for_count(1, timeout=3)
    t0 = time.monotonic()
    fb.stop()
    t.join(5)
    assert time.monotonic() - t0 < 3 and not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (ConnectionError, http.client.BadStatusLine))
    assert fb.requests[0].fault == "stopped"


# -- HTTP/1.1 behaviour ------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(fb):
    before = fb.connections_accepted
    conn = http.client.HTTPConnection("127.0.0.1", fb.port, timeout=5)
    try:
        for i in range(4):
            conn.request("PUT", "/api/internal/variables/user-7/k%d" % i, body=b'{"value":"v"}', headers=AUTH)
            r = conn.getresponse()
            assert r.read() == b'{"success":true}' and r.getheader("Connection") is None
    finally:
        conn.close()
    assert fb.connections_accepted == before + 1
    assert len({r.connection for r in fb.requests}) == 1 and len(fb.variables) == 4


def test_pipelined_requests_and_connection_close(fb):
    s, f = raw_socket(fb)
    try:
        auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        s.sendall(b"PUT /api/internal/variables/user-7/p HTTP/1.1\r\nHost: x\r\n" + auth +
                  b"Content-Length: 13\r\n\r\n{\"value\":\"1\"}"
                  b"GET /api/internal/variables/user-7/p HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
                  b"GET /api/internal/variables/user-7/none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  + auth + b"\r\n")
        st1, _, b1 = read_response(f)
        st2, _, b2 = read_response(f)
        st3, h3, b3 = read_response(f)
        assert (st1, b1) == (200, b'{"success":true}')
        assert st2 == 200 and json.loads(b2)["value"] == "1"
        assert (st3, b3) == (404, b'{"error":"Variable not found"}') and h3["connection"] == "close"
        assert f.read() == b""                        # and the server closed it
    finally:
        f.close()
        s.close()


def test_http10_closes_by_default(fb):
    s, f = raw_socket(fb)
    try:
        s.sendall(b"GET /api/internal/executions/exec-1/context HTTP/1.0\r\nAuthorization: Bearer "
                  + TOKEN.encode() + b"\r\n\r\n")
        st, hd, body = read_response(f)
        assert st == 200 and hd["connection"] == "close" and json.loads(body)["userId"] == "user-7"
        assert f.read() == b""
    finally:
        f.close()
        s.close()


def test_chunked_body_and_expect_100_continue(fb):
    s, f = raw_socket(fb)
    try:
        auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        s.sendall(b"PUT /api/internal/variables/user-7/c HTTP/1.1\r\nHost: x\r\n" + auth +
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"val\r\n9;ext=1\r\nue\":\"ab\"}\r\n0\r\n\r\n")
        assert read_response(f)[:1] == (200,)
        body = b'{"value":"big"}'
        s.sendall(b"PUT /api/internal/variables/user-7/e HTTP/1.1\r\nHost: x\r\n" + auth +
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert f.readline().startswith(b"HTTP/1.1 100")
        assert f.readline() == b"\r\n"
        s.sendall(body)
        assert read_response(f)[0] == 200
    finally:
        f.close()
        s.close()
    assert fb.variable("user-7", "c") == "ab" and fb.variable("user-7", "e") == "big"
    assert fb.requests[0].body == b'{"value":"ab"}'


# -- control API and CLI -------------------------------------------------------------------

def test_control_api_in_process(fb):
    def ctl(method, path, body=None):
        st, _, data = call(fb, method, path, body, auth=False)
        return st, json.loads(data)

    assert ctl("POST", "/_fake/seed", {"executions": [{"executionId": "e2", "userId": "u2"}],
                                       "variables": [{"userId": "u2", "key": "n", "value": 3}]})[0] == 200
    assert fb.variable("u2", "n") == "3" and fb.executions["e2"]["jobId"] == "job-1"
    assert ctl("POST", "/_fake/faults", {"rules": [{"type": "status", "statuses": [503], "retryAfter": 2},
                                                   {"type": "drop", "count": 1}]})[0] == 200
    st, hd, _ = call(fb, "GET", "/api/internal/executions/e2/context")
    assert st == 503 and hd["retry-after"] == "2"
    with pytest.raises(ConnectionError):
        call(fb, "GET", "/api/internal/executions/e2/context")
    assert call(fb, "GET", "/api/internal/executions/e2/context")[0] == 200
    assert call(fb, "DELETE", "/api/internal/variables/u2/n")[0] == 405          # the real default
    assert ctl("POST", "/_fake/config", {"rich": True})[0] == 200
    assert call(fb, "DELETE", "/api/internal/variables/u2/n")[0] == 200
    assert call(fb, "POST", "/api/internal/tools/execute", dict(TOOL, executionId="e2"))[0] == 200
    assert ctl("POST", "/_fake/config", {"rich": True, "deleteMode": 405})[0] == 200
    assert (fb.delete_mode, fb.tools_route) == (405, True)
    st, state = ctl("GET", "/_fake/state")
    assert state["counts"]["GET /api/internal/executions/e2/context"] == 3
    assert state["variables"] == [] and state["config"]["deleteMode"] == 405
    assert [r["fault"] for r in state["requests"]][:2] == ["status:503", "drop"]
    assert ctl("POST", "/_fake/faults", {"type": "nope"})[0] == 400
    assert ctl("POST", "/_fake/reset", {})[0] == 200
    assert fb.requests == [] and fb.executions == {}


def test_rich_opt_in_matches_the_constructor_options():
    assert RICH == {"delete_mode": "supported", "tools_route": True}
    with FakeBackend(token=None, **RICH) as fake:
        fake.seed_execution({"executionId": "e", "userId": "u"})
        fake.seed_variable("u", "k", "v")
        assert call(fake, "DELETE", "/api/internal/variables/u/k", auth=False)[0] == 200
        assert call(fake, "POST", "/api/internal/tools/execute", dict(TOOL, executionId="e"), auth=False)[0] == 200
    with FakeBackend(token=None) as fake:
        assert (fake.delete_mode, fake.tools_route, fake.idle_timeout) == (405, False, 5.0)


@pytest.mark.parametrize("args,delete_status,tool_status", [
    ([], 405, 404), (["--rich"], 200, 200), (["--rich", "--delete-mode", "405"], 405, 200),
    (["--tools-route"], 405, 200), (["--rich", "--no-tools-route"], 200, 404),
    (["--delete-mode", "supported"], 200, 404),
])
def test_cli_real_default_and_rich_flags(tmp_path, args, delete_status, tool_status):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"executions": [{"executionId": "e", "userId": "u"}],
                                "variables": [{"userId": "u", "key": "k", "value": "v"}]}))
    proc = subprocess.Popen([sys.executable, BACKEND_PY, "--port", "0", "--no-auth", "--seed", str(seed)] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.startswith(b"fake-backend listening on http://127.0.0.1:"), (line, proc.stderr.read())
        port = int(line.strip().rsplit(b":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("DELETE", "/api/internal/variables/u/k")
            r = conn.getresponse()
            r.read()
            assert r.status == delete_status
            conn.request("POST", "/api/internal/tools/execute", body=json.dumps(dict(TOOL, executionId="e")))
            r = conn.getresponse()
            r.read()
            assert r.status == tool_status
        finally:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_with_seed_control_outage_and_sigterm(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"executions": [{"executionId": "cli-1", "userId": "cu"}],
                                "variables": [{"userId": "cu", "key": "k", "value": "v"}]}))
    proc = subprocess.Popen([sys.executable, BACKEND_PY, "--host", "127.0.0.1", "--port", "0",
                             "--token", "CLI", "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
        reader.start()
        reader.join(5)
        assert line and line[0].startswith(b"fake-backend listening on http://127.0.0.1:"), line
        port = int(line[0].strip().rsplit(b":", 1)[1])

        def req(method, path, body=None, headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request(method, path, body=None if body is None else json.dumps(body),
                             headers=headers or {})
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()

        auth = {"Authorization": "Bearer CLI"}
        assert req("GET", "/api/internal/executions/cli-1/context")[0] == 401
        st, data = req("GET", "/api/internal/variables/cu/k", headers=auth)
        assert st == 200 and json.loads(data)["value"] == "v"
        assert req("POST", "/_fake/faults", {"type": "status", "status": 504, "count": 1})[0] == 200
        assert req("GET", "/api/internal/executions/cli-1/context", headers=auth)[0] == 504
        assert req("GET", "/api/internal/executions/cli-1/context", headers=auth)[0] == 200
        assert req("POST", "/_fake/outage", {"seconds": 0.6})[0] == 200
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            req("GET", "/_fake/health")
        deadline = time.monotonic() + 5
        while True:
            try:
                st, data = req("GET", "/_fake/state")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        state = json.loads(data)
        assert st == 200 and state["counts"]["GET /api/internal/executions/cli-1/context"] == 3
        assert state["variables"] == [{"userId": "cu", "key": "k", "value": "v",
                                       "updatedAt": state["variables"][0]["updatedAt"]}]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


# -- the text conversion helpers --------------------------------------------------------------

@pytest.mark.parametrize("x,text", [
    (0.0, "0"), (-0.0, "0"), (1.0, "1"), (-3.0, "-3"), (0.1, "0.1"), (1 / 3, "0.3333333333333333"),
    (1e20, "100000000000000000000"), (1e21, "1e+21"), (1.5e300, "1.5e+300"), (1e-6, "0.000001"),
    (1e-7, "1e-7"), (1.25e-7, "1.25e-7"), (123.456, "123.456"), (2.0 ** 53, "9007199254740992"),
    (5e-324, "5e-324"), (float("inf"), "Infinity"), (float("nan"), "NaN"),
])
def test_js_number_text(x, text):
    assert js_number_text(x) == text


def test_pg_array_literal_and_stored_text():
    assert pg_array_literal([["a", None], [], [1.5]]) == '{{"a",NULL},{},{"1.5"}}'
    assert stored_text_of(True) == "true" and stored_text_of("x") == "x"
    with pytest.raises(ValueError):
        stored_text_of(None)
