"""/health, /ready, /metrics and X-Request-Id (docs/api.md §3, §4; service core issue)."""
import re
import time
from datetime import datetime

import pytest

from lib.http import assert_error
from lib.proc import run_cli

from ._metrics import gauge, open_connections_metric, parse_metrics, scrape

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture(scope="module")
def svc(module_services):
    return module_services.start(args=["--dev"])


def parse_time(s):
    assert RFC3339.match(s), f"not RFC 3339: {s!r}"
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def test_health_get(svc):
    r = svc.api().get("/health")
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    body = r.json()
    assert set(body) == {"status", "time"}, body
    assert body["status"] == "healthy"
    assert abs(parse_time(body["time"]) - time.time()) < 60, body
    assert r.header("X-Request-Id")


def test_health_head_has_headers_and_no_body(svc):
    with svc.raw() as c:
        # HEAD then GET in one send: if the HEAD answer carried a body, the
        # GET answer would not parse right after the HEAD head.
        c.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = c.read_response("HEAD")
        assert head.status == 200, head
        cl = head.header("Content-Length")
        assert cl is not None and int(cl) > 0, head
        assert (head.header("Content-Type") or "").startswith("application/json"), head
        assert head.header("X-Request-Id")
        get = c.read_response("GET")
        assert get.status == 200, get
        assert get.json()["status"] == "healthy"
        # Same length for the same body shape (time may differ by a digit or two).
        assert abs(int(cl) - len(get.body)) <= 10, (cl, get.body)


def test_ready_in_dev_mode(svc):
    r = svc.api().get("/ready")
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    assert r.json() == {"status": "ready", "checks": {"valkey": "disabled", "backend": "disabled", "audit": "ok"}, "ratelimit": "local"}


def test_operational_endpoints_need_no_token_and_have_no_envelope(svc):
    for path in ("/health", "/ready"):
        body = svc.api().get(path).json()
        assert "success" not in body, (path, body)


def test_request_id_echoed(svc):
    rid = "bb-req-0123456789-abcdef"
    for path in ("/health", "/ready", "/metrics", "/no/such/path"):
        r = svc.api().get(path, headers={"X-Request-Id": rid})
        assert r.header("X-Request-Id") == rid, (path, r)


def test_request_id_generated_and_unique(svc):
    api = svc.api()
    ids = set()
    for path in ("/health", "/health", "/ready", "/nope", "/executions/x/input"):
        r = api.get(path)
        rid = r.header("X-Request-Id")
        assert rid and rid.strip() == rid and len(rid) >= 8, (path, r)
        ids.add(rid)
    assert len(ids) == 5, f"generated request ids repeat: {ids}"


def test_request_id_on_errors(svc):
    r = svc.api().get("/executions/abc/input")  # no token
    assert_error(r, 401, "missing_token")
    r = svc.api().get("/executions/abc/input", headers={"X-Request-Id": "err-id-1"})
    assert r.header("X-Request-Id") == "err-id-1"


# -- /metrics ---------------------------------------------------------------

def request_counter(types, samples):
    """The counter of HTTP requests labelled by route, method and status."""
    names = [n for n, t in types.items() if t == "counter" and "request" in n]
    for n in names:
        for name, labels, _ in samples:
            if name in (n, n + "_total") and {"route", "method"} <= set(labels) and \
                    ("status" in labels or "code" in labels):
                return name
    raise AssertionError(f"no request counter with route/method/status labels among {names}")


def count_for(samples, metric, route_part, method, status):
    total = 0.0
    for name, labels, value in samples:
        if name != metric:
            continue
        st = labels.get("status", labels.get("code"))
        if labels.get("method") == method and st == str(status) and route_part in labels.get("route", ""):
            total += value
    return total


def test_metrics_count_requests_by_route_method_status(svc):
    api = svc.api()
    types, samples = scrape(svc)
    metric = request_counter(types, samples)
    before_ok = count_for(samples, metric, "/health", "GET", 200)
    before_ready = count_for(samples, metric, "/ready", "GET", 200)
    for _ in range(5):
        assert api.get("/health").status == 200
    for _ in range(3):
        assert api.get("/ready").status == 200
    for _ in range(2):
        assert api.request("DELETE", "/health").status == 405
    types, samples = scrape(svc)
    assert count_for(samples, metric, "/health", "GET", 200) - before_ok == 5
    assert count_for(samples, metric, "/ready", "GET", 200) - before_ready == 3
    assert count_for(samples, metric, "/health", "DELETE", 405) >= 2


