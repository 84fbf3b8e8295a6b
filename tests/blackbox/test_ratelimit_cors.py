"""Rate limits (per execution and per client for auth failures) and CORS (docs/api.md §3, §4, §8)."""
import pytest

from lib import new_id
from lib.http import assert_error, assert_ok
from lib.jwt import claims, make_token

PER_MIN = 6      # 0.1 token/s: no refill to speak of during a test
BURST = 5


@pytest.fixture(scope="module")
def limited(module_services):
    return module_services.start(env={"RATE_LIMIT_PER_MIN": PER_MIN, "RATE_LIMIT_BURST": BURST,
                                      "AUTH_FAILURES_PER_MIN": 1000000}, args=["--dev"])


def int_header(r, name):
    v = r.header(name)
    assert v is not None, f"no {name} on {r!r}"
    assert v.isdigit(), f"{name}: {v!r} is not a whole number of seconds/requests"
    return int(v)


def test_rate_limit_headers_and_429(limited):
    eid = new_id()
    api = limited.api(limited.token(eid))
    remaining, resets = [], []
    for i in range(BURST):
        r = api.get(f"/executions/{eid}/input")
        assert r.status == 200, (i, r)
        assert int_header(r, "X-RateLimit-Limit") == PER_MIN
        remaining.append(int_header(r, "X-RateLimit-Remaining"))
        resets.append(int_header(r, "X-RateLimit-Reset"))
    assert remaining == list(range(BURST - 1, -1, -1)), remaining
    # Reset = seconds until the bucket is full again; one token takes 60/PER_MIN = 10 s
    assert 9 <= resets[0] <= 11, resets
    assert 45 <= resets[-1] <= 51, resets
    assert resets == sorted(resets), resets
    r = api.get(f"/executions/{eid}/input")
    assert_error(r, 429, "rate_limited")
    retry = int_header(r, "Retry-After")
    assert 9 <= retry <= 11, retry  # the next token comes back in 10 s
    assert int_header(r, "X-RateLimit-Remaining") == 0
    assert int_header(r, "X-RateLimit-Limit") == PER_MIN
    # every kind of request counts against the same bucket
    assert_error(api.put(f"/executions/{eid}/variables/k", {"value": 1}), 429, "rate_limited")
    assert_error(api.get(f"/executions/{eid}/output"), 429, "rate_limited")
    h = api.head(f"/executions/{eid}/variables/k")
    assert h.status == 429 and h.body == b"" and h.header("Retry-After"), h


def test_buckets_are_per_execution(limited):
    a, b = new_id(), new_id()
    api_a = limited.api(limited.token(a))
    for _ in range(BURST):
        assert api_a.get(f"/executions/{a}/input").status == 200
    assert_error(api_a.get(f"/executions/{a}/input"), 429, "rate_limited")
    r = limited.api(limited.token(b)).get(f"/executions/{b}/input")
    assert r.status == 200, r
    assert int_header(r, "X-RateLimit-Remaining") == BURST - 1


def test_rate_limit_after_auth(limited):
    eid = new_id()
    api = limited.api(limited.token(eid))
    for _ in range(BURST):
        api.get(f"/executions/{eid}/input")
    # a request that fails auth is a 401, not a 429 of this execution's bucket
    assert_error(limited.api("x.y.z").get(f"/executions/{eid}/input"), 401, "invalid_token")
    # health and metrics are never limited
    for _ in range(20):
        assert limited.api().get("/health").status == 200


def test_rate_limited_before_execution_check(limited):
    a, b = new_id(), new_id()
    api = limited.api(limited.token(a))
    for _ in range(BURST):
        api.get(f"/executions/{a}/input")
    assert_error(api.get(f"/executions/{b}/input"), 429, "rate_limited")


def test_rate_limit_headers_on_errors_of_authenticated_requests(limited):
    eid = new_id()
    api = limited.api(limited.token(eid))
    r = api.get(f"/executions/{eid}/variables/missing")
    assert_error(r, 404, "variable_not_found")
    assert int_header(r, "X-RateLimit-Limit") == PER_MIN
    assert int_header(r, "X-RateLimit-Remaining") == BURST - 1


# -- auth failures per client -------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(module_services):
    return module_services.start(env={"AUTH_FAILURES_PER_MIN": 5, "RATE_LIMIT_PER_MIN": 100000,
                                      "RATE_LIMIT_BURST": 10000}, args=["--dev"])


