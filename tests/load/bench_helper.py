#!/usr/bin/python3
"""Small measuring helper for tests/load/bench.sh (run with Debian's /usr/bin/python3).

Every subcommand prints `key=value` lines on stdout that bench.sh reads; problems go to
stderr and give a non-zero exit code. Only 127.0.0.1 is ever contacted.

  freeport                          a free TCP port on 127.0.0.1
  wait-http PORT PATH [TIMEOUT]     poll GET PATH until it answers 200
  parse-wrk FILE                    req/s, p50, p99, errors from a `wrk --latency` log
  rss PID                           VmRSS / RssAnon / RssFile of a process, in kB
  startup BIN RUNS WORKDIR          median time from exec to the first GET /health 200
  idle-conns PORT PID COUNT         RSS with COUNT idle keep-alive connections
"""

import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import time

HOST = "127.0.0.1"


def out(key, value):
    print(f"{key}={value}", flush=True)


def die(msg, code=1):
    print(f"bench_helper: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def read_response(sock):
    """Read one HTTP/1.1 response with a Content-Length body; return (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        rest += chunk
    return status, rest[:length]


def get_health(port, timeout=5.0):
    """One GET /health on a fresh connection; return (status, seconds taken)."""
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status, _ = read_response(s)
    return status, time.perf_counter() - t0


def proc_status(pid):
    fields = {}
    try:
        f = open(f"/proc/{pid}/status")
    except FileNotFoundError:
        return fields  # the process is gone
    with f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


# --- subcommands -------------------------------------------------------------------------

def cmd_freeport(_args):
    out("port", free_port())


def cmd_wait_http(args):
    port, path = int(args[0]), args[1]
    deadline = time.monotonic() + (float(args[2]) if len(args) > 2 else 10.0)
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                status, _ = read_response(s)
            if status == 200:
                out("status", status)
                return
            last = f"status {status}"
        except (OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.01)
    die(f"GET {path} on port {port} did not answer 200 in time (last: {last})")


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def cmd_parse_wrk(args):
    with open(args[0]) as f:
        text = f.read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        die(f"could not parse wrk output in {args[0]}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out("rps", f"{float(rps.group(1)):.0f}")
    out("p50_ms", f"{_ms(p50.group(1)):.3f}")
    out("p99_ms", f"{_ms(p99.group(1)):.3f}")
    out("requests", total.group(1))
    out("non2xx", non2xx.group(1) if non2xx else 0)
    out("sock_errors", sum(int(x) for x in sock.groups()) if sock else 0)
    out("sock_detail", "connect={},read={},write={},timeout={}".format(*sock.groups()) if sock else "none")


def cmd_rss(args):
    st = proc_status(int(args[0]))
    out("vmrss_kb", st.get("VmRSS", 0))
    out("rssanon_kb", st.get("RssAnon", 0))
    out("rssfile_kb", st.get("RssFile", 0))
    out("vmhwm_kb", st.get("VmHWM", 0))


def _one_start(binary, workdir):
    port = free_port()
    env = dict(os.environ, PORT=str(port), HOST=HOST, LOG_LEVEL="warn", TMPDIR=workdir)
    with open(os.path.join(workdir, "startup-stderr.log"), "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, "--dev"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = t0 + 5.0
            while True:
                now = time.perf_counter()
                if now > deadline:
                    raise TimeoutError("no /health 200 within 5 s")
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited with status {proc.returncode} during start")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.connect((HOST, port))
                except ConnectionRefusedError:
                    s.close()
                    time.sleep(0.0002)
                    continue
                try:
                    s.settimeout(5.0)
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    status, _ = read_response(s)
                except (OSError, ValueError):
                    status = 0
                finally:
                    s.close()
                if status == 200:
                    return time.perf_counter() - t0
                time.sleep(0.0002)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:
                os.unlink(os.path.join(workdir, f"cronium-runtime-dev-{port}.env"))
            except FileNotFoundError:
                pass


def cmd_startup(args):
    binary, runs, workdir = args[0], int(args[1]), args[2]
    times = []
    for _ in range(runs):
        times.append(_one_start(binary, workdir) * 1000.0)
    out("runs", runs)
    out("median_ms", f"{statistics.median(times):.2f}")
    out("min_ms", f"{min(times):.2f}")
    out("max_ms", f"{max(times):.2f}")
    # Reference floors: the same binary doing no work, and the smallest program.
    for key, argv in (("version_median_ms", [binary, "--version"]), ("true_median_ms", ["/bin/true"])):
        ref = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            ref.append((time.perf_counter() - t0) * 1000.0)
        out(key, f"{statistics.median(ref):.2f}")


def cmd_idle_conns(args):
    port, pid, count = int(args[0]), int(args[1]), int(args[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, max(want, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            die(f"RLIMIT_NOFILE hard limit {hard} is too low for {count} connections")
    before = proc_status(pid)
    socks = []
    t0 = time.perf_counter()
    try:
        for i in range(count):
            s = socket.create_connection((HOST, port), timeout=5.0)
            socks.append(s)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _ = read_response(s)
            if status != 200:
                die(f"connection {i}: GET /health answered {status}")
    except (OSError, ValueError) as e:
        out("opened", len(socks))
        die(f"opening connection {len(socks)} failed: {e}")
    open_s = time.perf_counter() - t0
    time.sleep(1.0)  # let the server settle
    held = proc_status(pid)
    # A socket the server has closed polls readable (EOF); count them.
    poller = select.poll()
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    closed_by_server = len(poller.poll(0))
    try:
        fresh_status, fresh_s = get_health(port)
    except (OSError, ValueError) as e:
        fresh_status, fresh_s = 0, 0.0
        print(f"bench_helper: fresh GET /health failed: {e}", file=sys.stderr)
    # An old idle connection must still be usable.
    try:
        socks[0].sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reuse_status, _ = read_response(socks[0])
    except (OSError, ValueError):
        reuse_status = 0
    for s in socks:
        s.close()
    time.sleep(1.0)
    after = proc_status(pid)
    try:
        after_status, _ = get_health(port)
    except (OSError, ValueError):
        after_status = 0
    out("opened", len(socks))
    out("open_seconds", f"{open_s:.2f}")
    out("rss_before_kb", before.get("VmRSS", 0))
    out("rss_held_kb", held.get("VmRSS", 0))
    out("rssanon_held_kb", held.get("RssAnon", 0))
    out("closed_by_server", closed_by_server)
    out("fresh_health_status", fresh_status)
    out("fresh_health_ms", f"{fresh_s * 1000.0:.2f}")
    out("reuse_health_status", reuse_status)
    out("rss_after_close_kb", after.get("VmRSS", 0))
    out("after_close_health_status", after_status)
    out("service_alive", 1 if after else 0)


COMMANDS = {
    "freeport": cmd_freeport,
    "wait-http": cmd_wait_http,
    "parse-wrk": cmd_parse_wrk,
    "rss": cmd_rss,
    "startup": cmd_startup,
    "idle-conns": cmd_idle_conns,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die("usage: bench_helper.py {" + ",".join(COMMANDS) + "} ARGS...", 2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
