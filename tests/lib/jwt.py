"""Hand-made JWTs (stdlib only): tokens as the orchestrator mints them, and
malformed or mis-signed ones for the token tests."""
import base64
import hashlib
import hmac
import json
import time

ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64u(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def segment(obj):
    """Encode a JSON object (or raw bytes/str given as is) as a base64url segment."""
    if isinstance(obj, (bytes, str)):
        return b64u(obj)
    return b64u(json.dumps(obj, separators=(",", ":")))


def sign(signing_input, secret, alg="HS256"):
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return b64u(hmac.new(secret, signing_input.encode("ascii"), ALGS[alg]).digest())


def make_token(claims, secret, header=None, sign_alg="HS256"):
    """A token with the given header (default HS256/JWT) and claims, HMAC-signed
    with `secret` using `sign_alg` (None: empty signature)."""
    header = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    si = segment(header) + "." + segment(claims)
    sig = sign(si, secret, sign_alg) if sign_alg else ""
    return si + "." + sig


def claims(execution_id, user_id="u-test", ttl=3600, **extra):
    now = int(time.time())
    c = {"executionId": execution_id, "userId": user_id, "iat": now, "exp": now + ttl}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def decode_unverified(token):
    h, p, _ = token.split(".")
    return json.loads(b64u_decode(h)), json.loads(b64u_decode(p))


def mint_token(secret, execution_id, user_id=None, ttl=3600, **extra):
    """An HS256 token as the orchestrator mints it (jobId "job-1" unless given)."""
    return make_token(claims(execution_id, user_id=user_id, ttl=ttl, **{"jobId": "job-1", **extra}), secret)
