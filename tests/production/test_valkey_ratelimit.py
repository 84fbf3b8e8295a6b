"""Rate limits kept in Valkey (issue 13 #1): one GCRA key per execution
(cronium:exec:{<id>}:rl) and per failing client address
(cronium:authfail:{<addr>}), run by a Lua script through EVALSHA, shared by
every process on the port; the local buckets take over while Valkey is not
there, and /ready says which is in use.

Real binary, real redis-server, the backend fake; two processes share one
port (SO_REUSEPORT) and every request opens its own connection, so the
kernel spreads them over both. Counts and times are bounded."""
import http.client
import math
import time

from lib.proc import HOST

from ._support import DEFAULT_ENV

BURST = 12
PER_MIN = 60        # one token a second: the refill during a test of ~2 s is small


def one_shot(port, path, token=None, method="GET", body=None):
    """A request on its own connection (so SO_REUSEPORT picks a process for each)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def requests_served(svc):
    return svc.stderr().count('"msg":"request"')


def two_processes(make_stack, **env):
    st = make_stack(env={"RATE_LIMIT_BURST": str(BURST), "RATE_LIMIT_PER_MIN": str(PER_MIN), **env})
    st.add_service(PORT=str(st.port))
    return st


def ready_body(st):
    r = st.ready()
    return r.json()


def wait_mode(st, mode, timeout=10.0):
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = ready_body(st)
        if body.get("ratelimit") == mode:
            return body
        time.sleep(0.1)
    raise AssertionError(f"/ready never said ratelimit={mode}: {body}")


def redis_text(st, *args):
    v = st.redis_cmd(*args)
    return v.decode() if isinstance(v, bytes) else v


def cmd_calls(info):
    return {line.split(":")[0]: int(line.split("calls=")[1].split(",")[0])
            for line in info.splitlines() if line.startswith("cmdstat_")}


def burst_of(st, eid, token, n):
    out = []
    for _ in range(n):
        out.append(one_shot(st.port, f"/executions/{eid}/input", token))
    return out


def test_execution_limit_holds_across_processes(make_stack):
    st = two_processes(make_stack)
    assert ready_body(st)["ratelimit"] == "valkey"
    eid, _, _ = st.execution(metadata={"input": {"a": 1}})
    token = st.token(eid)
    before = [requests_served(s) for s in [st.svc] + st.more]
    t0 = time.monotonic()
    answers = burst_of(st, eid, token, 3 * BURST)
    elapsed = time.monotonic() - t0
    served = [requests_served(s) - b for s, b in zip([st.svc] + st.more, before)]
    assert all(n > 0 for n in served), f"one process got no request: {served}"
    allowed = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert len(allowed) + len(refused) == len(answers), [a[0] for a in answers]
    slack = math.ceil(elapsed * PER_MIN / 60) + 1
    assert BURST <= len(allowed) <= BURST + slack, \
        f"{len(allowed)} allowed of {len(answers)} over two processes (burst {BURST}, {elapsed:.2f}s)"
    # Headers come from the shared verdict: one limit, remaining counts down across processes.
    rem = [int(h["x-ratelimit-remaining"]) for _, h, _ in allowed]
    assert rem[:BURST] == list(range(BURST - 1, -1, -1)), rem
    for status, h, _ in answers:
        assert int(h["x-ratelimit-limit"]) == PER_MIN
        assert 0 <= int(h["x-ratelimit-reset"]) <= BURST * 60 // PER_MIN + 1
    for _, h, body in refused:
        assert int(h["x-ratelimit-remaining"]) == 0
        assert 1 <= int(h["retry-after"]) <= 60 // PER_MIN + 1
        assert b'"rate_limited"' in body
    # One key, with a TTL no longer than the time to refill the whole bucket.
    key = f"cronium:exec:{{{eid}}}:rl"
    pttl = st.redis_cmd("PTTL", key)
    assert 0 < pttl <= BURST * 60000 // PER_MIN + 1000, pttl


def test_local_store_setting_keeps_per_process_buckets(make_stack):
    """security.rateLimitStore local: what the service did before (a bucket per process)."""
    st = two_processes(make_stack, RATE_LIMIT_STORE="local")
    assert ready_body(st)["ratelimit"] == "local"
    eid, _, _ = st.execution(metadata={"input": {}})
    procs = [st.svc] + st.more
    before = [requests_served(p) for p in procs]
    answers, served = [], [0] * len(procs)
    # SO_REUSEPORT spreads fresh connections at random: go on (bounded) until each
    # process has seen a whole burst, so each bucket is known to have been emptied.
    while min(served) < BURST and len(answers) < 20 * BURST:
        answers += burst_of(st, eid, st.token(eid), BURST)
        served = [requests_served(p) - b for p, b in zip(procs, before)]
    assert min(served) >= BURST, f"the kernel sent too few requests to one process: {served}"
    allowed = sum(a[0] == 200 for a in answers)
    assert allowed >= len(procs) * BURST, f"local buckets: expected at least {len(procs)} x {BURST}, got {allowed}"
    assert st.redis_cmd("EXISTS", f"cronium:exec:{{{eid}}}:rl") == 0


def test_writes_wait_for_the_verdict(make_stack):
    st = make_stack(env={"RATE_LIMIT_BURST": "2", "RATE_LIMIT_PER_MIN": "1"})
    eid, uid, c = st.execution()
    for i in range(2):
        r = c.put(f"/executions/{eid}/variables/k", {"value": i})
        assert r.status == 200, r
    writes = len(st.fb.variable_writes)
    r = c.put(f"/executions/{eid}/variables/k", {"value": 99})
    assert r.status == 429, r
    r = c.put(f"/executions/{eid}/other", {"value": 99})   # 404 route, not limited
    time.sleep(0.3)
    assert len(st.fb.variable_writes) == writes, "a refused write reached the backend"
    assert st.fb.variable(uid, "k") is not None and "99" not in st.fb.variable(uid, "k")
    # A refused read answers 429 (its result, if any, is dropped) and a refused
    # bad request still gets 429 first (docs/api.md §3 order).
    r = c.get(f"/executions/{eid}/variables/k")
    assert r.status == 429 and r.header("Retry-After"), r
    r = c.get("/executions/someone-else/input")
    assert r.status == 429, r


def test_valkey_down_falls_back_to_local_and_back(make_stack):
    st = make_stack(env={"RATE_LIMIT_BURST": str(BURST), "RATE_LIMIT_PER_MIN": str(PER_MIN)})
    eid, _, c = st.execution(metadata={"input": {}})
    assert ready_body(st)["ratelimit"] == "valkey"
    st.redis.kill()
    body = wait_mode(st, "local")
    assert body["checks"]["valkey"] == "down" and body["status"] == "degraded", body
    answers = [c.get(f"/executions/{eid}/input") for _ in range(BURST + 4)]
    allowed = sum(r.status == 200 for r in answers)
    assert BURST <= allowed <= BURST + 2, f"local fallback allowed {allowed}"
    assert all(r.header("X-RateLimit-Limit") == str(PER_MIN) for r in answers)
    # Back: a fresh redis-server has no script; the load on connect puts it there.
    st.redis.start()
    wait_mode(st, "valkey")
    eid2, _, c2 = st.execution(metadata={"input": {}})
    rem = [int(c2.get(f"/executions/{eid2}/input").header("X-RateLimit-Remaining")) for _ in range(3)]
    assert rem == [BURST - 1, BURST - 2, BURST - 3], rem
    assert st.redis_cmd("EXISTS", f"cronium:exec:{{{eid2}}}:rl") == 1


def test_not_configured_says_local(make_stack):
    st = make_stack(valkey=False, env={"RATE_LIMIT_BURST": "3", "RATE_LIMIT_PER_MIN": "60"})
    body = ready_body(st)
    assert body["ratelimit"] == "local" and body["checks"]["valkey"] == "disabled", body


def test_noscript_after_script_flush_reloads(make_stack):
    st = make_stack(env={"RATE_LIMIT_BURST": str(BURST), "RATE_LIMIT_PER_MIN": str(PER_MIN)})
    eid, _, c = st.execution(metadata={"input": {}})
    assert c.get(f"/executions/{eid}/input").header("X-RateLimit-Remaining") == str(BURST - 1)
    assert redis_text(st, "SCRIPT", "FLUSH") == "OK"
    st.redis_cmd("CONFIG", "RESETSTAT")
    r = c.get(f"/executions/{eid}/input")
    assert r.status == 200 and r.header("X-RateLimit-Remaining") == str(BURST - 2), r
    r = c.get(f"/executions/{eid}/input")
    assert r.status == 200 and r.header("X-RateLimit-Remaining") == str(BURST - 3), r
    calls = cmd_calls(redis_text(st, "INFO", "commandstats"))
    # First: EVALSHA -> NOSCRIPT -> EVAL (reloads); second: EVALSHA only.
    assert calls.get("cmdstat_eval") == 1 and calls.get("cmdstat_evalsha") == 2, calls
    assert ready_body(st)["ratelimit"] == "valkey"


def test_auth_failures_limited_across_processes_valid_token_never_refused(make_stack):
    per_min = 6
    st = make_stack(env={"AUTH_FAILURES_PER_MIN": str(per_min)})
    st.add_service(PORT=str(st.port))
    eid, _, _ = st.execution(metadata={"input": {}})
    good = st.token(eid)
    t0 = time.monotonic()
    statuses = [one_shot(st.port, f"/executions/{eid}/input", "not.a.token")[0] for _ in range(3 * per_min)]
    elapsed = time.monotonic() - t0
    assert set(statuses) <= {401, 429}, statuses
    n401 = statuses.count(401)
    assert per_min <= n401 <= per_min + math.ceil(elapsed * per_min / 60) + 1, statuses
    assert st.redis_cmd("EXISTS", "cronium:authfail:{127.0.0.1}") == 1
    # The address is over its failure budget, yet a token that verifies goes through, on either process.
    for _ in range(8):
        status, h, _ = one_shot(st.port, f"/executions/{eid}/input", good)
        assert status == 200, (status, h)
    status, h, _ = one_shot(st.port, f"/executions/{eid}/input", "still.not.valid")
    assert status == 429 and int(h["retry-after"]) >= 1


def test_cached_get_is_one_round_trip(make_stack):
    """The limiter's EVALSHA and the store's GET leave in one write: per sequential
    cached GET Valkey reads one packet holding two commands."""
    st = make_stack()
    eid, uid, c = st.execution()
    assert c.put(f"/executions/{eid}/variables/v", {"value": "x"}).status == 200
    assert c.get(f"/executions/{eid}/variables/v").status == 200   # warm
    n = 40
    st.redis_cmd("CONFIG", "RESETSTAT")
    for _ in range(n):
        r = c.get(f"/executions/{eid}/variables/v")
        assert r.status == 200 and r.header("X-RateLimit-Limit") == DEFAULT_ENV["RATE_LIMIT_PER_MIN"], r
    info = redis_text(st, "INFO", "stats") + redis_text(st, "INFO", "commandstats")
    reads = int(info.split("total_reads_processed:")[1].split()[0])
    calls = cmd_calls(info)
    # Sent by the service: n EVALSHA + n GET. Valkey also counts what the script
    # runs inside each EVALSHA (TIME, GET, SET).
    assert calls.get("cmdstat_evalsha") == n and calls.get("cmdstat_get") == 2 * n, calls
    assert calls.get("cmdstat_time") == n and calls.get("cmdstat_set") == n, calls
    # + the INFO and RESETSTAT calls of this test on their own connections
    assert reads <= n + 4, f"{reads} reads by Valkey for {n} GETs: the limiter was not pipelined"
