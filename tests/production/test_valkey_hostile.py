"""Valkey answering badly (issue 9, defects 8, 10, 11, 14): the real binary
against a misbehaving RESP server (tests/fakes/resp_server.py) and a slow name
resolver.  Whatever Valkey sends, the process stays up, every request is
answered from the backend with the right value, nothing Valkey invented is
served, and once Valkey behaves again the service reconnects and uses it."""
import os
import subprocess
import time

import pytest

from fakes.resp_server import RespServer

from lib.http import Client, assert_ok

ENV = {"VALKEY_TIMEOUT": "300ms"}


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{key}"


def _proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture
def fake():
    srv = RespServer().start()
    yield srv
    srv.stop()


def _stack(make_stack, fake, **env):
    st = make_stack(env={**ENV, "VALKEY_URL": fake.url, **env}, valkey=False)
    st.wait_ready("ready", "up", timeout=10)
    return st


def _ready_stays(st, valkey, seconds):
    """/ready reports the valkey check `valkey` at every poll for `seconds`."""
    end = time.monotonic() + seconds
    seen = []
    while time.monotonic() < end:
        body = st.ready().json()
        seen.append(body["checks"]["valkey"])
        time.sleep(0.1)
    assert seen and all(v == valkey for v in seen), f"/ready valkey check over {seconds}s: {seen}"


def _recovers(st, fake, eid, key, value, c):
    """Back to a well-behaved Valkey: reconnected (/ready up) and used (a hit)."""
    fake.mode = "ok"
    fake.fault_ping = False
    st.wait_ready("ready", "up", timeout=12)
    hits = st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert_ok(c.get(_vpath(eid, key)), {"success": True, "data": {"key": key, "value": value}})
        if st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit") > hits:
            return
        time.sleep(0.1)
    raise AssertionError("no cache hit within 10 s of Valkey behaving again")


# -- replies nobody asked for, replies that lie about their size -----------------------------------

@pytest.mark.parametrize("mode", ["unsolicited", "push", "wrong_length", "close_mid", "garbage"])
def test_bad_reply_drops_connection_and_bypasses(make_stack, fake, mode):
    """A protocol violation on a data command is a dropped connection, never a
    crash (hiredis asserts on an unsolicited reply) and never a served value."""
    st = _stack(make_stack, fake)
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "v1"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": "v1"}})
    conns0 = fake.connections
    connects0 = st.metrics().value("cronium_runtime_valkey_connects_total")
    fake.mode = mode
    for i in range(4):
        v = f"v{i + 2}"
        assert_ok(c.put(_vpath(eid, "k"), {"value": v}), {"success": True})
        assert st.fb.variable(uid, "k") == f'"{v}"' or st.fb.variable(uid, "k") == v
        for _ in range(3):
            r = c.get(_vpath(eid, "k"))
            assert_ok(r, {"success": True, "data": {"key": "k", "value": v}})
            assert r.elapsed < 2.0, f"a read took {r.elapsed:.2f}s in mode {mode}"
            time.sleep(0.15 if mode == "push" else 0)
        assert st.svc.alive(), f"the service died in mode {mode}:\n{st.svc.stderr()[-3000:]}"
    assert st.metrics().value("cronium_runtime_valkey_errors_total") > 0
    if mode != "close_mid":     # dropped as a protocol error, not by luck (a timeout, an EOF)
        assert "protocol error" in st.svc.stderr(), f"mode {mode}:\n{st.svc.stderr()[-3000:]}"
    _recovers(st, fake, eid, "k", "v5", c)
    assert fake.connections > conns0, f"mode {mode}: the connection was never dropped and reopened"
    assert st.metrics().value("cronium_runtime_valkey_connects_total") > connects0
    assert st.svc.alive()


@pytest.mark.parametrize("mode", ["never", "drip", "garbage"])
def test_broken_server_is_down_and_bypassed(make_stack, fake, mode):
    """A server that never answers (or answers only rubbish) is reported down
    the whole time, not up between reconnects; requests bypass it quickly."""
    st = _stack(make_stack, fake)
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": 1}), {"success": True})
    fake.fault_ping = True
    fake.mode = mode
    fake.drop_clients()
    t0 = time.monotonic()
    st.wait_ready("degraded", "down", timeout=5)
    _ready_stays(st, "down", 2.0)
    for i in range(3):
        assert_ok(c.put(_vpath(eid, "k"), {"value": i + 2}), {"success": True})
        r = c.get(_vpath(eid, "k"))
        assert_ok(r, {"success": True, "data": {"key": "k", "value": i + 2}})
        assert r.elapsed < 1.5, f"a read took {r.elapsed:.2f}s with Valkey in mode {mode}"
    assert time.monotonic() - t0 < 20
    assert st.svc.alive()
    _recovers(st, fake, eid, "k", 4, c)


def test_error_replies_reach_the_store_as_errors(make_stack, fake):
    """-ERR / -OOM / -WRONGTYPE for every data command: each request is
    answered from the backend, quickly, and no refused write leaves a stale
    value behind once Valkey answers normally again. (Declared alone on its
    port, so the increment goes on without the lock: issue 13.)"""
    st = _stack(make_stack, fake, SINGLE_PROCESS="true")
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "old"}), {"success": True})
    assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": "old"}})
    fake.mode = "error"
    t0 = time.monotonic()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "new"}), {"success": True})
    for _ in range(3):
        assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": "new"}})
    r = c.post(_vpath(eid, "n") + "/increment", {"by": 1})
    assert_ok(r, {"success": True, "data": {"key": "n", "value": 1}})
    assert r.elapsed < 2.0, f"an increment took {r.elapsed:.2f}s while Valkey answered errors (an error is not 'busy')"
    assert time.monotonic() - t0 < 10
    assert st.metrics().value("cronium_runtime_valkey_errors_total") >= 3
    assert st.svc.alive()
    # Valkey accepts writes again: the acknowledged "new" is what is read, never "old"
    fake.mode = "ok"
    for _ in range(5):
        assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": "new"}})
        time.sleep(0.05)
    _recovers(st, fake, eid, "k", "new", c)


