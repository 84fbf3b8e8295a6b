"""containers/monitoring: the Grafana dashboard and the Prometheus alert rules name
only series a running service exposes. Two real services are scraped: dev mode,
and production mode with the backend fake and a real redis-server, after traffic
that makes every labelled series appear. Every query of the dashboard and every
alert expression is reduced to its metric names (PromQL functions, keywords,
label lists, strings and ranges stripped); each cronium_runtime_* / process_*
name must be a series of the live output (histograms by their _bucket, _sum and
_count series), and each label it is filtered or grouped by must be one of its
labels."""
import json
import re
import urllib.request

import pytest
import yaml

from lib.redis import RedisServer

from .conftest import REPO

MONITORING = REPO / "containers" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yaml"

# Series that come from Prometheus or an exporter next to it, not from the service.
EXTERNAL = {"up", "probe_success"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"instance", "job"}
# Families only production mode has (a backend, a Valkey URL).
PRODUCTION_ONLY = ("cronium_runtime_backend_", "cronium_runtime_valkey_", "cronium_runtime_cache_",
                   "cronium_runtime_audit_", "cronium_runtime_increments_")

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool",
    # functions
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "ceil",
    "floor", "round", "clamp", "clamp_min", "clamp_max", "time", "timestamp", "vector", "scalar",
    "absent", "absent_over_time", "changes", "resets", "label_replace", "label_join", "sort",
    "sort_desc", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "predict_linear", "exp", "ln", "log2", "log10", "sqrt",
}


# ---- reading the files -------------------------------------------------------------------------

def dashboard_queries():
    doc = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p['title']!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(doc["panels"])
    for var in doc.get("templating", {}).get("list", []):
        q = var.get("query")
        if var.get("type") == "query":
            q = q["query"] if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
            assert m, f"variable {var['name']}: unexpected query {q!r}"
            out.append((f"variable {var['name']}", f"{m.group(1)}{{{m.group(2)}!=\"\"}}"))
    return out


def alert_expressions():
    doc = yaml.safe_load(ALERTS.read_text())
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule['alert']}", rule["expr"]))
    return out


def references(expr):
    """{metric name: set of label names it is filtered by} and the labels grouped by."""
    e = re.sub(r"\$\{?\w+\}?", "x", expr)                    # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)                  # strings (label values)
    e = re.sub(r"\[[^\]]*\]", "", e)                           # ranges
    grouped = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        grouped |= {l.strip() for l in m.group(1).split(",") if l.strip()}
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = {}
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", e):
        name, matchers = m.group(1), m.group(2) or ""
        if name in PROMQL_WORDS or re.fullmatch(r"\d.*|e|x", name):
            continue
        if e[m.end():].lstrip().startswith("(") and not matchers:
            raise AssertionError(f"unknown PromQL function {name!r} in {expr!r}")
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
        names.setdefault(name, set()).update(labels)
    return names, grouped


# ---- the live service ------------------------------------------------------------------------------

def scrape(base_url):
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s', line)
        assert m, f"not a sample line: {line!r}"
        labels = set(re.findall(r'([a-zA-Z_]\w*)="', m.group(2) or ""))
        series.setdefault(m.group(1), set()).update(labels)
    return series


