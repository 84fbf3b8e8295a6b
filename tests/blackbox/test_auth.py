"""Token verification (docs/api.md §2, §3): every way a token can be wrong, leeway,
issuer, algorithms, execution mismatch and check order (runtime API issue)."""
import time

import pytest

from lib import new_id
from lib.http import assert_error, assert_ok
from lib.jwt import b64u, claims, decode_unverified, make_token, segment, sign


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(env={"RATE_LIMIT_PER_MIN": 1000000, "RATE_LIMIT_BURST": 100000,
                                      "AUTH_FAILURES_PER_MIN": 1000000}, args=["--dev"])


def get_input(svc, eid, authorization=None, token=None):
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return svc.api().get(f"/executions/{eid}/input", headers=headers)


def now():
    return int(time.time())


# -- accepted tokens -------------------------------------------------------------

def test_cli_token_accepted(svc):
    eid = new_id()
    assert_ok(get_input(svc, eid, token=svc.token(eid)), {"success": True})


def test_hand_made_hs256_token_accepted(svc):
    eid = new_id()
    assert_ok(get_input(svc, eid, token=make_token(claims(eid), svc.secret)), {"success": True})


@pytest.mark.parametrize("desc,times,literals,header", [
    ("no typ", {}, {}, {"alg": "HS256"}),
    ("kid in header", {}, {}, {"alg": "HS256", "typ": "JWT", "kid": "k1"}),
    ("exp inside leeway", {"exp": -10}, {}, None),
    ("nbf inside leeway", {"nbf": 10}, {}, None),
    ("nbf in the past", {"nbf": -100}, {}, None),
    ("iat inside leeway", {"iat": 10}, {}, None),
    ("no iat", {}, {"iat": None}, None),
    ("no userId", {}, {"userId": None}, None),
    ("fractional exp", {"exp": 3600.5}, {}, None),
    ("job_id claim", {}, {"job_id": "j"}, None),
    ("unknown claims", {}, {"scope": "execution", "sub": "x", "aud": "y", "jti": "z"}, None),
])
def test_valid_variants_accepted(svc, desc, times, literals, header):
    eid = new_id()
    c = claims(eid)
    c.update({k: now() + v for k, v in times.items()})
    for k, v in literals.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    r = get_input(svc, eid, token=make_token(c, svc.secret, header=header))
    assert r.status == 200, f"{desc}: {r!r}"


# -- Authorization header problems ------------------------------------------------------

def test_no_authorization_header(svc):
    assert_error(get_input(svc, new_id()), 401, "missing_token")


@pytest.mark.parametrize("value", [
    "Basic dXNlcjpwYXNzd29yZA==",
    "Bearer",
    "Bearer ",
    "Token abc.def.ghi",
    "Bearer a.b.c extra",
    "abc.def.ghi",
    "Bearer\tabc.def.ghi",
])
def test_bad_authorization_header(svc, value):
    assert_error(get_input(svc, new_id(), authorization=value), 401, "invalid_auth_header")


# -- malformed tokens ----------------------------------------------------------------

