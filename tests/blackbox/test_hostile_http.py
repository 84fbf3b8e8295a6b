"""Hostile input on the HTTP request path and hostile start-up environments
(issue 9: defects 1, 2, 3, 5, 6, 9, 12, 18). Raw sockets to 127.0.0.1; every
test asserts the concrete outcome (status line, body length, connection
still usable, exit code and message)."""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time

import pytest

from lib import new_id
from lib.http import RawConn, build_request
from lib.proc import BIN, SANITIZER_MARKERS, clean_env, free_port, require_binary, run_cli

MAX_BODY = 2_000_000


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(env={"MAX_BODY_BYTES": MAX_BODY, "RATE_LIMIT_PER_MIN": 1000000,
                                      "RATE_LIMIT_BURST": 100000, "ENABLE_CORS": "true",
                                      "ALLOWED_ORIGINS": "*"}, args=["--dev"])


def assert_full_body(r):
    """The body that arrived has exactly the announced length and is the error/JSON shape."""
    assert r.header("Content-Length") is not None, r
    assert len(r.body) == int(r.header("Content-Length")), r
    assert r.body, r


def health_still_ok(c):
    r = c.request("GET", "/health")
    assert r.status == 200, r
    assert r.json()["status"] == "healthy"


# ---- defect 1: trailers ------------------------------------------------------------

def test_trailer_after_chunked_body_is_not_a_header_and_does_not_crash(svc):
    """A 300-byte trailer used to realloc the head buffer under path (ASan:
    heap-use-after-free in the router)."""
    req = (b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\nX-T: " + b"a" * 300 + b"\r\n\r\n")
    with svc.raw() as c:
        c.send(req)
        r = c.read_response()
        assert r.status == 405, r
        assert r.header("Allow") == "GET, HEAD", r
        assert_full_body(r)
        health_still_ok(c)
    assert svc.alive()


def test_authorization_trailer_does_not_authenticate(svc):
    eid = new_id()
    tok = svc.token(eid, user_id=new_id("user"))
    body = json.dumps({"value": 1}).encode()
    req = (f"PUT /executions/{eid}/variables/trailer HTTP/1.1\r\nHost: x\r\n"
           f"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n").encode()
    req += f"{len(body):x}\r\n".encode() + body + b"\r\n"
    req += f"0\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()
    with svc.raw() as c:
        c.send(req)
        r = c.read_response()
        assert r.status == 401, r
        assert_full_body(r)
        health_still_ok(c)


def test_huge_trailers_are_bounded(svc):
    req = (b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
           + b"".join(b"X-T%d: %s\r\n" % (i, b"b" * 1000) for i in range(12)) + b"\r\n")
    with svc.raw() as c:
        c.send(req)
        r = c.read_response()
        assert r.status in (400, 431), r
        assert r.header("Connection") == "close", r
        assert_full_body(r)
    assert svc.alive()


# ---- defect 2: HEAD then a malformed request ------------------------------------------

def test_error_after_head_request_has_its_body(svc):
    with svc.raw() as c:
        c.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        r1 = c.read_response(method="HEAD")
        assert r1.status == 200, r1
        r2 = c.read_response()
        assert r2.status == 400, r2
        assert_full_body(r2)
        assert r2.json()["code"] == "invalid_body"


# ---- defect 3: Upgrade offers ----------------------------------------------------------

def test_h2c_upgrade_offer_is_ignored_and_connection_reused(svc):
    up = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
          "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA"}
    with svc.raw() as c:
        for i in range(2):      # what `curl --http2 URL URL` sends
            r = c.request("GET", "/health", headers=up)
            assert r.status == 200, (i, r)
            assert r.version == "HTTP/1.1", r
            assert r.header("Upgrade") is None, r
            assert_full_body(r)
        health_still_ok(c)


