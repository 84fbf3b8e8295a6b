"""server.workers (WORKERS): a supervisor and N worker processes on one port.

The real binary in production mode (backend fake; Valkey where it matters),
127.0.0.1 only, bounded counts and times. What is checked: N listening
sockets on the port, /metrics sums every worker whichever answers, /ready
counts workers, a worker killed with SIGKILL is restarted and the sums do not
go backwards, SIGTERM to the supervisor stops every worker gracefully with
exit 0, a configuration error exits 2 once, a worker that cannot start stops
everything with 1 instead of a restart loop, and auto means one per CPU.
"""
import json
import os
import signal
import socket
import time

import pytest

from lib.http import Client, get_status
from lib.proc import HOST, free_port, run_cli

from ._support import DEFAULT_ENV

PUBLISH_WAIT = 1.6   # workers publish every second; a scrape after this sees every slot


def listeners(port):
    """Listening TCP sockets on 127.0.0.1:port (one per worker with SO_REUSEPORT)."""
    want = f"0100007F:{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":
                n += 1
    return n


def log_lines(svc, msg):
    out = []
    for line in svc.stderr().splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == msg:
                out.append(rec)
    return out


def worker_pids(svc):
    """worker index -> pid of its latest start, from the supervisor's log."""
    pids = {}
    for rec in log_lines(svc, "worker started"):
        pids[rec["worker"]] = rec["pid"]
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def health_count(st):
    return st.metrics().value("cronium_runtime_http_requests_total", route="/health", status="200")


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout}s")


def fresh_health(port, n):
    """n GET /health, each on a new connection (so SO_REUSEPORT spreads them)."""
    bad = [s for s in (get_status(port, "/health") for _ in range(n)) if s != 200]
    assert not bad, f"{len(bad)} of {n} /health requests did not answer 200: {bad[:5]}"


@pytest.mark.parametrize("n", [2, 3])
def test_workers_serve_the_port_and_metrics_are_summed(make_stack, n):
    st = make_stack(env={"WORKERS": str(n)})
    wait_until(lambda: len(worker_pids(st.svc)) == n, 10, f"{n} workers started")
    wait_until(lambda: listeners(st.port) == n, 10, f"{n} listening sockets")
    time.sleep(PUBLISH_WAIT)
    base = health_count(st)
    sent = 300
    fresh_health(st.port, sent)
    time.sleep(PUBLISH_WAIT)
    seen = []
    for _ in range(12):               # fresh connections: different workers answer
        m = st.metrics()
        seen.append(m.value("cronium_runtime_http_requests_total", route="/health", status="200"))
        assert m.value("cronium_runtime_workers") == n
        for i in range(n):
            assert m.value("cronium_runtime_worker_up", worker=i) == 1, m.text[-800:]
        # histograms are summed too: every request counted once in the latency histogram
        assert m.value("cronium_runtime_http_request_duration_seconds_count") >= base + sent
        assert m.types.get("cronium_runtime_http_requests_total") == "counter"
    assert all(v == base + sent for v in seen), f"expected {base + sent} in every scrape, got {seen}"
    r = st.ready()
    body = r.json()
    assert r.status == 200 and body["status"] == "ready", body
    assert body["workers"] == {"ready": n, "total": n}, body
    assert set(body["checks"]) == {"valkey", "backend", "audit"}, body


def test_per_worker_gauges_are_labelled_and_open_connections_summed(make_stack):
    st = make_stack(env={"WORKERS": "2"})
    wait_until(lambda: listeners(st.port) == 2, 10, "2 listening sockets")
    time.sleep(PUBLISH_WAIT)
    m = st.metrics()
    # valkey_up per worker: an alert on == 0 fires when any one worker lost Valkey
    assert m.has("cronium_runtime_valkey_up", worker="0") and m.has("cronium_runtime_valkey_up", worker="1"), \
        m.text
    assert m.has("process_start_time_seconds", worker="1")
    assert m.value("cronium_runtime_build_info") == 1
    # the scrape's own connection is open in the worker that answers
    assert m.value("cronium_runtime_open_connections") >= 1
    # RSS summed over two processes is more than one process's
    assert m.value("process_resident_memory_bytes") > 0