def bad_tokens(secret, eid):
    good_claims = claims(eid)

    def signed(h_seg, p_seg, alg="HS256"):
        return f"{h_seg}.{p_seg}.{sign(h_seg + '.' + p_seg, secret, alg)}"

    good = make_token(good_claims, secret)
    h, p, s = good.split(".")
    other = make_token(claims("someone-else"), secret)
    return {
        "two parts": f"{h}.{p}",
        "four parts": f"{good}.{s}",
        "one part": "justonepart",
        "empty parts": "..",
        "bad base64": "!!!.@@@.###",
        "bad base64 in payload": f"{h}.{p[:-2]}*$.{s}",
        "garbage header json": signed(segment("not json {"), p),
        "garbage payload json": signed(h, segment("{\"executionId\":")),
        "header is an array": signed(segment([1, 2]), p),
        "payload is a string": signed(h, segment('"just a string"')),
        "payload not utf-8": signed(h, b64u(b'{"executionId":"\xff\xfe","exp":9999999999}')),
        "alg none, no signature": f"{segment({'alg': 'none', 'typ': 'JWT'})}.{p}.",
        "alg none, with signature": signed(segment({"alg": "none", "typ": "JWT"}), p),
        "alg None spelled oddly": f"{segment({'alg': 'None'})}.{p}.",
        "alg RS256 with hmac sig": signed(segment({"alg": "RS256", "typ": "JWT"}), p),
        "alg ES256 with hmac sig": signed(segment({"alg": "ES256", "typ": "JWT"}), p),
        "alg PS256": signed(segment({"alg": "PS256", "typ": "JWT"}), p),
        "alg HS384 not configured": make_token(good_claims, secret, header={"alg": "HS384"}, sign_alg="HS384"),
        "alg HS512 not configured": make_token(good_claims, secret, header={"alg": "HS512"}, sign_alg="HS512"),
        "alg hs256 lower case": signed(segment({"alg": "hs256"}), p),
        "no alg": signed(segment({"typ": "JWT"}), p),
        "alg not a string": signed(segment({"alg": 256}), p),
        "wrong secret": make_token(good_claims, secret + "x"),
        "empty secret": make_token(good_claims, ""),
        "empty signature": f"{h}.{p}.",
        "signature of another token": f"{h}.{p}.{other.split('.')[2]}",
        "payload swapped": f"{h}.{other.split('.')[1]}.{s}",
        "truncated signature": f"{h}.{p}.{s[:-4]}",
        "signature with padding": f"{h}.{p}.{s}=",
        "padding in payload": signed(h, p + "=" * (-len(p) % 4 or 4)),
        "nbf in the future": make_token(dict(good_claims, nbf=now() + 120), secret),
        "iat far in the future": make_token(dict(good_claims, iat=now() + 3600), secret),
        "missing executionId": make_token({k: v for k, v in good_claims.items() if k != "executionId"}, secret),
        "executionId a number": make_token(dict(good_claims, executionId=12345), secret),
        "executionId null": make_token(dict(good_claims, executionId=None), secret),
        "missing exp": make_token({k: v for k, v in good_claims.items() if k != "exp"}, secret),
        "exp a string": make_token(dict(good_claims, exp=str(now() + 3600)), secret),
        "exp null": make_token(dict(good_claims, exp=None), secret),
        "nbf a string": make_token(dict(good_claims, nbf="yesterday"), secret),
    }


CASES = sorted(bad_tokens("x", "e"))


@pytest.mark.parametrize("case", CASES)
def test_bad_token_is_401_invalid_token(svc, case):
    eid = new_id()
    token = bad_tokens(svc.secret, eid)[case]
    r = get_input(svc, eid, authorization=f"Bearer {token}")
    assert_error(r, 401, "invalid_token")


def test_standard_base64_alphabet_refused(svc):
    # base64url only: the same bytes in the +/ alphabet are not a valid token
    for i in range(200):
        eid = f"std-b64-{i}"
        tok = make_token(claims(eid, user_id="u"), svc.secret)
        h, p, s = tok.split(".")
        if "-" in s or "_" in s:
            break
    else:
        pytest.fail("could not make a signature with - or _")
    bad = f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}"
    assert_error(get_input(svc, eid, authorization=f"Bearer {bad}"), 401, "invalid_token")
    assert get_input(svc, eid, token=tok).status == 200


def test_expired_token(svc):
    eid = new_id()
    tok = make_token(dict(claims(eid), exp=now() - 120, iat=now() - 7200), svc.secret)
    assert_error(get_input(svc, eid, token=tok), 401, "token_expired")


def test_expired_cli_token_shape(svc):
    # The orchestrator's (and the token command's) claims with an exp an hour ago.
    eid = new_id()
    header, payload = decode_unverified(svc.token(eid, user_id="u1", job_id="j1"))
    payload["iat"], payload["exp"] = now() - 7200, now() - 3600
    assert_error(get_input(svc, eid, token=make_token(payload, svc.secret, header=header)), 401, "token_expired")


def test_cached_token_expires(svc):
    # The verifier caches tokens; a cached token must still expire on time.
    eid = new_id()
    tok = make_token(dict(claims(eid), exp=now() - 28), svc.secret)  # 1-2 s left in the leeway
    assert get_input(svc, eid, token=tok).status == 200
    deadline = time.monotonic() + 6
    while True:
        r = get_input(svc, eid, token=tok)
        if r.status == 401:
            assert_error(r, 401, "token_expired")
            break
        assert r.status == 200, r
        assert time.monotonic() < deadline, "a cached token outlived its exp + leeway"
        time.sleep(0.25)