# -- a reply too large to be anything the service stored --------------------------------------------

def test_huge_bulk_is_refused_with_bounded_memory(make_stack, fake):
    """A 64 MiB bulk: the connection is dropped as soon as the length is seen
    (the service never stores more than its backend cap), RSS stays bounded,
    the backend's value is served."""
    st = _stack(make_stack, fake, VALKEY_TIMEOUT="5s")
    eid, uid, c = st.execution()
    assert_ok(c.put(_vpath(eid, "k"), {"value": "small"}), {"success": True})
    pid = st.svc.proc.pid
    base = _proc_status(pid, "VmRSS")
    fake.mode = "huge"
    conns0 = fake.connections
    r = c.get(_vpath(eid, "k"), timeout=20)
    assert len(r.body) < 4096, f"a {len(r.body)}-byte body was served: {r.body[:120]!r}..."
    assert_ok(r, {"success": True, "data": {"key": "k", "value": "small"}})
    peak = _proc_status(pid, "VmHWM")
    assert peak < 200 << 20, f"peak RSS {peak >> 20} MiB (was {base >> 20} MiB before the 64 MiB reply)"
    assert fake.huge_sent < fake.huge_bytes, "the whole 64 MiB was read before giving up"
    assert r.elapsed < 3.0, f"the read took {r.elapsed:.2f}s"
    assert st.svc.alive()
    fake.mode = "ok"
    deadline = time.monotonic() + 10
    while fake.connections == conns0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.connections > conns0, "no reconnection after the huge reply"
    _recovers(st, fake, eid, "k", "small", c)


# -- name resolution slower than VALKEY_TIMEOUT --------------------------------------------------------

# getaddrinfo() interposed with LD_PRELOAD: names under .slow.test take
# SLOWDNS_MS to resolve (to 127.0.0.1) and every lookup is logged with the
# number running at once.  Chosen over a real name server or /etc/hosts: it
# needs no network and no root, and it makes the lookup slow deterministically
# in the thread libuv resolves in, exactly like a slow DNS server would.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int active;

static void note(const char *what, int n)
{
    const char *p = getenv("SLOWDNS_LOG");
    if (!p)
        return;
    int fd = open(p, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd < 0)
        return;
    char line[64];
    int len = snprintf(line, sizeof line, "%s %d\n", what, n);
    if (write(fd, line, (size_t)len) < 0) {}
    close(fd);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(RTLD_NEXT, "getaddrinfo");
    const char *suffix = ".slow.test";
    size_t n = node ? strlen(node) : 0, m = strlen(suffix);
    if (n > m && strcmp(node + n - m, suffix) == 0) {
        int now = __atomic_add_fetch(&active, 1, __ATOMIC_SEQ_CST);
        note("start", now);
        long ms = getenv("SLOWDNS_MS") ? atol(getenv("SLOWDNS_MS")) : 1000;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        __atomic_sub_fetch(&active, 1, __ATOMIC_SEQ_CST);
        note("end", now);
        return real("127.0.0.1", service, hints, res);
    }
    return real(node, service, hints, res);
}
"""


@pytest.fixture(scope="module")
def slowdns(tmp_path_factory):
    d = tmp_path_factory.mktemp("slowdns")
    src = d / "slowdns.c"
    src.write_text(SHIM)
    lib = d / "libslowdns.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src), "-ldl"], check=True,
                   capture_output=True, timeout=60)
    return lib


def test_slow_name_resolution_is_one_lookup_at_a_time(make_stack, slowdns, tmp_path):
    """A lookup of VALKEY_URL's host that outlives VALKEY_TIMEOUT (300 ms):
    no second lookup while it runs (libuv asserted on the reused request);
    the service keeps serving from the backend and connects once it resolves."""
    fake = RespServer().start()
    try:
        log = tmp_path / "dns.log"
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"VALKEY_URL": f"redis://valkey.slow.test:{fake.port}", "LD_PRELOAD": str(slowdns),
               "SLOWDNS_MS": "1200", "SLOWDNS_LOG": str(log),
               "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
        st = make_stack(env={**ENV, **env}, valkey=False)
        eid, uid, c = st.execution()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:      # two and a half lookups' time, several VALKEY_TIMEOUTs
            assert_ok(c.put(_vpath(eid, "k"), {"value": 7}), {"success": True})
            r = c.get(_vpath(eid, "k"))
            assert_ok(r, {"success": True, "data": {"key": "k", "value": 7}})
            assert r.elapsed < 1.0, f"a read waited {r.elapsed:.2f}s for the name lookup"
            assert st.svc.alive(), st.svc.stderr()[-3000:]
            time.sleep(0.1)
        lines = log.read_text().split()
        starts = [int(n) for w, n in zip(lines[::2], lines[1::2]) if w == "start"]
        assert starts, "the slow name was never looked up (is the shim loaded?)"
        assert max(starts) == 1, f"lookups overlapped: {lines}"
        st.wait_ready("ready", "up", timeout=10)
        assert fake.connections >= 1
        hits = st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit")
        for _ in range(20):
            assert_ok(c.get(_vpath(eid, "k")), {"success": True, "data": {"key": "k", "value": 7}})
            if st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit") > hits:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("connected after the slow lookup but the cache is never used")
        assert st.svc.alive()
    finally:
        fake.stop()
