"""HTTP/1.1 protocol behaviour over raw sockets (service core issue)."""
import json
import time

import pytest

from lib import new_id
from lib.http import RawConn, assert_error, build_request, chunked

MAX_BODY = 1024


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(env={"MAX_BODY_BYTES": MAX_BODY, "RATE_LIMIT_PER_MIN": 1000000,
                                      "RATE_LIMIT_BURST": 100000}, args=["--dev"])


@pytest.fixture
def ex(svc):
    """A fresh execution id and its token."""
    eid = new_id()
    return eid, svc.token(eid, user_id=new_id("user"))


def auth(tok, **more):
    return {"Authorization": f"Bearer {tok}", **more}


def test_pipelined_requests_answered_in_order(svc):
    with svc.raw() as c:
        reqs = b"".join(build_request("GET", p, headers={"X-Request-Id": f"pipe-{i}"})
                        for i, p in enumerate(["/health", "/nope", "/ready", "/health", "/metrics"]))
        c.send(reqs)
        statuses = []
        for i in range(5):
            r = c.read_response()
            assert r.header("X-Request-Id") == f"pipe-{i}", r
            statuses.append(r.status)
        assert statuses == [200, 404, 200, 200, 200]


def test_pipelined_api_requests_keep_order(svc, ex):
    eid, tok = ex
    path = f"/executions/{eid}/variables/pipe"
    reqs = [
        build_request("PUT", path, json.dumps({"value": 1}), auth(tok, **{"X-Request-Id": "p0"})),
        build_request("GET", path, None, auth(tok, **{"X-Request-Id": "p1"})),
        build_request("PUT", path, json.dumps({"value": 2}), auth(tok, **{"X-Request-Id": "p2"})),
        build_request("GET", path, None, auth(tok, **{"X-Request-Id": "p3"})),
        build_request("DELETE", path, None, auth(tok, **{"X-Request-Id": "p4"})),
        build_request("GET", path, None, auth(tok, **{"X-Request-Id": "p5"})),
    ]
    with svc.raw() as c:
        c.send(b"".join(reqs))
        rs = [c.read_response() for _ in reqs]
    assert [r.header("X-Request-Id") for r in rs] == [f"p{i}" for i in range(6)]
    assert [r.status for r in rs] == [200, 200, 200, 200, 200, 404]
    assert rs[1].json() == {"success": True, "data": {"key": "pipe", "value": 1}}
    assert rs[3].json() == {"success": True, "data": {"key": "pipe", "value": 2}}
    assert rs[5].json()["code"] == "variable_not_found"


def test_pipelined_requests_split_at_odd_places(svc):
    data = build_request("GET", "/health") * 3
    with svc.raw() as c:
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.001)
        for _ in range(3):
            assert c.read_response().status == 200


def test_keep_alive_reuse_over_1000_requests(svc):
    with svc.raw() as c:
        ids = set()
        for i in range(1000):
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            assert r.status == 200, (i, r)
            assert (r.header("Connection") or "").lower() != "close", (i, r)
            ids.add(r.header("X-Request-Id"))
        assert len(ids) == 1000
        assert c.is_open(0.1)


def test_chunked_request_body(svc, ex):
    eid, tok = ex
    body = json.dumps({"value": {"text": "chunked ✓", "n": [1, 2, 3]}}).encode()
    pieces = [body[:5], body[5:6], body[6:20], body[20:]]
    head = (f"PUT /executions/{eid}/variables/chunky HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    enc = chunked(pieces)
    with svc.raw() as c:
        c.send(head)
        for i in range(0, len(enc), 9):  # trickle the chunks
            c.send(enc[i:i + 9])
            time.sleep(0.002)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"success": True}
        r = c.request("GET", f"/executions/{eid}/variables/chunky", headers=auth(tok))
        assert r.json() == {"success": True, "data": {"key": "chunky",
                                                      "value": {"text": "chunked ✓", "n": [1, 2, 3]}}}


