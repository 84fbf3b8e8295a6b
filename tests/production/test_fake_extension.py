"""The backend fake's `set_delay(..., when="after")`, added for these tests:
the request is handled at once and only its answer is held back."""
import http.client
import json
import threading
import time

from lib.backend import FakeBackend


def _req(fb, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", fb.port, timeout=10)
    try:
        hdrs = {"Authorization": "Bearer t", "Content-Type": "application/json"}
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=hdrs)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def test_delay_after_reads_now_and_answers_late():
    fb = FakeBackend(token="t").start()
    try:
        fb.seed_variable("u", "k", "old")
        fb.set_delay(0.5, path="/api/internal/variables/u/k", method="GET", count=1, when="after")
        out = {}

        def slow_get():
            t0 = time.monotonic()
            out["r"] = _req(fb, "GET", "/api/internal/variables/u/k")
            out["t"] = time.monotonic() - t0

        t = threading.Thread(target=slow_get, daemon=True)
        t.start()
        assert fb.wait_for_count(1, "/api/internal/variables/u/k", "GET", timeout=5)
        time.sleep(0.05)
        assert _req(fb, "PUT", "/api/internal/variables/u/k", {"value": "new"}) == (200, {"success": True})
        t.join(5)
        assert out["r"][0] == 200 and out["r"][1]["value"] == "old", out
        assert out["t"] >= 0.45, out
        # count=1: the next GET is immediate and sees the new value
        t0 = time.monotonic()
        assert _req(fb, "GET", "/api/internal/variables/u/k")[1]["value"] == "new"
        assert time.monotonic() - t0 < 0.3
        assert fb.errors == []
    finally:
        fb.stop()


def test_delay_before_still_reads_after_the_wait():
    fb = FakeBackend(token="t").start()
    try:
        fb.seed_variable("u", "k", "old")
        fb.set_delay(0.4, path="/api/internal/variables/u/k", method="GET", count=1)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=_req(fb, "GET", "/api/internal/variables/u/k")), daemon=True)
        t.start()
        assert fb.wait_for_count(1, "/api/internal/variables/u/k", "GET", timeout=5)
        _req(fb, "PUT", "/api/internal/variables/u/k", {"value": "new"})
        t.join(5)
        assert out["r"][1]["value"] == "new", out
    finally:
        fb.stop()