def test_repeated_auth_failures_get_429(guarded):
    eid = new_id()
    statuses = []
    r = None
    for i in range(40):
        tok = make_token(claims(eid, n=i), "guessed-secret")
        r = guarded.api(tok).get(f"/executions/{eid}/input")
        statuses.append(r.status)
        if r.status == 429:
            break
    assert statuses[0] == 401, statuses
    assert 429 in statuses, f"40 bad tokens in a row were never slowed down: {statuses}"
    assert statuses.index(429) <= 10, statuses
    assert_error(r, 429, "rate_limited")
    assert int_header(r, "Retry-After") >= 1
    # further failures stay limited
    assert_error(guarded.api("a.b.c").get(f"/executions/{eid}/input"), 429, "rate_limited")
    assert_error(guarded.api().get(f"/executions/{eid}/input"), 429, "rate_limited")
    # probes are not affected
    assert guarded.api().get("/health").status == 200


# -- CORS ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cors_off(module_services):
    return module_services.start(args=["--dev"])


@pytest.fixture(scope="module")
def cors_on(module_services):
    return module_services.start(env={"ENABLE_CORS": "true", "ALLOWED_ORIGINS": "https://a.example"},
                                 args=["--dev"])


def cors_headers(r):
    return {k: v for k, v in r.headers if k.lower().startswith("access-control-")}


PREFLIGHT = {"Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_cors_off_no_headers(cors_off):
    eid = new_id()
    api = cors_off.api(cors_off.token(eid))
    for r in (api.get(f"/executions/{eid}/input", headers={"Origin": "https://a.example"}),
              cors_off.api().get("/health", headers={"Origin": "https://a.example"}),
              cors_off.api().get("/nope", headers={"Origin": "https://a.example"})):
        assert cors_headers(r) == {}, r


def test_cors_off_options_is_405(cors_off):
    eid = new_id()
    r = cors_off.api().request("OPTIONS", f"/executions/{eid}/variables/k",
                               headers={"Origin": "https://a.example", **PREFLIGHT})
    assert_error(r, 405, "method_not_allowed")
    assert cors_headers(r) == {}, r
    assert r.header("Allow")


def test_cors_preflight_allowed_origin(cors_on):
    eid = new_id()
    r = cors_on.api().request("OPTIONS", f"/executions/{eid}/variables/k",
                              headers={"Origin": "https://a.example", **PREFLIGHT})
    assert r.status in (200, 204), r
    assert r.header("Access-Control-Allow-Origin") == "https://a.example", r
    methods = {m.strip().upper() for m in (r.header("Access-Control-Allow-Methods") or "").split(",")}
    assert "PUT" in methods, r
    allowed_headers = (r.header("Access-Control-Allow-Headers") or "").lower()
    assert "authorization" in allowed_headers or allowed_headers.strip() == "*", r
    if r.header("Access-Control-Allow-Origin") != "*":
        assert "origin" in (", ".join(r.header_all("Vary"))).lower(), f"Vary: Origin missing: {r!r}"
    if r.status == 200:
        assert int(r.header("Content-Length") or 0) == 0 or r.body == b"", r


def test_cors_preflight_for_tool_actions_without_token(cors_on):
    r = cors_on.api().request("OPTIONS", "/tool-actions/execute",
                              headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"})
    assert r.status in (200, 204), r
    assert r.header("Access-Control-Allow-Origin") == "https://a.example", r


def test_cors_preflight_other_origin(cors_on):
    r = cors_on.api().request("OPTIONS", "/executions/x/input",
                              headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert r.status != 500, r
    assert r.header("Access-Control-Allow-Origin") is None, r


def test_cors_actual_request_allowed_origin(cors_on):
    eid = new_id()
    r = cors_on.api(cors_on.token(eid)).get(f"/executions/{eid}/input", headers={"Origin": "https://a.example"})
    assert_ok(r, {"success": True})
    assert r.header("Access-Control-Allow-Origin") == "https://a.example", r
    # errors carry it too, so a browser script can read the error body
    r = cors_on.api().get(f"/executions/{eid}/input", headers={"Origin": "https://a.example"})
    assert_error(r, 401, "missing_token")
    assert r.header("Access-Control-Allow-Origin") == "https://a.example", r


def test_cors_actual_request_other_origin(cors_on):
    eid = new_id()
    r = cors_on.api(cors_on.token(eid)).get(f"/executions/{eid}/input", headers={"Origin": "https://evil.example"})
    assert_ok(r, {"success": True})
    assert r.header("Access-Control-Allow-Origin") is None, r


def test_cors_on_options_without_preflight_headers_is_not_auth_checked(cors_on):
    r = cors_on.api().request("OPTIONS", "/executions/x/input", headers={"Origin": "https://a.example"})
    assert r.status != 401, r
    assert r.status != 500, r
