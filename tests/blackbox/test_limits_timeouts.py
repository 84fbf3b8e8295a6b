"""Connection limits and timers (service core issue): MAX_CONNECTIONS, slowloris
(READ_TIMEOUT), idle keep-alive (IDLE_TIMEOUT), many idle connections."""
import socket
import time

import pytest

from lib.http import RawConn, assert_error

from ._metrics import gauge, open_connections_metric, scrape

READ_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def timers(module_services):
    return module_services.start(env={"READ_TIMEOUT": "1s", "IDLE_TIMEOUT": "2s"}, args=["--dev"])


def test_slowloris_closed_after_read_timeout_while_others_are_served(timers):
    c = RawConn(timers.port)
    try:
        t0 = time.monotonic()
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        closed_after = None
        served = False
        # Trickle one header byte every 150 ms; progress must not extend the deadline.
        while time.monotonic() - t0 < READ_TIMEOUT + 3:
            if not served and time.monotonic() - t0 > 0.4:
                t1 = time.monotonic()
                r = timers.api().get("/health")
                assert r.status == 200, r
                assert time.monotonic() - t1 < 0.5, "health stalled by the slow client"
                served = True
            try:
                c.send(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            if c.wait_closed(0.15) is not None:
                closed_after = time.monotonic() - t0
                break
        assert served
        assert closed_after is not None, "slow request head never timed out"
        assert READ_TIMEOUT * 0.8 <= closed_after <= READ_TIMEOUT + 1.5, closed_after
        if c.buf:  # an answer before closing is allowed, but only a 408
            assert c.buf.startswith(b"HTTP/1.1 408"), c.buf[:200]
    finally:
        c.close()


def test_slow_body_closed_after_read_timeout(timers):
    eid = "slowbody"
    tok = timers.token(eid)
    with timers.raw() as c:
        c.send((f"PUT /executions/{eid}/variables/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                f"Content-Length: 100\r\n\r\n{{").encode())
        closed = c.wait_closed(READ_TIMEOUT + 3)
        assert closed is not None, "a body that never completes must time out"
        assert closed <= READ_TIMEOUT + 1.5, closed


def test_silent_new_connection_is_closed(timers):
    with timers.raw() as c:
        closed = c.wait_closed(max(READ_TIMEOUT, IDLE_TIMEOUT) + 2)
        assert closed is not None, "a connection that never sends must not be held forever"


def test_idle_keep_alive_closed_after_idle_timeout(timers):
    with timers.raw() as c:
        assert c.request("GET", "/health").status == 200
        t0 = time.monotonic()
        # idle, not reading a head: READ_TIMEOUT (1 s) must not apply
        assert c.wait_closed(IDLE_TIMEOUT * 0.6) is None, "closed before IDLE_TIMEOUT"
        closed = c.wait_closed(IDLE_TIMEOUT + 2)
        assert closed is not None, "idle keep-alive connection never closed"
        total = time.monotonic() - t0
        assert IDLE_TIMEOUT * 0.8 <= total <= IDLE_TIMEOUT + 1.5, total


def test_activity_resets_idle_timer(timers):
    with timers.raw() as c:
        for _ in range(4):  # 4 x 0.8 s > IDLE_TIMEOUT in total
            assert c.request("GET", "/health").status == 200
            assert c.wait_closed(0.8) is None
        assert c.request("GET", "/health").status == 200


# -- WRITE_TIMEOUT --------------------------------------------------------------

@pytest.fixture(scope="module")
def writer(module_services):
    return module_services.start(env={"WRITE_TIMEOUT": "1s"}, args=["--dev"])


def test_stalled_reader_dropped_after_write_timeout(writer):
    types, samples = scrape(writer)
    name = open_connections_metric(types, samples)
    base = gauge(samples, name)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(("127.0.0.1", writer.port))
        s.setblocking(False)
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200
        t_end = time.monotonic() + 1.5
        sent = 0
        while time.monotonic() < t_end and sent < 40000:  # never read a byte
            try:
                s.send(req)
                sent += 200
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        _, samples = scrape(writer)
        assert gauge(samples, name) >= base + 1, "the stalled connection should still be counted"
        deadline = time.monotonic() + 1 + 4
        while gauge(scrape(writer)[1], name) > base:
            assert time.monotonic() < deadline, "a reader that never reads is not dropped after WRITE_TIMEOUT"
            time.sleep(0.1)
        assert writer.api().get("/health").status == 200
    finally:
        s.close()


# -- MAX_CONNECTIONS ----------------------------------------------------------

MAXC = 5


@pytest.fixture(scope="module")
def capped(module_services):
    return module_services.start(env={"MAX_CONNECTIONS": MAXC}, args=["--dev"])


def read_overflow_answer(c):
    """The connection past the limit: an answer may come at once or after a request."""
    if c.wait_closed(1.0) is None and not c.buf:
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
    return c.read_response(timeout=3)


def test_max_connections_newest_gets_503_and_is_closed(capped):
    time.sleep(0.3)  # let the start-up probe connection go away
    held = []
    try:
        for _ in range(MAXC):
            c = RawConn(capped.port)
            held.append(c)
            r = c.request("GET", "/health")
            assert r.status == 200, f"connection {len(held)} of {MAXC} refused: {r!r}"
        extra = RawConn(capped.port)
        try:
            r = read_overflow_answer(extra)
            body = assert_error(r, 503)
            assert body["code"], body
            assert extra.wait_closed(3) is not None, "the connection past the limit stays open"
        finally:
            extra.close()
        # the held ones still work
        for c in held:
            assert c.request("GET", "/health").status == 200
        # free one slot: a new connection is served again
        held.pop().close()
        deadline = time.monotonic() + 3
        while True:
            with RawConn(capped.port) as c:
                try:
                    r = c.request("GET", "/health", timeout=2)
                except Exception:  # noqa: BLE001
                    r = None
            if r is not None and r.status == 200:
                break
            assert time.monotonic() < deadline, "slot not freed after a connection closed"
            time.sleep(0.1)
    finally:
        for c in held:
            c.close()


# -- many idle connections ----------------------------------------------------

@pytest.fixture(scope="module")
def roomy(module_services):
    return module_services.start(args=["--dev"])


def test_2000_idle_connections_and_health_still_answers(roomy):
    socks = []
    try:
        for i in range(2000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5)
            s.connect(("127.0.0.1", roomy.port))
        t0 = time.monotonic()
        r = roomy.api().get("/health")
        assert r.status == 200, r
        assert time.monotonic() - t0 < 2, "health slow with 2,000 idle connections"
        # every connection was accepted: a sample of them is served
        for s in socks[::250] + [socks[-1]]:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                assert chunk, "idle connection was closed"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
        r = roomy.api().get("/metrics")
        assert r.status == 200
    finally:
        for s in socks:
            s.close()
    # and the service is fine afterwards
    deadline = time.monotonic() + 5
    while roomy.api().get("/health").status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