def test_metrics_unknown_paths_do_not_create_a_series_each(svc):
    api = svc.api()
    for i in range(20):
        assert api.get(f"/random-{i}-{time.time_ns()}").status == 404
    text = api.get("/metrics").body.decode()
    assert "random-" not in text, "unknown paths must not become route label values"


def test_metrics_routes_are_patterns_not_ids(svc):
    ids = [f"cardinality-{i}-x" for i in range(5)]
    for eid in ids:
        api = svc.api(svc.token(eid))
        assert api.get(f"/executions/{eid}/input").status == 200
        assert api.get(f"/executions/{eid}/variables/card-key-{eid}").status == 404
    text = svc.api().get("/metrics").body.decode()
    for eid in ids:
        assert eid not in text, "execution ids must not become label values"
    types, samples = parse_metrics(text)
    metric = request_counter(types, samples)
    assert count_for(samples, metric, "/input", "GET", 200) >= 5


def test_metrics_latency_histogram(svc):
    api = svc.api()
    for _ in range(3):
        api.get("/health")
    types, samples = scrape(svc)
    hists = [n for n, t in types.items() if t == "histogram"
             and ("duration" in n or "latency" in n) and "request" in n]
    assert hists, f"no request latency histogram; types: {types}"
    h = hists[0]
    buckets = [(lb, v) for n, lb, v in samples if n == h + "_bucket"]
    assert any(lb.get("le") == "+Inf" for lb, _ in buckets), "histogram without +Inf bucket"
    counts = [v for n, _, v in samples if n == h + "_count"]
    sums = [v for n, _, v in samples if n == h + "_sum"]
    assert counts and sum(counts) >= 3, counts
    assert sums and all(s >= 0 for s in sums)
    # buckets are cumulative within one label set
    by_series = {}
    for lb, v in buckets:
        key = tuple(sorted((k, x) for k, x in lb.items() if k != "le"))
        le = float("inf") if lb["le"] == "+Inf" else float(lb["le"])
        by_series.setdefault(key, []).append((le, v))
    for series in by_series.values():
        vals = [v for _, v in sorted(series)]
        assert vals == sorted(vals), f"buckets not cumulative: {series}"


def test_metrics_open_connections(svc):
    types, samples = scrape(svc)
    name = open_connections_metric(types, samples)
    base = gauge(samples, name)
    conns = [svc.raw() for _ in range(7)]
    try:
        for c in conns:  # make sure each one is accepted and counted
            assert c.request("GET", "/health").status == 200
        _, samples = scrape(svc)
        assert gauge(samples, name) >= base + 7, (base, gauge(samples, name))
    finally:
        for c in conns:
            c.close()
    deadline = time.monotonic() + 5
    while True:
        _, samples = scrape(svc)
        if gauge(samples, name) <= base + 1:
            break
        assert time.monotonic() < deadline, f"{name} did not go back down: {gauge(samples, name)}"
        time.sleep(0.1)


def test_metrics_process_metrics(svc):
    types, samples = scrape(svc)
    rss = gauge(samples, "process_resident_memory_bytes")
    assert 1 << 20 < rss < 8 << 30, rss
    fds = gauge(samples, "process_open_fds")
    assert 3 <= fds < 100000, fds
    start = gauge(samples, "process_start_time_seconds")
    assert abs(start - svc.started_wall) < 30, (start, svc.started_wall)
    cpu = [v for n, _, v in samples if n == "process_cpu_seconds_total"]
    assert cpu and cpu[0] >= 0


def test_metrics_open_fds_follow_connections(svc):
    _, samples = scrape(svc)
    before = gauge(samples, "process_open_fds")
    conns = [svc.raw() for _ in range(20)]
    try:
        for c in conns:
            assert c.request("GET", "/health").status == 200
        _, samples = scrape(svc)
        assert gauge(samples, "process_open_fds") >= before + 20
    finally:
        for c in conns:
            c.close()


def test_metrics_build_info_matches_version(svc):
    types, samples = scrape(svc)
    infos = [(n, lb, v) for n, lb, v in samples if n.endswith("build_info")]
    assert infos, "no *_build_info metric"
    name, labels, value = infos[0]
    assert value == 1, infos
    assert labels.get("version"), f"build info without a version label: {labels}"
    out = run_cli(["--version"])
    assert labels["version"] in out.stdout, (labels, out.stdout)
