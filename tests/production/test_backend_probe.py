"""/ready knows when the backend is unusable, not only unreachable (docs/api.md §4,
docs/operations.md "Backend probe"): a backend that answers 5xx to everything, or
401 because BACKEND_TOKEN is wrong, shows "backend": "down" with a reason, found by
a cheap probe (a context GET of a fixed execution id that does not exist: 404 when
the token is right) at most once per backend.probeInterval and only while no real
call succeeded lately."""
import time

from lib.http import assert_ok
from static._openapi import Spec

SPEC = Spec()

INTERVAL = 0.5
ENV = {"BACKEND_PROBE_INTERVAL": "500ms"}
PROBE = "/api/internal/executions/cronium-runtime-probe/context"


def _wait_backend(st, state, timeout=5.0):
    """Poll /ready until checks.backend is `state`; returns (status, body)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = st.ready()
        last = (r.status, r.json())
        # Every /ready body, reasons included, is the documented Readiness.
        SPEC.check("GET", "/ready", r.status, {k.lower(): v for k, v in r.headers}, r.body)
        if last[1]["checks"]["backend"] == state:
            return last
        time.sleep(0.05)
    raise AssertionError(f"/ready backend did not become {state} within {timeout}s; last {last!r}")


def test_backend_answering_500_to_everything_is_down_with_a_reason(make_stack):
    st = make_stack(env=ENV)
    status, body = _wait_backend(st, "up")
    assert status == 200 and body["status"] == "ready" and "reasons" not in body, body
    st.fb.respond(500, {"error": "Internal server error"})
    t0 = time.monotonic()
    status, body = _wait_backend(st, "down", timeout=4 * INTERVAL + 2)
    assert status == 503 and body["status"] == "unready", body
    assert "500" in body["reasons"]["backend"], body
    assert set(body["reasons"]) == {"backend"}, body
    assert time.monotonic() - t0 < 3 * INTERVAL + 1.5
    st.fb.clear_faults()
    status, body = _wait_backend(st, "up", timeout=4 * INTERVAL + 2)
    assert status == 200 and body["status"] == "ready" and "reasons" not in body, body


def test_wrong_backend_token_is_down_with_a_reason_even_without_traffic(make_stack):
    st = make_stack(env={**ENV, "BACKEND_TOKEN": "not-the-backend-token"})
    status, body = _wait_backend(st, "down", timeout=4 * INTERVAL + 2)
    assert status == 503, body
    reason = body["reasons"]["backend"]
    assert "401" in reason and "BACKEND_TOKEN" in reason, reason
    # The backend now takes that token: up again after the next probe.
    st.fb.configure({"token": "not-the-backend-token"})
    status, body = _wait_backend(st, "up", timeout=4 * INTERVAL + 2)
    assert status == 200 and "reasons" not in body, body


def test_token_refused_later_by_real_calls(make_stack):
    st = make_stack(env=ENV)
    eid, _uid, c = st.execution()
    assert c.get(f"/executions/{eid}/context").status == 200
    _wait_backend(st, "up")
    st.fb.configure({"token": "rotated"})
    assert c.put(f"/executions/{eid}/variables/k", {"value": 1}).status == 503
    status, body = _wait_backend(st, "down", timeout=4 * INTERVAL + 2)
    assert "401" in body["reasons"]["backend"], body


def test_probe_rate_is_bounded_and_quiet_while_real_calls_succeed(make_stack):
    st = make_stack(env=ENV)
    _wait_backend(st, "up")
    # Idle: at most one probe per interval.
    st.fb.clear_requests()
    time.sleep(3.0)
    idle = st.fb.count(PROBE)
    assert 2 <= idle <= int(3.0 / INTERVAL) + 1, idle
    # Every probe is one GET of that path with the service's token and nothing else.
    assert {r.method for r in st.fb.requests_to(PROBE)} == {"GET"}
    # Busy with successful real calls: no probe at all.
    eid, _uid, c = st.execution()
    st.fb.clear_requests()
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        assert_ok(c.put(f"/executions/{eid}/variables/k", {"value": 1}), {"success": True})
        time.sleep(0.05)
    assert st.fb.count(PROBE) <= 1, st.fb.count(PROBE)
    # A backend failing everything under load: still at most one probe per interval.
    st.fb.respond(500, {"error": "Internal server error"})
    st.fb.clear_requests()
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        c.put(f"/executions/{eid}/variables/k", {"value": 1})
        time.sleep(0.02)
    assert st.fb.count(PROBE) <= int(2.0 / INTERVAL) + 1, st.fb.count(PROBE)
    st.fb.clear_faults()


def test_probe_interval_default_is_listed(make_stack):
    import subprocess

    from lib.proc import BIN
    out = subprocess.run([BIN, "--list-settings"], capture_output=True, text=True, timeout=10).stdout
    line = next((l for l in out.splitlines() if "backend.probeInterval" in l), None)
    assert line and "BACKEND_PROBE_INTERVAL" in line and "10s" in line, out[-2000:]