def test_huge_token_never_500_and_server_survives(svc):
    eid = new_id()
    big = make_token(dict(claims(eid), pad="A" * 100_000), svc.secret)
    with svc.raw() as c:
        try:
            c.send((f"GET /executions/{eid}/input HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {big}\r\n\r\n").encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
    assert r.status in (401, 431), r
    assert_error(r, r.status, "invalid_token" if r.status == 401 else "headers_too_large")
    assert svc.api().get("/health").status == 200
    eid2 = new_id()
    assert get_input(svc, eid2, token=svc.token(eid2)).status == 200


def test_many_distinct_bad_tokens_do_not_hurt(svc):
    eid = new_id()
    api = svc.api()
    for i in range(300):
        tok = make_token(dict(claims(eid), n=i), svc.secret + "wrong")
        r = api.get(f"/executions/{eid}/input", headers={"Authorization": f"Bearer {tok}"})
        assert r.status == 401, r
    assert get_input(svc, eid, token=svc.token(eid)).status == 200


# -- execution mismatch and check order --------------------------------------------------------

def test_execution_mismatch(svc):
    a, b = new_id(), new_id()
    tok = svc.token(a)
    api = svc.api(tok)
    for method, rest, body in (("GET", "input", None), ("GET", "context", None), ("GET", "output", None),
                               ("POST", "output", '{"data":1}'), ("GET", "condition", None),
                               ("POST", "condition", '{"condition":true}'),
                               ("GET", "variables/k", None), ("HEAD", "variables/k", None),
                               ("PUT", "variables/k", '{"value":1}'), ("DELETE", "variables/k", None),
                               ("POST", "variables/k/increment", '{"by":1}')):
        r = api.request(method, f"/executions/{b}/{rest}", body=body)
        if method == "HEAD":
            assert r.status == 403 and r.body == b"", r
        else:
            assert_error(r, 403, "execution_mismatch")


def test_execution_id_compared_byte_for_byte(svc):
    tok = svc.token("Case-Exec")
    assert_error(svc.api(tok).get("/executions/case-exec/input"), 403, "execution_mismatch")
    assert_error(svc.api(tok).get("/executions/Case-Exec%20/input"), 403, "execution_mismatch")
    assert svc.api(tok).get("/executions/Case-Exec/input").status == 200


def test_check_order(svc):
    a, b = new_id(), new_id()
    tok = svc.token(a)
    # route before auth
    assert_error(svc.api().get(f"/executions/{a}/nope"), 404, "not_found")
    assert_error(svc.api().request("PATCH", f"/executions/{a}/input", headers={"Authorization": "garbage"}),
                 405, "method_not_allowed")
    # auth before execution id and body
    assert_error(svc.api().post(f"/executions/{b}/output", "not json"), 401, "missing_token")
    assert_error(svc.api("bad.token.here").post(f"/executions/{b}/output", "not json"), 401, "invalid_token")
    # execution id before body
    assert_error(svc.api(tok).post(f"/executions/{b}/output", "not json"), 403, "execution_mismatch")
    # body last
    assert_error(svc.api(tok).post(f"/executions/{a}/output", "not json"), 400, "invalid_body")


# -- configured issuer, algorithms and leeway ----------------------------------------------------

@pytest.fixture(scope="module")
def strict(module_services):
    return module_services.start(env={"JWT_ISSUER": "cronium-orchestrator", "JWT_ALGORITHMS": "HS256,HS384",
                                      "JWT_LEEWAY": "0s", "AUTH_FAILURES_PER_MIN": 1000000}, args=["--dev"])


def test_issuer_enforced(strict):
    eid = new_id()
    s = strict.secret
    assert_error(get_input(strict, eid, token=make_token(claims(eid), s)), 401, "invalid_token")
    assert_error(get_input(strict, eid, token=make_token(claims(eid, iss="someone"), s)), 401, "invalid_token")
    assert get_input(strict, eid, token=make_token(claims(eid, iss="cronium-orchestrator"), s)).status == 200
    assert get_input(strict, eid, token=strict.token(eid, issuer="cronium-orchestrator")).status == 200


def test_configured_algorithms(strict):
    eid = new_id()
    s = strict.secret
    c = claims(eid, iss="cronium-orchestrator")
    assert get_input(strict, eid, token=make_token(c, s, header={"alg": "HS384"}, sign_alg="HS384")).status == 200
    assert_error(get_input(strict, eid, token=make_token(c, s, header={"alg": "HS512"}, sign_alg="HS512")),
                 401, "invalid_token")
    # the header's alg must match the signature's
    assert_error(get_input(strict, eid, token=make_token(c, s, header={"alg": "HS384"}, sign_alg="HS256")),
                 401, "invalid_token")


def test_zero_leeway(strict):
    eid = new_id()
    tok = make_token(claims(eid, iss="cronium-orchestrator", exp=now() - 5), strict.secret)
    assert_error(get_input(strict, eid, token=tok), 401, "token_expired")
    tok = make_token(claims(eid, iss="cronium-orchestrator", nbf=now() + 10), strict.secret)
    assert_error(get_input(strict, eid, token=tok), 401, "invalid_token")
