"""CLI and configuration (service core issue, docs/api.md §8, spec page 'Binary and CLI')."""
import json
import re
import time

import pytest

from lib.jwt import b64u_decode, sign
from lib.proc import free_port, run_cli


@pytest.mark.parametrize("env,names,value", [
    ({"PORT": "abc"}, ["PORT", "port"], "abc"),
    ({"PORT": "70000"}, ["PORT", "port"], "70000"),
    ({"READ_TIMEOUT": "5x"}, ["READ_TIMEOUT", "readTimeout"], "5x"),
    ({"IDLE_TIMEOUT": "soon"}, ["IDLE_TIMEOUT", "idleTimeout"], "soon"),
    ({"MAX_BODY_BYTES": "-1"}, ["MAX_BODY_BYTES", "maxBodyBytes"], "-1"),
    ({"MAX_CONNECTIONS": "many"}, ["MAX_CONNECTIONS", "maxConnections"], "many"),
    ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL", "level"], "loud"),
    ({"LOG_FORMAT": "xml"}, ["LOG_FORMAT", "format"], "xml"),
    ({"ENABLE_CORS": "maybe"}, ["ENABLE_CORS", "enableCors"], "maybe"),
    ({"RATE_LIMIT_PER_MIN": "1.5"}, ["RATE_LIMIT_PER_MIN", "rateLimitPerMin"], "1.5"),
    ({"RUNTIME_PORT": "abc"}, ["RUNTIME_PORT", "PORT", "port"], "abc"),
    ({"RUNTIME_SERVER_PORT": "abc"}, ["RUNTIME_SERVER_PORT", "PORT", "port"], "abc"),
])
def test_bad_config_value_exits_2_naming_setting_and_value(env, names, value):
    p = run_cli(["--dev"], env={"PORT": str(free_port()), **env}, timeout=10)
    assert p.returncode == 2, f"exit {p.returncode}; stderr={p.stderr!r}"
    assert any(n in p.stderr for n in names), f"stderr does not name the setting {names}: {p.stderr!r}"
    assert value in p.stderr, f"stderr does not show the value {value!r}: {p.stderr!r}"


