"""The documentation says what the service does: configuration.md lists exactly
the settings of `cronium-runtime --list-settings` with their names and defaults,
its claims about precedence and value forms hold, operations.md's metrics table
and alert rules match a running service's /metrics, its log fields match real
log lines, and no doc points at a file that does not exist."""
import json
import re
import urllib.request

import pytest
import yaml

from lib.proc import run_cli

from .conftest import REPO, settings_table, snake_upper

DOCS = REPO / "docs"


def read(name):
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text()


def table_rows(text, first_cell=r"`[^`]+`"):
    rows = []
    for line in text.splitlines():
        if re.match(rf"^\|\s*{first_cell}\s*\|", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def ticks(cell):
    return re.findall(r"`([^`]*)`", cell)


# ---- configuration.md ---------------------------------------------------------------------------

def documented_settings():
    text = read("configuration.md").split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for cells in table_rows(text, r"`[a-z]+\.[A-Za-z]+`"):
        name = ticks(cells[0])[0]
        assert name not in rows, f"{name} is listed twice"
        rows[name] = cells
    return rows


def test_configuration_lists_exactly_the_settings_the_binary_knows():
    code = {y for y, *_ in settings_table()}
    docs = set(documented_settings())
    assert docs == code, f"undocumented: {sorted(code - docs)}; not in the code: {sorted(docs - code)}"


@pytest.mark.parametrize("row", settings_table(), ids=lambda r: r[0])
def test_each_setting_has_its_env_names_and_default(row):
    yaml_name, env, default, _meaning = row
    cells = documented_settings()[yaml_name]
    section, name = yaml_name.split(".", 1)
    expected = {env, "RUNTIME_" + env, "RUNTIME_" + snake_upper(section) + "_" + snake_upper(name)}
    assert set(ticks(cells[1])) == expected
    doc_default = ticks(cells[2])
    if default:
        assert doc_default == [default], f"{yaml_name}: default {cells[2]!r}, binary says {default!r}"
    else:
        assert doc_default == [] and cells[2] in ("—", "-", "none"), f"{yaml_name}: {cells[2]!r}"
    assert len(cells[3]) > 10, f"{yaml_name}: say what it means"


def secret_settings(tmp_path):
    """Settings that read <ENV>_FILE: found by asking the binary, not by name."""
    secret = tmp_path / "secret"
    secret.write_text("file-secret-value-0123456789\n")
    found = set()
    for yaml_name, env, _d, _m in settings_table():
        r = run_cli(["--print-config"], env={f"{env}_FILE": str(secret), "BACKEND_URL": None})
        if r.returncode == 0 and '"<redacted>"' in r.stdout:
            found.add(yaml_name)
    return found


def test_secrets_are_documented_with_their_file_forms(tmp_path):
    secrets = secret_settings(tmp_path)
    assert len(secrets) >= 3, secrets
    rows = documented_settings()
    for name in secrets:
        cell = rows[name][3]
        key = name.split(".", 1)[1]
        assert "_FILE" in cell and f"{key}File" in cell, f"{name}: mention _FILE and {key}File"
    text = read("configuration.md").split("## Secrets", 1)[1].split("\n## ", 1)[0]
    for name in secrets:
        assert f"`{name}`" in text


def test_documented_precedence_and_value_forms_hold(tmp_path):
    def port(env, *args):
        r = run_cli(["--print-config", *args], env=env)
        assert r.returncode == 0, r.stderr
        return int(re.search(r"^  port: (\d+)$", r.stdout, re.M).group(1))

    assert port({"PORT": "1001"}) == 1001
    assert port({"PORT": "1001", "RUNTIME_PORT": "1002"}) == 1002
    assert port({"PORT": "1001", "RUNTIME_PORT": "1002", "RUNTIME_SERVER_PORT": "1003"}) == 1003
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 1500\n")
    assert port({"PORT": None}, "--config", str(cfg)) == 1500
    assert port({"PORT": "1600"}, "--config", str(cfg)) == 1600
    assert port({"PORT": None, "CONFIG_FILE": str(cfg)}) == 1500
    cfg.write_text('server:\n  port: "${TEST_DOC_PORT:-1700}"\n')
    assert port({"PORT": None, "TEST_DOC_PORT": None}, "--config", str(cfg)) == 1700
    assert port({"PORT": None, "TEST_DOC_PORT": "1701"}, "--config", str(cfg)) == 1701

    text = read("configuration.md")
    durations = ticks(re.search(r"^\| duration \|(.*)\|$", text, re.M).group(1))
    assert {"300", "300s", "5m", "1h30m", "250ms"} <= set(durations)
    for d in durations:
        if re.fullmatch(r"[0-9][0-9hms]*", d):
            assert run_cli(["--print-config"], env={"READ_TIMEOUT": d}).returncode == 0, d
    for b in ticks(re.search(r"^\| boolean \|(.*)\|$", text, re.M).group(1)):
        for v in b.split("/"):
            assert run_cli(["--print-config"], env={"ENABLE_CORS": v.upper()}).returncode == 0, v
    bad = run_cli(["--print-config"], env={"PORT": "70000"})
    assert bad.returncode == 2 and "PORT (server.port)" in bad.stderr
    cfg.write_text("server:\n  prot: 1\n")
    assert run_cli(["--print-config", "--config", str(cfg)]).returncode == 2


# ---- operations.md: metrics, alerts, logs --------------------------------------------------------

def documented_metrics():
    text = read("operations.md").split("## Metrics", 1)[1].split("\n## ", 1)[0]
    out = {}
    for cells in table_rows(text, r"`[a-z_]+`"):
        out[ticks(cells[0])[0]] = cells[1]
    return out


def live_families(start_service, fake_backend):
    """A production-mode service with a backend and a Valkey URL (unreachable), after some
    traffic, so that every metric family is registered."""
    fb = fake_backend(token="bt")
    fb.seed_execution({"executionId": "m-1", "userId": "u"})
    from lib.proc import free_port
    svc = start_service(env={"BACKEND_URL": fb.url, "BACKEND_TOKEN": "bt", "JWT_SECRET": "m" * 32,
                             "VALKEY_URL": f"redis://127.0.0.1:{free_port()}"})
    token = svc.token("m-1", "u")
    req = urllib.request.Request(svc.base_url + "/executions/m-1/input",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(svc.base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_metrics_table_matches_a_running_service(start_service, fake_backend):
    live = live_families(start_service, fake_backend)
    docs = documented_metrics()
    assert set(docs) == set(live), f"undocumented: {sorted(set(live) - set(docs))}; " \
                                   f"documented but absent: {sorted(set(docs) - set(live))}"
    for name, kind in live.items():
        assert docs[name] == kind, f"{name}: documented as {docs[name]}, exposed as {kind}"


def test_alert_rules_parse_and_use_documented_metrics():
    text = read("operations.md")
    block = re.search(r"```yaml\n(groups:.*?)```", text, re.S)
    assert block, "operations.md needs the example alert rules"
    rules = yaml.safe_load(block.group(1))["groups"][0]["rules"]
    assert len(rules) >= 5
    known = set(documented_metrics()) | {"up"}
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])
        for name in re.findall(r"\b([a-z_]+)(?=[{\[\s)]|$)", expr):
            if name.startswith(("cronium_runtime_", "process_")) or name == "up":
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert base in known or name in known, f"{rule['alert']}: unknown metric {name}"


def test_log_fields_match_real_log_lines(start_service):
    svc = start_service(args=["--dev"], env={"LOG_LEVEL": "info", "LOG_FORMAT": "json"})
    with urllib.request.urlopen(svc.base_url + "/health", timeout=10) as r:
        assert r.status == 200
    svc.stop()
    lines = [json.loads(l) for l in svc.stderr_path.read_text().splitlines() if l.startswith("{")]
    access = [l for l in lines if l.get("msg") == "request"]
    assert access, lines
    text = read("operations.md").split("## Logs", 1)[1].split("\n## ", 1)[0]
    tables = re.findall(r"\| field \| meaning \|\n\|---\|---\|\n((?:\|.*\|\n)+)", text)
    assert len(tables) == 2
    common = {ticks(r.split("|")[1])[0] for r in tables[0].strip().splitlines()}
    request = {ticks(r.split("|")[1])[0] for r in tables[1].strip().splitlines()}
    assert common == {"time", "level", "msg"}
    for line in lines:
        assert common <= set(line), line
    assert set(access[0]) == common | request
    example = json.loads(re.search(r"```json\n(\{.*\})\n```", text).group(1))
    assert set(example) == set(access[0])


# ---- every doc ------------------------------------------------------------------------------------

DOC_FILES = ["configuration.md", "architecture.md", "operations.md", "security.md"]


@pytest.mark.parametrize("name", DOC_FILES)
def test_referenced_files_and_links_exist(name):
    text = read(name)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        assert (DOCS / target).resolve().exists(), f"{name}: broken link {target}"
    for path in re.findall(r"`((?:src|include|containers|tests|helpers|docs)/[A-Za-z0-9_./{}-]+)`", text):
        candidates = [REPO / path]
        if "/" in path and not (REPO / path).exists():
            # "src/http/server.c, router.c" style: a bare name after a path is in the same folder
            candidates.append(REPO / path.split("/")[0])
        assert any(c.exists() for c in candidates), f"{name}: {path} does not exist"


def test_architecture_names_real_functions():
    text = read("architecture.md")
    sources = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.c"))
    sources += "\n".join(p.read_text() for p in (REPO / "include").rglob("*.h"))
    names = set(re.findall(r"\b((?:crt|conn|on|op|cache|var|ctx|call|app|prod|server)_[a-z_]+)\b", text))
    assert len(names) > 15
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", sources))
    assert not missing, f"architecture.md names functions that do not exist: {missing}"


def test_architecture_covers_the_required_topics():
    text = read("architecture.md")
    for heading in ("## The loop", "## A request's state machine", "## The store interface",
                    "## How hiredis is driven", "## How curl multi is driven", "## A request's path"):
        assert heading in text


def test_security_covers_the_required_topics():
    text = read("security.md")
    for heading in ("## Threat model", "## What a token allows", "## Isolation", "## Secrets",
                    "## What is logged and audited"):
        assert heading in text
    actions = set(re.findall(r'"(?:GET|POST|PUT|DELETE)", "/[^"]+", "([a-z_]+)"',
                             (REPO / "src/api/api.c").read_text()))
    assert actions, "audit action names not found in src/api/api.c"
    for action in actions:
        assert f"`{action}`" in text, f"security.md does not list the audit action {action}"