def test_upgrade_offer_with_body_is_ignored(svc):
    with svc.raw() as c:
        c.send(build_request("POST", "/health", b"{}", {"Connection": "Upgrade", "Upgrade": "websocket"}))
        r = c.read_response()
        assert r.status == 405, r
        health_still_ok(c)


# ---- defect 5: header syntax, 204, whitespace, method label ---------------------------

def test_obs_fold_is_rejected(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert_full_body(r)
        assert r.json()["code"] == "invalid_body"


def test_whitespace_before_colon_is_rejected(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert_full_body(r)


def test_204_has_no_content_length(svc):
    with svc.raw() as c:
        c.send(b"OPTIONS /health HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
               b"Access-Control-Request-Method: GET\r\n\r\n")
        r = c.read_response()
        assert r.status == 204, r
        assert r.header("Content-Length") is None, r
        assert r.header("Transfer-Encoding") is None, r
        # nothing follows the head: the next answer starts right away
        health_still_ok(c)


def test_trailing_whitespace_in_header_value_is_trimmed(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: trim-me \t \r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.header("X-Request-Id") == "trim-me", r


def test_unknown_methods_share_one_metric_label(svc):
    methods = ["PROPFIND", "MKCOL", "PURGE", "LOCK", "REPORT"]
    with svc.raw() as c:
        for m in methods:
            r = c.request(m, "/health")
            assert r.status == 405, r
        r = c.request("GET", "/metrics")
        assert r.status == 200, r
    text = r.body.decode()
    labels = set(re.findall(r'cronium_runtime_http_requests_total\{[^}]*method="([^"]+)"', text))
    assert not labels & set(methods), labels
    assert "OTHER" in labels, labels
    assert labels <= {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "OTHER", "-"}, labels


# ---- defect 6: half-close after pipelined requests ------------------------------------

def test_half_close_answers_every_pipelined_request(svc):
    eid = new_id()
    tok = svc.token(eid, user_id=new_id("user"))
    big = "v" * 1_500_000
    with svc.raw() as c:
        r = c.request("PUT", f"/executions/{eid}/variables/big", json.dumps({"value": big}),
                      {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
        assert r.status == 200, r
    n = 4
    req = build_request("GET", f"/executions/{eid}/variables/big", None, {"Authorization": f"Bearer {tok}"})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the answers cannot all fit
    s.settimeout(10)
    s.connect(("127.0.0.1", svc.port))
    try:
        s.sendall(req * n)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.5)     # the server sees EOF while its first answer is still being written
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    answers = data.count(b"HTTP/1.1 200 OK")
    assert answers == n, f"{answers} of {n} pipelined requests answered before close ({len(data)} bytes)"
    assert data.count(big.encode()) == n


def test_half_close_with_partial_request_closes(svc):
    with svc.raw() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == 200, r
        assert c.wait_closed(3) is not None


# ---- defect 18: SIGTERM with connections waiting in the backlog ------------------------

def test_sigterm_does_not_reset_connections_in_the_backlog(services):
    svc = services.start(env={"SHUTDOWN_TIMEOUT": "5s"}, args=["--dev"])
    conns = []
    svc.signal(signal.SIGSTOP)
    try:
        for i in range(20):
            c = RawConn(svc.port, timeout=8)
            c.send(build_request("GET", "/health", headers={"X-Request-Id": f"backlog-{i}"}))
            conns.append(c)
        time.sleep(0.2)
        svc.signal(signal.SIGTERM)
    finally:
        svc.signal(signal.SIGCONT)
    try:
        for i, c in enumerate(conns):
            r = c.read_response()
            assert r.status in (200, 503), (i, r)
            assert r.header("X-Request-Id") == f"backlog-{i}", r
            if r.status == 503:
                assert r.header("Connection") == "close", r
            assert_full_body(r)
            # a request answered during shutdown ends its connection
            assert r.header("Connection") == "close" or c.wait_closed(3) is not None, r
    finally:
        for c in conns:
            c.close()
    assert svc.wait_exit(8) == 0


# ---- defect 9: start-up errors -----------------------------------------------------------

def assert_clean_failure(p, *words):
    out = p.stdout + p.stderr
    assert p.returncode not in (0, None), (p.returncode, out)
    assert p.returncode > 0, f"killed by signal {-p.returncode}: {out[-2000:]}"
    assert "Assertion" not in out and "Aborted" not in out, out[-2000:]
    for m in SANITIZER_MARKERS:
        assert m not in out, out[-3000:]
    low = p.stderr.lower()
    for w in words:
        assert w.lower() in low, f"{w!r} not in stderr: {p.stderr[-2000:]}"


def test_host_name_localhost_is_accepted(services):
    svc = services.start(env={"HOST": "localhost"}, args=["--dev"])
    with svc.raw() as c:
        health_still_ok(c)


def test_host_that_does_not_resolve_fails_clearly():
    port = free_port()
    p = run_cli(["--dev"], env={"HOST": "no-such-host.invalid", "PORT": port, "JWT_SECRET": "x" * 32})
    assert_clean_failure(p, "cannot listen", "no-such-host.invalid", "HOST")


def test_port_taken_without_reuseport_fails_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run_cli(["--dev"], env={"HOST": "127.0.0.1", "PORT": port, "JWT_SECRET": "x" * 32})
    assert_clean_failure(p, "cannot listen", str(port), "in use")


def test_missing_dev_context_file_fails_clearly(tmp_path):
    missing = tmp_path / "no-such-context.json"
    p = run_cli(["--dev-context", str(missing)], env={"HOST": "127.0.0.1", "PORT": free_port(),
                                                       "JWT_SECRET": "x" * 32})
    assert_clean_failure(p, str(missing), "no such file")


# ---- defect 12: EMFILE --------------------------------------------------------------------

def _metric(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_warned_at_start_counted_and_no_busy_loop(tmp_path):
    require_binary()
    port = free_port()
    limit = 96
    env = clean_env({"HOST": "127.0.0.1", "PORT": port, "JWT_SECRET": "x" * 32, "MAX_CONNECTIONS": 1000,
                     "TMPDIR": str(tmp_path), "LOG_LEVEL": "info"})
    err_path = tmp_path / "emfile.stderr"

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with open(err_path, "wb") as err:
        proc = subprocess.Popen([BIN, "--dev"], env=env, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=low_nofile, start_new_session=True)
    conns = []
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, err_path.read_text(errors="replace")[-3000:]
            try:
                with RawConn(port, timeout=2) as c:
                    if c.request("GET", "/health", headers={"Connection": "close"}).status == 200:
                        break
            except (OSError, Exception):  # noqa: BLE001 - not up yet
                pass
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        text = err_path.read_text(errors="replace")
        assert "maxConnections exceeds the open-file limit" in text, text[-2000:]
        for _ in range(limit + 40):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                conns.append(s)
            except OSError:
                break
        time.sleep(0.5)
        cpu0 = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        cpu = _cpu_seconds(proc.pid) - cpu0
        assert cpu < 0.5, f"the service spent {cpu:.2f}s of CPU in 1s while out of descriptors"
        for s in conns:
            s.close()
        conns = []
        time.sleep(0.5)
        with RawConn(port, timeout=5) as c:
            health_still_ok(c)
            r = c.request("GET", "/metrics")
        assert r.status == 200, r
        errors = _metric(r.body.decode(), "cronium_runtime_accept_errors_total")
        assert errors is not None and errors >= 1, r.body.decode()[-2000:]
        text = err_path.read_text(errors="replace")
        assert "cannot accept connections" in text, text[-2000:]
        assert text.count("cannot accept connections") <= 3, "accept failures must be logged rate-limited"
    finally:
        for s in conns:
            s.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    text = err_path.read_text(errors="replace")
    for m in SANITIZER_MARKERS:
        assert m not in text, text[-3000:]
    assert proc.returncode == 0, (proc.returncode, text[-2000:])