def test_bad_value_in_yaml_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 8081\n  readTimeout: 5x\n")
    p = run_cli(["--dev", "--config", str(cfg)], timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "readTimeout" in p.stderr and "5x" in p.stderr, p.stderr


def test_missing_config_file_fails(tmp_path):
    p = run_cli(["--dev", "--config", str(tmp_path / "nope.yaml")], timeout=10)
    assert p.returncode != 0
    assert "nope.yaml" in p.stderr, p.stderr


def test_unknown_option_fails():
    p = run_cli(["--no-such-option"], timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--no-such-option" in p.stderr, p.stderr


def test_help():
    p = run_cli(["--help"], timeout=10)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for word in ("--dev", "--config", "--print-config", "--version", "token", "healthcheck"):
        assert word in out, f"--help does not mention {word}: {out!r}"


def test_version():
    p = run_cli(["--version"], timeout=10)
    assert p.returncode == 0, p.stderr
    assert "cronium-runtime" in p.stdout
    assert re.search(r"\d+\.\d+\.\d+", p.stdout), p.stdout


def test_print_config_shows_values_but_not_secrets():
    secret = "s3cr3t-jwt-value-do-not-print"
    btoken = "backend-token-value-do-not-print"
    vpass = "valkey-password-do-not-print"
    p = run_cli(["--print-config"], env={"PORT": "18123", "JWT_SECRET": secret, "BACKEND_TOKEN": btoken,
                                         "VALKEY_PASSWORD": vpass, "READ_TIMEOUT": "7s",
                                         "MAX_BODY_BYTES": "4321", "ALLOWED_ORIGINS": "https://z.example"},
                timeout=10)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for s in (secret, btoken, vpass):
        assert s not in out, f"secret printed by --print-config: {s}"
    for v in ("18123", "4321", "https://z.example"):
        assert v in p.stdout, f"--print-config does not show {v}: {p.stdout!r}"
    assert "7s" in p.stdout or "7000" in p.stdout, p.stdout


def test_print_config_env_wins_over_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 18001\n  maxBodyBytes: 5555\n")
    p = run_cli(["--config", str(cfg), "--print-config"], env={"PORT": "18002"}, timeout=10)
    assert p.returncode == 0, p.stderr
    assert "18002" in p.stdout and "18001" not in p.stdout, p.stdout
    assert "5555" in p.stdout, p.stdout


def test_secret_file_form(tmp_path, services):
    f = tmp_path / "secret"
    f.write_text("file-secret-123\n")
    svc = services.start(env={"JWT_SECRET": None, "JWT_SECRET_FILE": str(f)}, args=["--dev"])
    tok = svc.token("sf-1")
    # the token command read the same file: it verifies with the file's secret
    h, pl, sig = tok.split(".")
    assert sign(h + "." + pl, "file-secret-123") == sig
    assert svc.api(tok).get("/executions/sf-1/input").status == 200


def test_healthcheck_exit_codes(services):
    svc = services.start(args=["--dev"])
    p = run_cli(["healthcheck"], env={"PORT": str(svc.port)}, timeout=10)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    p = run_cli(["healthcheck"], env={"PORT": str(free_port())}, timeout=10)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)


def test_token_command_claims_and_signature():
    secret = "token-cmd-secret"
    t0 = int(time.time())
    p = run_cli(["token", "--execution-id", "ex-1", "--user-id", "u-1", "--job-id", "j-1",
                 "--event-id", "ev-1", "--ttl", "1h", "--issuer", "iss-1"],
                env={"JWT_SECRET": secret}, timeout=10)
    assert p.returncode == 0, p.stderr
    tok = p.stdout
    assert tok.endswith("\n") and tok.count("\n") == 1, repr(tok)
    tok = tok.strip()
    h, pl, sig = tok.split(".")
    assert sign(h + "." + pl, secret) == sig, "token not HS256-signed with JWT_SECRET"
    header = json.loads(b64u_decode(h))
    claims = json.loads(b64u_decode(pl))
    assert header["alg"] == "HS256"
    assert claims["executionId"] == "ex-1"
    assert claims["userId"] == "u-1"
    assert claims.get("jobId", claims.get("job_id")) == "j-1"
    assert claims["eventId"] == "ev-1"
    assert claims["iss"] == "iss-1"
    assert abs(claims["iat"] - t0) <= 5
    assert claims["exp"] - claims["iat"] == 3600


def test_token_command_default_ttl_is_2h():
    p = run_cli(["token", "--execution-id", "ex-2"], env={"JWT_SECRET": "x"}, timeout=10)
    assert p.returncode == 0, p.stderr
    claims = json.loads(b64u_decode(p.stdout.strip().split(".")[1]))
    assert claims["exp"] - claims["iat"] == 7200, claims


def test_token_command_needs_execution_id():
    p = run_cli(["token"], env={"JWT_SECRET": "x"}, timeout=10)
    assert p.returncode != 0
    assert p.stdout.strip() == ""


def find_access_line(lines, rid):
    for ln in lines:
        if rid in json.dumps(ln):
            return ln
    return None


def test_json_access_log_line(services):
    svc = services.start(args=["--dev"])
    r = svc.api().get("/health", headers={"X-Request-Id": "log-probe-4711"})
    assert r.status == 200
    r = svc.api().get("/nope", headers={"X-Request-Id": "log-probe-4712"})
    assert r.status == 404
    # a request id with quotes, backslashes and non-ASCII must not break the JSON lines
    r = svc.api().get("/health", headers={"X-Request-Id": 'odd"id\\with\tstuff'})
    assert r.status == 200
    with svc.raw() as c:
        r = c.request("GET", "/health", headers={"X-Request-Id": "caf\xe9-\x7f-id"})
        assert r.status in (200, 400), r
    svc.signal(15)  # stop it so every log line is flushed
    assert svc.wait_exit(8) == 0
    lines = []
    for raw in svc.stderr_path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            lines.append(json.loads(raw.decode("utf-8")))  # JSON text is UTF-8 (RFC 8259)
        except ValueError:
            pytest.fail(f"stderr line is not UTF-8 JSON (LOG_FORMAT=json is the default): {raw!r}")
    for rid, status, route in (("log-probe-4711", 200, "/health"), ("log-probe-4712", 404, None)):
        ln = find_access_line(lines, rid)
        assert ln is not None, f"no access-log line carries request id {rid}"
        vals = [str(v) for v in ln.values()]
        assert str(status) in vals, ln
        assert "GET" in vals, ln
        if route:
            assert route in vals, ln


def test_text_log_format(services):
    svc = services.start(env={"LOG_FORMAT": "text"}, args=["--dev"])
    assert svc.api().get("/health", headers={"X-Request-Id": "text-probe-1"}).status == 200
    deadline = time.monotonic() + 3
    while "text-probe-1" not in svc.stderr():
        assert time.monotonic() < deadline, "access log line never written"
        time.sleep(0.05)
    line = [ln for ln in svc.stderr().splitlines() if "text-probe-1" in ln][0]
    with pytest.raises(ValueError):
        json.loads(line)