def test_kill9_worker_is_restarted_and_sums_carry_on(make_stack):
    st = make_stack(env={"WORKERS": "2"})
    pids = wait_until(lambda: (p := worker_pids(st.svc)) and len(p) == 2 and p, 10, "2 workers started")
    wait_until(lambda: listeners(st.port) == 2, 10, "2 listening sockets")
    fresh_health(st.port, 100)
    time.sleep(PUBLISH_WAIT)
    before = health_count(st)
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 5, "the killed worker gone")
    # the port keeps answering while the worker is down and restarted
    time.sleep(0.2)
    fresh_health(st.port, 50)
    new = wait_until(lambda: (p := worker_pids(st.svc)).get(1) not in (None, victim) and p[1], 10,
                     "worker 1 restarted")
    assert alive(new) and alive(pids[0])
    wait_until(lambda: listeners(st.port) == 2, 10, "2 listening sockets again")
    wait_until(lambda: st.ready().status == 200, 10, "/ready back to 200")
    exited = log_lines(st.svc, "worker exited")
    assert len(exited) == 1 and exited[0]["signal"] == 9 and exited[0]["worker"] == 1, exited
    fresh_health(st.port, 20)
    time.sleep(PUBLISH_WAIT)
    after = health_count(st)
    # the killed worker's published counts are carried by its successor
    assert after >= before + 50 + 20, (before, after)


def test_ready_reports_a_missing_worker(make_stack):
    st = make_stack(env={"WORKERS": "2"})
    pids = wait_until(lambda: (p := worker_pids(st.svc)) and len(p) == 2 and p, 10, "2 workers started")
    wait_until(lambda: st.ready().status == 200, 10, "/ready 200")
    os.kill(pids[0], signal.SIGSTOP)      # alive but its loop does not turn: stale heartbeat
    try:
        def unready():
            # the stopped worker still holds a listening socket: a connection
            # the kernel hands it is not answered, so short timeouts
            c = Client(st.port, timeout=1.0)
            try:
                r = c.get("/ready")
            except Exception:  # noqa: BLE001 - landed on the stopped worker
                return None
            finally:
                c.close()
            return r if r.status == 503 else None
        r = wait_until(unready, 8, "/ready 503 with a stopped worker")
        body = r.json()
        assert body["status"] == "unready" and body["workers"] == {"ready": 1, "total": 2}, body
    finally:
        os.kill(pids[0], signal.SIGCONT)
    wait_until(lambda: st.ready().status == 200, 8, "/ready 200 again")


def test_sigterm_stops_every_worker_gracefully(make_stack):
    st = make_stack(env={"WORKERS": "3"})
    pids = wait_until(lambda: (p := worker_pids(st.svc)) and len(p) == 3 and p, 10, "3 workers started")
    wait_until(lambda: listeners(st.port) == 3, 10, "3 listening sockets")
    fresh_health(st.port, 30)
    st.svc.terminate()
    rc = st.svc.wait_exit(15)
    assert rc == 0, f"supervisor exit code {rc}; stderr:\n{st.svc.stderr()[-3000:]}"
    for pid in pids.values():
        assert not alive(pid), f"worker {pid} still running after the supervisor exited"
    stopped = log_lines(st.svc, "worker stopped")
    assert sorted(r["worker"] for r in stopped) == [0, 1, 2], stopped
    assert all(r["status"] == 0 and r["signal"] == 0 for r in stopped), stopped
    # each worker went through its own graceful stop
    assert len(log_lines(st.svc, "shutting down: finishing in-flight requests")) == 3
    assert not log_lines(st.svc, "restarting worker")
    assert listeners(st.port) == 0


