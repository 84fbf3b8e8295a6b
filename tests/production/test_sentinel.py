"""Valkey Sentinel: the service finds the master through three sentinels,
follows a failover, and keeps every acknowledged write readable.

A master, a replica and three sentinels (redis-server --sentinel, the same
binary as the redis-server package) on free 127.0.0.1 ports, down-after 1 s;
the service gets VALKEY_SENTINELS and VALKEY_MASTER_NAME and the backend fake.
Every process is stopped at the end, also when a test fails.
"""
import os
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from lib import new_id
from lib.proc import HOST, free_port, kill_group
from lib.redis import REDIS_SERVER, RedisError, Resp

from ._support import Stack

MASTER_NAME = "cronium"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _vpath(eid, key):
    return f"/executions/{eid}/variables/{urllib.parse.quote(key, safe='')}"


class Proc:
    """A redis-server process (data node or sentinel) on a free port."""

    def __init__(self, workdir, name, args, port):
        self.port = port
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([REDIS_SERVER, *args], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.cmd("PING") == "PONG":
                    return
            except (OSError, RedisError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{name} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def cmd(self, *args):
        with Resp(self.port, timeout=2) as r:
            return r.cmd(*args)

    def kill(self):
        kill_group(self.proc)


class SentinelSet:
    """master + replica + 3 sentinels."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []
        common = ["--bind", HOST, "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir),
                  "--loglevel", "notice"]
        mport, rport = free_port(), free_port()
        self.master = self._add("master", [*common, "--port", str(mport)], mport)
        self.replica = self._add("replica", [*common, "--port", str(rport), "--replicaof", HOST, str(mport)], rport)
        self.sentinels = []
        for i in range(3):
            sport = free_port()
            conf = workdir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {sport}\nbind {HOST}\ndaemonize no\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} {HOST} {mport} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            self.sentinels.append(self._add(f"sentinel{i}", [str(conf), "--sentinel"], sport))
        self._wait_settled()

    def _add(self, name, args, port):
        p = Proc(self.workdir, name, args, port)
        self.procs.append(p)
        return p

    def _wait_settled(self, timeout=30):
        """Replica in sync, and every sentinel knows the replica and the two other sentinels."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = self.replica.cmd("INFO", "replication").decode()
                ok = "master_link_status:up" in info
                for s in self.sentinels:
                    ok = ok and len(s.cmd("SENTINEL", "replicas", MASTER_NAME)) == 1
                    ok = ok and len(s.cmd("SENTINEL", "sentinels", MASTER_NAME)) == 2
                if ok:
                    return
            except (OSError, RedisError):
                pass
            time.sleep(0.2)
        raise AssertionError("sentinels did not settle: " + "; ".join(
            p.log_path.read_text(errors="replace")[-600:] for p in self.procs))

    @property
    def addrs(self):
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def master_port(self):
        a = self.sentinels[0].cmd("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(a[1])

    def close(self):
        for p in self.procs:
            p.kill()


@pytest.fixture
def sentinel_stack(tmp_path):
    ss = SentinelSet(tmp_path)
    st = None
    try:
        st = Stack(tmp_path / "svc", valkey=False, env={
            "VALKEY_SENTINELS": ss.addrs, "VALKEY_MASTER_NAME": MASTER_NAME,
            "VALKEY_TIMEOUT": "300ms", "LOG_LEVEL": "info"})
        st.start()
        st.wait_ready("ready", "up")
        yield ss, st
    finally:
        problems = st.close() if st else []
        ss.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _stat(proc, field, section="stats"):
    try:
        info = proc.cmd("INFO", section).decode()
    except (OSError, RedisError):
        return None
    for line in info.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1])
    return None


def test_sentinel_config_errors(tmp_path):
    """Bad sentinel settings are refused at start with a clear message."""
    from lib.proc import run_cli
    base = {"JWT_SECRET": "x" * 32, "BACKEND_URL": "http://127.0.0.1:1", "BACKEND_TOKEN": "t"}
    cases = [
        ({"VALKEY_SENTINELS": "127.0.0.1:26379"}, "cache.masterName"),
        ({"VALKEY_SENTINELS": "127.0.0.1", "VALKEY_MASTER_NAME": "m"}, "is not host:port"),
        ({"VALKEY_SENTINELS": "127.0.0.1:99999", "VALKEY_MASTER_NAME": "m"}, "is not host:port"),
        ({"VALKEY_SENTINELS": "a:1,,b:2", "VALKEY_MASTER_NAME": "m"}, "is not host:port"),
        ({"VALKEY_SENTINELS": "a:1", "VALKEY_MASTER_NAME": "m", "VALKEY_URL": "redis://127.0.0.1"}, "exclude"),
        ({"VALKEY_MASTER_NAME": "m"}, "cache.sentinels"),
    ]
    for env, needle in cases:
        r = run_cli(["--print-config"], env={**base, **env})
        out = r.stdout + r.stderr
        assert r.returncode != 0 and needle in out, (env, r.returncode, out[-500:])
    r = run_cli(["--print-config"], env={**base, "VALKEY_SENTINELS": "[::1]:26379, s.example:26380",
                                          "VALKEY_MASTER_NAME": "m"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_failover_under_load(sentinel_stack):
    """SIGKILL the master under PUT/GET load: the service follows the new
    master within the sentinels' failover time, answers every request
    meanwhile (bypassing the cache), and every acknowledged write reads back."""
    ss, st = sentinel_stack
    old_port = ss.master_port()
    assert old_port == ss.master.port
    nthreads, nkeys = 4, 25
    execs = [st.execution() for _ in range(nthreads)]
    acked = [dict() for _ in range(nthreads)]       # key -> latest acknowledged value
    maybe = [dict() for _ in range(nthreads)]       # key -> values of writes that failed
    problems, statuses = [], {}
    lock = threading.Lock()
    stop = threading.Event()
    t_end = time.monotonic() + 40

    def note(status):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    def worker(i):
        eid, _, c = execs[i]
        n = 0
        while not stop.is_set() and time.monotonic() < t_end:
            key = f"k{n % nkeys}"
            val = {"t": i, "n": n}
            r = c.put(_vpath(eid, key), {"value": val})
            note(r.status)
            if r.status == 200:
                acked[i][key] = val
                maybe[i].pop(key, None)
            else:
                maybe[i].setdefault(key, []).append(val)
            r = c.get(_vpath(eid, key))
            note(r.status)
            if r.status == 200:
                got = r.json()["data"]["value"]
                ok = [acked[i].get(key)] + maybe[i].get(key, [])
                if got not in ok:
                    with lock:
                        problems.append(f"exec {i} {key}: read {got!r}, acknowledged {acked[i].get(key)!r}")
            n += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nthreads)]
    for t in threads:
        t.start()
    time.sleep(1.5)     # warm: keys cached on the old master
    hits_before = st.metrics().value("cronium_runtime_cache_requests_total", kind="variable", result="hit")
    assert hits_before > 0, "no cache hits before the failover: the cache is not in use"
    assert (_stat(ss.replica, "keyspace_hits") or 0) == 0
    t_kill = time.monotonic()
    ss.master.proc.send_signal(signal.SIGKILL)

    t_up = t_hit = t_switch = None
    deadline = t_kill + 25
    while time.monotonic() < deadline and not (t_up and t_hit):
        m = st.metrics()
        now = time.monotonic()
        if t_switch is None and m.value("cronium_runtime_valkey_master_changes_total") >= 1:
            t_switch = now
        if t_up is None and t_switch and m.value("cronium_runtime_valkey_up") == 1:
            t_up = now
        if t_hit is None and (_stat(ss.replica, "keyspace_hits") or 0) > 0:
            t_hit = now     # the first cache read served by the new master
        time.sleep(0.05)
    time.sleep(2)           # more load on the new master
    stop.set()
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads), "load threads did not stop"

    timings = {k: (round(v - t_kill, 2) if v else None) for k, v in
               (("master_change_seen", t_switch), ("valkey_up", t_up), ("first_hit_new_master", t_hit))}
    print(f"\nfailover timings (s after SIGKILL): {timings}; statuses {statuses}")
    with open(os.environ.get("SENTINEL_TIMINGS", "/dev/null"), "a") as f:
        f.write(f"{timings} {statuses}\n")
    assert ss.master_port() == ss.replica.port, "the sentinels did not promote the replica"
    assert t_up and t_hit, f"the service did not follow the new master: {timings}"
    # down-after (1 s) + the sentinels' election and promotion; well within the failover timeout.
    assert t_hit - t_kill < (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000 + 2, timings
    assert not problems, problems[:10]
    assert set(statuses) == {200}, f"requests during the failover were not all answered: {statuses}"

    # After the failover: every acknowledged write reads back (twice: the cache, then again).
    for i, (eid, _, c) in enumerate(execs):
        for key, val in acked[i].items():
            for _ in range(2):
                r = c.get(_vpath(eid, key))
                assert r.status == 200, r
                got = r.json()["data"]["value"]
                assert got == val or got in maybe[i].get(key, []), (i, key, got, val)
    m = st.metrics()
    assert m.value("cronium_runtime_valkey_master_changes_total") == 1


def test_write_lost_by_failover_is_not_served_stale(sentinel_stack):
    """A write the old master acknowledged but never replicated: the new
    master still holds the value before it. The service must not serve that
    stale value after following the failover (it distrusts the keys written
    just before the old master was lost)."""
    ss, st = sentinel_stack
    eid, _, c = st.execution()
    keys = [f"v{i}" for i in range(10)]
    for k in keys:
        assert c.put(_vpath(eid, k), {"value": "old"}).status == 200
        assert c.get(_vpath(eid, k)).json()["data"]["value"] == "old"
    # Every key cached, and replicated.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rkeys = [k for k in ss.replica.cmd("KEYS", "*") if b"var" in k]
        if len(rkeys) == len(keys):
            break
        time.sleep(0.05)
    assert len(rkeys) == len(keys), rkeys
    # Cut replication for good (the replica cannot authenticate again), write, kill.
    with Resp(ss.master.port) as r:     # one connection: it stays authenticated
        r.cmd("CONFIG", "SET", "requirepass", "no-replica-may-sync")
        r.cmd("CLIENT", "KILL", "TYPE", "replica")
    for k in keys:
        assert c.put(_vpath(eid, k), {"value": "new"}).status == 200
    ss.master.proc.send_signal(signal.SIGKILL)
    stale = [k for k in rkeys if b"old" in (ss.replica.cmd("GET", k) or b"")]
    assert stale, "precondition: the replica should still hold the old values"

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = st.metrics()
        if m.value("cronium_runtime_valkey_master_changes_total") >= 1 and m.value("cronium_runtime_valkey_up") == 1:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the service did not follow the new master")
    for k in keys:
        for _ in range(2):
            r = c.get(_vpath(eid, k))
            assert r.status == 200, r
            assert r.json()["data"]["value"] == "new", f"{k}: stale value served after the failover"
    # The stale entries were deleted on the new master.
    assert not [k for k in rkeys if b"old" in (ss.replica.cmd("GET", k) or b"")]
