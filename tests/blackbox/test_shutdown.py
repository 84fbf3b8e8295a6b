"""SIGTERM / SIGINT: stop accepting, finish in-flight requests, exit 0 (service core issue)."""
import signal
import socket
import time

from lib.http import RawConn, chunked
from lib.proc import free_port


def connect_refused_or_closed(port):
    """True once a new connection is refused or closed without an answer."""
    try:
        c = RawConn(port, timeout=1)
    except OSError:
        return True
    try:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(timeout=1)
        return r.status != 200
    except Exception:  # noqa: BLE001 - closed / reset / timeout all mean "not served"
        return True
    finally:
        c.close()


def test_sigterm_lets_slow_upload_finish(services):
    svc = services.start(env={"SHUTDOWN_TIMEOUT": "5s"}, args=["--dev"])
    eid = "term-1"
    tok = svc.token(eid)
    body = b'{"value":"finished during shutdown"}'
    upload = svc.raw()
    idle = svc.raw()
    try:
        assert idle.request("GET", "/health").status == 200
        upload.send((f"PUT /executions/{eid}/variables/k HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {tok}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                    + body[:10])
        time.sleep(0.2)
        svc.signal(signal.SIGTERM)
        t0 = time.monotonic()
        # idle keep-alive connections are closed at once
        assert idle.wait_closed(2) is not None, "idle connection kept open during shutdown"
        # new connections are no longer served
        deadline = time.monotonic() + 2
        while not connect_refused_or_closed(svc.port):
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        # the in-flight upload completes and gets its answer
        for i in range(10, len(body), 5):
            upload.send(body[i:i + 5])
            time.sleep(0.05)
        r = upload.read_response(timeout=3)
        assert r.status == 200, r
        assert r.json() == {"success": True}
        rc = svc.wait_exit(8)
        assert rc == 0, f"exit code {rc} (None: still running) {time.monotonic() - t0:.1f}s after SIGTERM"
    finally:
        upload.close()
        idle.close()


def test_sigterm_during_chunked_upload(services):
    svc = services.start(env={"SHUTDOWN_TIMEOUT": "5s"}, args=["--dev"])
    eid = "term-2"
    tok = svc.token(eid)
    enc = chunked([b'{"value":', b'[1,2,', b'3]}'])
    with svc.raw() as c:
        c.send((f"PUT /executions/{eid}/variables/list HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {tok}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        c.send(enc[:8])
        time.sleep(0.2)
        svc.signal(signal.SIGTERM)
        for i in range(8, len(enc), 4):
            time.sleep(0.1)
            c.send(enc[i:i + 4])
        r = c.read_response(timeout=3)
        assert r.status == 200, r
    assert svc.wait_exit(8) == 0


def test_sigterm_with_half_sent_head_exits_within_deadline(services):
    svc = services.start(env={"SHUTDOWN_TIMEOUT": "2s", "READ_TIMEOUT": "30s"}, args=["--dev"])
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        time.sleep(0.2)
        t0 = time.monotonic()
        svc.signal(signal.SIGTERM)
        rc = svc.wait_exit(8)
        took = time.monotonic() - t0
        assert rc == 0, f"exit code {rc} (None: still running after 8 s)"
        assert took < 2 + 2, f"took {took:.1f}s with SHUTDOWN_TIMEOUT=2s"
        assert c.wait_closed(1) is not None


def test_sigterm_with_unfinished_body_gives_up_after_shutdown_timeout(services):
    svc = services.start(env={"SHUTDOWN_TIMEOUT": "1s", "READ_TIMEOUT": "30s"}, args=["--dev"])
    tok = svc.token("term-3")
    with svc.raw() as c:
        c.send((f"PUT /executions/term-3/variables/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                f"Content-Length: 100\r\n\r\n{{").encode())
        time.sleep(0.2)
        t0 = time.monotonic()
        svc.signal(signal.SIGTERM)
        rc = svc.wait_exit(8)
        took = time.monotonic() - t0
        assert rc == 0, f"exit code {rc} (None: still running after 8 s)"
        assert 0.5 <= took <= 1 + 2, f"took {took:.1f}s with SHUTDOWN_TIMEOUT=1s"


def test_sigint_idle_exits_zero(services):
    svc = services.start(args=["--dev"])
    c = svc.raw()
    assert c.request("GET", "/health").status == 200
    svc.signal(signal.SIGINT)
    assert svc.wait_exit(8) == 0
    assert c.wait_closed(1) is not None
    c.close()
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", svc.port)) != 0, "port still accepting after exit"


def test_sigterm_idle_exits_zero_quickly(services):
    svc = services.start(args=["--dev"])
    t0 = time.monotonic()
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(8) == 0
    assert time.monotonic() - t0 < 2, "an idle service must stop at once"


def test_two_processes_share_one_port(services):
    port = free_port()
    a = services.start(env={"PORT": port}, args=["--dev"])
    b = services.start(env={"PORT": port}, args=["--dev"])
    assert a.alive() and b.alive()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(8) == 0
    # the other process keeps serving the port
    deadline = time.monotonic() + 3
    while True:
        try:
            with RawConn(port, timeout=2) as c:
                if c.request("GET", "/health").status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "port not served after one of two processes stopped"
        time.sleep(0.05)
    assert b.alive()