def test_chunked_body_with_extension_and_trailer(svc, ex):
    eid, tok = ex
    body = b'{"value":"t"}'
    enc = (f"{len(body):x};ext=1\r\n").encode() + body + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    head = (f"PUT /executions/{eid}/variables/tr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    with svc.raw() as c:
        c.send(head + enc)
        r = c.read_response()
        assert r.status == 200, r
        r = c.request("GET", f"/executions/{eid}/variables/tr", headers=auth(tok))
        assert r.json()["data"]["value"] == "t"


def test_chunked_body_over_limit_is_413(svc, ex):
    eid, tok = ex
    value = "x" * (MAX_BODY + 100)
    body = json.dumps({"value": value}).encode()
    enc = chunked([body[i:i + 200] for i in range(0, len(body), 200)])
    head = (f"PUT /executions/{eid}/variables/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    with svc.raw() as c:
        try:
            c.send(head + enc)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
    assert_error(r, 413, "payload_too_large")


def test_expect_100_continue(svc, ex):
    eid, tok = ex
    body = b'{"value":100}'
    head = (f"PUT /executions/{eid}/variables/cont HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Expect: 100-continue\r\n\r\n").encode()
    with svc.raw() as c:
        c.send(head)
        interim = c.read_response(stop_at_interim=True, timeout=3)
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        assert interim.reason == "Continue", interim
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"success": True}
        r = c.request("GET", f"/executions/{eid}/variables/cont", headers=auth(tok))
        assert r.json()["data"]["value"] == 100


def test_expect_100_continue_too_large_gets_413(svc, ex):
    eid, tok = ex
    head = (f"PUT /executions/{eid}/variables/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Length: {MAX_BODY * 10}\r\nExpect: 100-continue\r\n\r\n").encode()
    with svc.raw() as c:
        c.send(head)
        r = c.read_response(timeout=3)  # must not wait for a body it will refuse
        assert not any(i.status == 100 for i in r.interim), r.interim
    assert_error(r, 413, "payload_too_large")


def test_http10_closes_after_answer(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["status"] == "healthy"
        assert c.wait_closed(3) is not None, "HTTP/1.0 connection without keep-alive left open"


def test_http10_keep_alive(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() == "keep-alive", r
        assert r.header("Content-Length") is not None, "a kept-alive 1.0 answer needs a length"
        c.send(b"GET /ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["status"] == "ready"


def test_http11_connection_close(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() == "close", r
        assert c.wait_closed(3) is not None


@pytest.mark.parametrize("garbage", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nNo colon header line\r\n\r\n",
    b"GET /health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /health HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /health HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /he alth HTTP/1.1\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
])
def test_malformed_request_400_then_close(svc, garbage):
    with svc.raw() as c:
        c.send(garbage)
        r = c.read_response()
        body = assert_error(r, 400)
        assert body["error"] == "Bad Request"
        assert c.wait_closed(3) is not None, "connection must close after a malformed request"
    assert svc.api().get("/health").status == 200


def test_unknown_path_404(svc):
    for path in ("/", "/nope", "/executions", "/executions/x", "/executions/x/unknown",
                 "/executions/x/variables/k/extra/more", "/health/extra", "/tool-actions"):
        r = svc.api().get(path)
        assert_error(r, 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/health", {"GET", "HEAD"}),
    ("POST", "/health", {"GET", "HEAD"}),
    ("POST", "/ready", {"GET"}),
    ("PUT", "/metrics", {"GET"}),
    ("PATCH", "/executions/e1/variables/k", {"GET", "HEAD", "PUT", "DELETE"}),
    ("POST", "/executions/e1/variables/k", {"GET", "HEAD", "PUT", "DELETE"}),
    ("GET", "/executions/e1/variables/k/increment", {"POST"}),
    ("PUT", "/executions/e1/input", {"GET"}),
    ("DELETE", "/executions/e1/output", {"GET", "POST"}),
    ("PUT", "/executions/e1/condition", {"GET", "POST"}),
    ("POST", "/executions/e1/context", {"GET"}),
    ("GET", "/tool-actions/execute", {"POST"}),
])
def test_method_not_allowed_with_allow_header(svc, method, path, allowed):
    # Route checks come before auth: no token needed for the 405.
    r = svc.api().request(method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    assert_error(r, 405, "method_not_allowed")
    allow = r.header("Allow")
    assert allow, f"405 without Allow: {r!r}"
    got = {m.strip().upper() for m in allow.split(",") if m.strip()}
    got -= {"OPTIONS"}
    # HEAD may be offered wherever GET is (RFC 9110 §9.3.2); nothing else may differ.
    ok = got == allowed or ("GET" in allowed and got == allowed | {"HEAD"})
    assert ok, f"Allow {allow!r} for {path}, expected {sorted(allowed)}"


def test_body_over_max_is_413(svc, ex):
    eid, tok = ex
    body = json.dumps({"value": "y" * (MAX_BODY * 2)})
    r = svc.api(tok).put(f"/executions/{eid}/variables/big", body)
    assert_error(r, 413, "payload_too_large")
    # just under the limit is fine
    ok = json.dumps({"value": "y" * (MAX_BODY - 20)})
    assert len(ok) <= MAX_BODY
    r = svc.api(tok).put(f"/executions/{eid}/variables/big", ok)
    assert r.status == 200, r


def test_declared_length_over_max_answered_without_body(svc, ex):
    eid, tok = ex
    head = (f"POST /executions/{eid}/output HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Length: 50000000\r\n\r\n").encode()
    with svc.raw() as c:
        c.send(head)
        r = c.read_response(timeout=3)
    assert_error(r, 413, "payload_too_large")


def test_head_over_8k_is_431_and_closes(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n")
        r = c.read_response()
        assert_error(r, 431, "headers_too_large")
        assert c.wait_closed(3) is not None
    with svc.raw() as c:  # many small headers adding up
        hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(100))
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
        r = c.read_response()
        assert_error(r, 431, "headers_too_large")
        assert c.wait_closed(3) is not None
    with svc.raw() as c:  # an over-long request line
        c.send(b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status in (414, 431), r
        assert c.wait_closed(3) is not None
    assert svc.api().get("/health").status == 200


def test_head_just_under_8k_is_fine(svc):
    with svc.raw() as c:
        base = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n"
        pad = 8 * 1024 - len(base) - 200
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n")
        assert c.read_response().status == 200


def test_server_survives_abrupt_disconnects(svc, ex):
    eid, tok = ex
    for cut in (5, 30, 60):
        c = RawConn(svc.port)
        c.send(build_request("PUT", f"/executions/{eid}/variables/k", '{"value":1}', auth(tok))[:cut])
        c.close()
    c = RawConn(svc.port)
    c.send(build_request("GET", "/metrics"))
    c.close()  # close before reading the answer
    assert svc.api().get("/health").status == 200


def test_500_pipelined_requests_in_one_send(svc):
    reqs = b"".join(build_request("GET", "/health" if i % 2 else "/ready", headers={"X-Request-Id": f"b{i}"})
                    for i in range(500))
    with svc.raw(timeout=10) as c:
        c.send(reqs)
        for i in range(500):
            r = c.read_response()
            assert r.status == 200 and r.header("X-Request-Id") == f"b{i}", (i, r)
        assert c.is_open(0.1)


def test_body_on_get_is_skipped_for_the_next_request(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET /nope H"
               b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200
        r = c.read_response()
        assert r.status == 200 and r.json()["status"] == "ready", r


def test_query_string_ignored_for_routing(svc, ex):
    eid, tok = ex
    assert svc.api().get("/health?probe=1").status == 200
    assert svc.api().get("/ready?").status == 200
    api = svc.api(tok)
    assert api.put(f"/executions/{eid}/variables/q?x=1", '{"value":5}').status == 200
    r = api.get(f"/executions/{eid}/variables/q?y=2")
    assert r.json() == {"success": True, "data": {"key": "q", "value": 5}}, r


def test_percent_encoded_execution_id(svc):
    eid = "exec with/odd chars"
    tok = svc.token(eid)
    r = svc.api(tok).get("/executions/exec%20with%2Fodd%20chars/input")
    assert r.status == 200, r
    assert r.json() == {"success": True}