def call(base, method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def traffic(svc, exec_id, user_id):
    """Requests that touch every part: input, a variable set, read twice (cache miss then
    hit), incremented, deleted, output, condition, a tool action, a 401 and a 404."""
    token = svc.token(exec_id, user_id)
    base, p = svc.base_url, f"/executions/{exec_id}"
    statuses = [
        call(base, "GET", p + "/input", token),
        call(base, "GET", p + "/context", token),
        call(base, "PUT", p + "/variables/m", token, {"value": 1}),
        call(base, "GET", p + "/variables/m", token),
        call(base, "GET", p + "/variables/m", token),
        call(base, "POST", p + "/variables/n/increment", token, {"by": 2}),
        call(base, "DELETE", p + "/variables/m", token),
        call(base, "POST", p + "/output", token, {"data": {"ok": True}}),
        call(base, "POST", p + "/condition", token, {"condition": True}),
        call(base, "POST", "/tool-actions/execute", token, {"tool": "email", "action": "send", "params": {}}),
    ]
    # DELETE and tool actions: 501 where the backend does not offer them (the real one's default).
    assert all(s == 200 or (i in (6, 9) and s == 501) for i, s in enumerate(statuses)), statuses
    assert call(base, "GET", p + "/input", "not-a-token") == 401
    assert call(base, "GET", "/no-such-path", token) == 404


@pytest.fixture
def live(start_service, fake_backend, tmp_path):
    """{"dev": series, "production": series} of two real services after traffic."""
    dev = start_service(args=["--dev"], name="dev", env={"JWT_SECRET": "d" * 32})
    traffic(dev, dev.exports["CRONIUM_EXECUTION_ID"], "dev-user")
    out = {"dev": scrape(dev.base_url)}
    redis = RedisServer(tmp_path).start()
    try:
        fb = fake_backend(token="bt")
        fb.seed_execution({"executionId": "mon-1", "userId": "mon-user"})
        svc = start_service(name="prod", env={
            "BACKEND_URL": fb.url, "BACKEND_TOKEN": "bt", "JWT_SECRET": "m" * 32,
            "VALKEY_URL": f"redis://127.0.0.1:{redis.port}"})
        traffic(svc, "mon-1", "mon-user")
        out["production"] = scrape(svc.base_url)
    finally:
        redis.close()
    return out


# ---- the checks ------------------------------------------------------------------------------------

def problems_in(where, expr, live_series, dev=False):
    names, grouped = references(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    problems = []
    known_labels = set(TARGET_LABELS)
    skipped = False
    for name, labels in names.items():
        if name in EXTERNAL:
            continue
        if not name.startswith(("cronium_runtime_", "process_")):
            problems.append(f"{where}: {name} is neither a series of the service nor a known external one")
            continue
        if dev and name.startswith(PRODUCTION_ONLY):
            skipped = True
            continue
        if name not in live_series:
            problems.append(f"{where}: {name} is not in the live /metrics")
            continue
        known_labels |= live_series[name]
        missing = labels - live_series[name] - TARGET_LABELS
        if missing:
            problems.append(f"{where}: {name} has no label {sorted(missing)}")
    if grouped - known_labels and not skipped:
        problems.append(f"{where}: grouped by {sorted(grouped - known_labels)}, a label none of its series has")
    return problems


def all_expressions():
    exprs = dashboard_queries() + alert_expressions()
    return exprs


def test_files_parse_and_cover_what_they_must():
    dash = dashboard_queries()
    alerts = alert_expressions()
    assert len(dash) >= 25 and len(alerts) >= 10
    used = set()
    for _where, expr in dash:
        used |= set(references(expr)[0])
    for name in ("cronium_runtime_http_requests_total", "cronium_runtime_http_request_duration_seconds_bucket",
                 "cronium_runtime_backend_requests_total", "cronium_runtime_valkey_up",
                 "cronium_runtime_rate_limited_total", "cronium_runtime_auth_failures_total",
                 "cronium_runtime_log_lines_dropped_total", "cronium_runtime_accept_errors_total",
                 "cronium_runtime_cache_requests_total", "cronium_runtime_cache_invalidations_total",
                 "cronium_runtime_increments_rejected_total"):
        assert name in used, f"the dashboard shows nothing of {name}"
    rules = {where.split(" ", 1)[1] for where, _ in alerts}
    for alert in ("CroniumRuntimeUnready", "CroniumRuntimeBackendErrors", "CroniumRuntimeValkeyDown",
                  "CroniumRuntimeLogLinesDropped", "CroniumRuntimeAcceptErrors", "CroniumRuntimeHigh5xxRatio"):
        assert alert in rules, alert
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_every_query_names_series_a_live_service_exposes(live):
    prod, dev = live["production"], live["dev"]
    assert "cronium_runtime_valkey_up" in prod and "cronium_runtime_backend_requests_total" in prod
    problems = []
    for where, expr in all_expressions():
        problems += problems_in(where, expr, prod)
        problems += [f"dev mode: {p}" for p in problems_in(where, expr, dev, dev=True)]
    assert not problems, "\n".join(problems)


def test_the_check_notices_unknown_names_and_labels():
    live_series = {"cronium_runtime_http_requests_total": {"route", "method", "status"},
                   "cronium_runtime_http_request_duration_seconds_bucket": {"le"}}
    names, grouped = references(
        'histogram_quantile(0.99, sum by (le, instance) (rate(cronium_runtime_http_request_duration_seconds_bucket'
        '{instance=~"$instance"}[$__rate_interval]))) / on (instance) up{job="x"}')
    assert set(names) == {"cronium_runtime_http_request_duration_seconds_bucket", "up"}
    assert grouped == {"le", "instance"}
    assert not problems_in("ok", 'sum by (route) (rate(cronium_runtime_http_requests_total{status=~"5.."}[5m]))',
                           live_series)
    assert problems_in("typo", "rate(cronium_runtime_http_request_total[5m])", live_series)
    assert problems_in("label", 'sum(rate(cronium_runtime_http_requests_total{code="500"}[5m]))', live_series)
    assert problems_in("group", "sum by (op) (rate(cronium_runtime_http_requests_total[5m]))", live_series)
    assert problems_in("foreign", "rate(node_cpu_seconds_total[5m])", live_series)
    with pytest.raises(AssertionError):
        references("frobnicate(cronium_runtime_http_requests_total)")