def test_config_errors_exit_2_once(tmp_path):
    env = {**DEFAULT_ENV, "BACKEND_URL": "http://127.0.0.1:9", "BACKEND_TOKEN": "t", "JWT_SECRET": "s" * 32,
           "HOST": HOST, "PORT": str(free_port())}
    p = run_cli([], env={**env, "WORKERS": "banana"}, timeout=15)
    assert p.returncode == 2 and "server.workers (WORKERS)" in p.stderr, p.stderr
    p = run_cli([], env={**env, "WORKERS": "0"}, timeout=15)
    assert p.returncode == 2 and "server.workers (WORKERS)" in p.stderr, p.stderr
    p = run_cli([], env={**env, "WORKERS": "2", "PORT": "70000"}, timeout=15)
    assert p.returncode == 2 and "server.port" in p.stderr, p.stderr
    assert "worker started" not in p.stderr
    # dev mode: each worker would have its own in-memory store
    p = run_cli(["--dev"], env={"WORKERS": "2", "HOST": HOST, "PORT": str(free_port())}, timeout=15)
    assert p.returncode == 2 and "dev mode" in p.stderr and "server.workers" in p.stderr, p.stderr
    p = run_cli(["--print-config"], env={**env, "WORKERS": "auto"}, timeout=15)
    assert p.returncode == 0 and 'workers: "auto"' in p.stdout, p.stdout


def test_worker_that_cannot_start_stops_everything_without_a_restart_loop(tmp_path):
    """The port is held without SO_REUSEPORT: every worker fails to listen;
    the supervisor exits 1 after the first start, not in a loop."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        env = {**DEFAULT_ENV, "BACKEND_URL": "http://127.0.0.1:9", "BACKEND_TOKEN": "t", "JWT_SECRET": "s" * 32,
               "HOST": HOST, "PORT": str(port), "WORKERS": "2"}
        t0 = time.monotonic()
        p = run_cli([], env=env, timeout=20)
        took = time.monotonic() - t0
    finally:
        holder.close()
    assert p.returncode == 1, f"exit {p.returncode}; stderr:\n{p.stderr[-3000:]}"
    assert took < 10, took
    assert p.stderr.count("cannot listen on") <= 2, p.stderr[-3000:]
    assert "restarting worker" not in p.stderr
    assert "worker failed to start: stopping, no restart" in p.stderr


def test_workers_auto_is_one_per_cpu(make_stack):
    cpus = len(os.sched_getaffinity(0))
    st = make_stack(env={"WORKERS": "auto"})
    if cpus > 1:
        wait_until(lambda: len(worker_pids(st.svc)) == cpus, 10, f"{cpus} workers started")
    wait_until(lambda: listeners(st.port) == cpus, 10, f"{cpus} listening sockets")
    time.sleep(PUBLISH_WAIT)
    m = st.metrics()
    if cpus > 1:
        assert m.value("cronium_runtime_workers") == cpus
        sup = log_lines(st.svc, "supervisor starting workers")
        assert sup and sup[0]["workers"] == cpus and sup[0]["setting"] == "auto", sup
    else:
        # one CPU: no supervisor, the single-process path
        assert not m.has("cronium_runtime_workers")


def test_one_worker_is_the_single_process_path(make_stack):
    st = make_stack(env={"WORKERS": "1"})
    assert not log_lines(st.svc, "supervisor starting workers")
    m = st.metrics()
    assert not m.has("cronium_runtime_workers") and not m.has("cronium_runtime_worker_up")
    assert m.has("cronium_runtime_valkey_up") and not m.has("cronium_runtime_valkey_up", worker="0")
    body = st.ready().json()
    assert "workers" not in body, body


def test_sighup_reaches_every_worker_and_rotates_their_audit_files(make_stack, tmp_path):
    # logrotate signals the main pid: the supervisor must survive SIGHUP and pass it on.
    audit = tmp_path / "audit.jsonl"
    st = make_stack(env={"WORKERS": "2", "AUDIT_FILE": str(audit)})
    pids = wait_until(lambda: (p := worker_pids(st.svc)) and len(p) == 2 and p, 10, "2 workers started")
    wait_until(lambda: listeners(st.port) == 2, 10, "2 listening sockets")
    os.rename(audit, tmp_path / "audit.jsonl.1")
    os.kill(st.svc.proc.pid, signal.SIGHUP)
    wait_until(lambda: audit.exists(), 5, "the audit file reopened after SIGHUP")
    assert st.svc.proc.poll() is None, "the supervisor died of SIGHUP"
    assert all(alive(pid) for pid in pids.values()), "a worker died of SIGHUP"
    assert not log_lines(st.svc, "restarting worker")
    assert get_status(st.port, "/health") == 200
