"""Prometheus text format parsing for the /metrics tests."""
import re

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def parse_metrics(text):
    """Parse Prometheus text format 0.0.4 into (types, samples).

    types: name -> type; samples: list of (name, labels dict, float value).
    Fails on any line that is not valid exposition syntax."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        assert m, f"bad metrics line: {line!r}"
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = LABEL.match(rest, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        v = m.group(4)
        value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
        samples.append((m.group(1), labels, value))
    return types, samples


def scrape(svc):
    r = svc.api().get("/metrics")
    assert r.status == 200, r
    ct = r.header("Content-Type") or ""
    assert ct.startswith("text/plain") and "0.0.4" in ct, f"Content-Type {ct!r}"
    return parse_metrics(r.body.decode("utf-8"))


def open_connections_metric(types, samples):
    gauges = [n for n, t in types.items() if t == "gauge" and "connection" in n]
    for n in gauges:
        if "open" in n or "active" in n or "current" in n:
            return n
    raise AssertionError(f"no open-connections gauge among {sorted(types)}")


def gauge(samples, name):
    vals = [v for n, _, v in samples if n == name]
    assert vals, f"metric {name} has no sample"
    return sum(vals)


