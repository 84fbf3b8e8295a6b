"""Scripts written from the public Cronium docs run unchanged in the runner images (issue 11).

Each pattern of the docs runs the way the Cronium orchestrator runs a job -- ``bash -c
"$SCRIPT"``, ``python3 -c "$SCRIPT"``, ``node -e "$SCRIPT"`` (and script files: ``python3
job.py``, ``node job.js``, ``node job.mjs``) -- against the real cronium-runtime binary in dev
mode ($CRONIUM_RUNTIME_BIN), with no import, require or source line in the script.

THE RUNNER IMAGE'S ENVIRONMENT IS REPLICATED, NOT BUILT. There is no container engine in the
test command, so each test rebuilds the image's environment from its Dockerfile
(containers/runner-*/Dockerfile, parsed with tests/static/_dockerfile.py):

* every COPY of the final stage is replayed under a temporary root directory;
* the environment is ``env -i`` plus exactly the Dockerfile's ENV values (absolute paths in
  them rewritten into the root, e.g. BASH_ENV and NODE_OPTIONS="--require ..."), the
  variables the base image and the engine set (PATH, HOME of the image's user, and LANG for
  the python base image), plus the three the orchestrator adds: CRONIUM_RUNTIME_API,
  CRONIUM_EXECUTION_ID, CRONIUM_EXECUTION_TOKEN. Nothing else (no PYTHONPATH, no NODE_PATH);
* Python: the Dockerfile's ``pip install`` goes into the site-packages of a fresh virtual
  environment of this machine's python3 (3.11, as the image), and its ``cp
  cronium-builtin.pth`` into the same site-packages, so the interpreter processes the .pth
  line at start exactly as the image's does;
* the working directory is the image's WORKDIR (inside the root).
Same interpreters as the images: Debian bookworm's bash 5.2, Python 3.11 and Node 20.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from test_scenario import REPO, Runtime, http

DF_SPEC = importlib.util.spec_from_file_location("_dockerfile", REPO / "tests" / "static" / "_dockerfile.py")
assert DF_SPEC and DF_SPEC.loader
df = importlib.util.module_from_spec(DF_SPEC)
DF_SPEC.loader.exec_module(df)

CONTAINERS = REPO / "containers"
PYTHON = "/usr/bin/python3"
SCRIPT_TIMEOUT = 60

# What the base images and the engine put in the environment before the Dockerfile's ENV.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {
    "runner-bash": {"PATH": BASE_PATH, "HOME": "/home/runner"},
    "runner-python": {"PATH": BASE_PATH, "HOME": "/home/runner", "LANG": "C.UTF-8"},
    "runner-node": {"PATH": BASE_PATH, "HOME": "/home/node"},
}

CONTEXT = {
    "executionId": "docs-exec",
    "jobId": "job-docs",
    "eventId": "evt-docs",
    "userId": "docs-user",
    "metadata": {"input": {"user_id": "u-42", "items": [1, 2]}},
    "event": {"id": "evt-docs", "name": "Docs example", "type": "SCRIPT", "runLocation": "LOCAL",
              "successCount": 3},
    "user": {"id": "docs-user", "email": "d@example.com"},
}


class Image:
    """One runner image's environment, replayed from its Dockerfile under ``root``."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.stage = df.stages(df.parse((CONTAINERS / name / "Dockerfile").read_text()))[-1]
        self.env: Dict[str, str] = {}
        self.workdir = root
        self.python = PYTHON
        self.runs: List[str] = []
        for ins in self.stage.instructions:
            if ins.keyword == "COPY":
                *srcs, dest = df.copy_operands(ins)
                for src in srcs:
                    s = REPO / src
                    d = self.path(dest) / s.name if (dest.endswith("/") or len(srcs) > 1) else self.path(dest)
                    d.parent.mkdir(parents=True, exist_ok=True)
                    if s.is_dir():
                        shutil.copytree(s, d, ignore=shutil.ignore_patterns(
                            "__pycache__", "build", "*.egg-info", ".mypy_cache", "tests"))
                    else:
                        shutil.copy2(s, d)
            elif ins.keyword == "ENV":
                for k, v in df.env_pairs(ins).items():
                    self.env[k] = " ".join(self._rewrite(w) for w in v.split(" "))
            elif ins.keyword == "WORKDIR":
                self.workdir = self.path(ins.rest)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "RUN":
                self.runs.extend(df.run_commands(ins))
        if name == "runner-python":
            self._python_install()

    def path(self, abs_path: str) -> Path:
        return self.root / abs_path.lstrip("/")

    def _rewrite(self, word: str) -> str:
        return str(self.path(word)) if word.startswith("/") and self.path(word).exists() else word

    def _python_install(self) -> None:
        pip = [c for c in self.runs if " pip install " in f" {c} "]
        pth = [c for c in self.runs if c.startswith("cp ") and "cronium-builtin.pth" in c]
        into_site = any('get_path("purelib")' in c for c in self.runs)
        assert len(pip) == 1 and len(pth) == 1 and into_site, f"the python image's RUN steps changed: {self.runs}"
        venv = self.root / "venv"
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        self.python = str(venv / "bin" / "python3")
        site = subprocess.run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        words = pip[0].split()
        args = [self._rewrite(a) if a.startswith("/") else a for a in words[words.index("install") + 1:]]
        src = [a for a in args if not a.startswith("-")]
        assert src == [str(self.path("/tmp/cronium-python"))], args  # the COPY's destination
        r = subprocess.run([PYTHON, "-m", "pip", "install", "--target", site, *args],
                           capture_output=True, text=True, timeout=300,
                           env={"PATH": BASE_PATH, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                                "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(self.root)})
        assert r.returncode == 0, r.stdout + r.stderr
        shutil.copy2(self.path("/tmp/cronium-python/cronium-builtin.pth"), site)

    def environment(self, rt: "Rt", execution_id: str) -> Dict[str, str]:
        env = dict(BASE_ENV[self.name])
        env["HOME"] = str(self.path(env["HOME"]))
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        env.update(self.env)
        env.update(CRONIUM_RUNTIME_API=rt.url, CRONIUM_EXECUTION_ID=execution_id,
                   CRONIUM_EXECUTION_TOKEN=rt.token_for(execution_id))
        return env

    def run(self, argv: List[str], rt: "Rt", execution_id: str) -> subprocess.CompletedProcess[str]:
        exe = {"python3": self.python}.get(argv[0], argv[0])
        return subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
                              env=self.environment(rt, execution_id), cwd=self.workdir, stdin=subprocess.DEVNULL)


class Rt:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.url = runtime.url

    def token_for(self, execution_id: str) -> str:
        return self.runtime.token(execution_id, CONTEXT["userId"])

    def state(self, execution_id: str, tail: str) -> Tuple[int, Any]:
        return http("GET", f"{self.url}/executions/{execution_id}{tail}", self.token_for(execution_id))


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Any:
    runtime = Runtime(tmp_path_factory.mktemp("docs-rt"), CONTEXT)
    runtime.start()
    try:
        yield Rt(runtime)
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Image]:
    root = tmp_path_factory.mktemp("images")
    return {name: Image(name, root / name) for name in ("runner-bash", "runner-python", "runner-node")}


def counter(rt: Rt, execution_id: str) -> int:
    """COUNTER as the runtime holds it (variables are per user: every run here shares it)."""
    status, body = rt.state(execution_id, "/variables/COUNTER")
    return int(body["data"]["value"]) if status == 200 else 0


def fresh(tag: str) -> str:
    return f"docs-{tag}-{secrets.token_hex(4)}"


def lines_of(r: subprocess.CompletedProcess[str]) -> List[Any]:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.stderr == "", r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


# -- Python ---------------------------------------------------------------------------------

PY_DOCS = """
import json
input_data = cronium.input()
user_id = input_data.get('user_id', 'unknown')
n = int(cronium.getVariable('COUNTER') or '0') + 1
cronium.setVariable('COUNTER', str(n))
before = cronium.getCondition()
cronium.setCondition(True)
event = cronium.event()
result = {'user': user_id, 'n': n, 'before': before, 'after': cronium.getCondition(),
          'event': [event.get('id'), event.get('name'), event.get('type'), event.get('runLocation'),
                    event.get('successCount', 0)]}
cronium.output(result)
print(json.dumps(result))
"""


def test_python_docs_pattern_with_no_import(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-python"]
    base = counter(rt, fresh("py-docs"))
    first = lines_of(img.run(["python3", "-c", PY_DOCS], rt, CONTEXT["executionId"]))
    second = lines_of(img.run(["python3", "-c", PY_DOCS], rt, CONTEXT["executionId"]))
    ex = CONTEXT["executionId"]
    event = ["evt-docs", "Docs example", "SCRIPT", "LOCAL", 3]
    assert first[0] == {"user": "u-42", "n": base + 1, "before": first[0]["before"], "after": True, "event": event}
    assert first[0]["before"] in (None, True)
    assert second == [{"user": "u-42", "n": base + 2, "before": True, "after": True, "event": event}]
    assert rt.state(ex, "/output") == (200, {"success": True, "data": second[0]})


def test_python_no_input_gives_an_empty_dict_and_script_files_work(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-python"]
    job = img.workdir / "job.py"
    job.write_text(PY_DOCS)
    out = lines_of(img.run(["python3", str(job)], rt, fresh("py")))
    assert out[0]["user"] == "unknown"
    assert out[0]["event"] == [None, None, None, None, 0]


def test_python_original_entry_points(images: Dict[str, Image], rt: Rt) -> None:
    script = """
import json
from cronium import cronium as c
from cronium import Cronium
c.setVariable('PY_ORIG', 'x')
d = Cronium().input()
print(json.dumps([c.getVariable('PY_ORIG'), d.get('user_id', 'unknown'), cronium.input() == {}]))
"""
    assert lines_of(images["runner-python"].run(["python3", "-c", script], rt, fresh("pyorig"))) == [
        ["x", "unknown", True]]


def test_python_builtin_costs_nothing_until_used(images: Dict[str, Image], rt: Rt) -> None:
    r = images["runner-python"].run(
        ["python3", "-c", "import sys, builtins; print('cronium' in sys.modules, 'cronium' in vars(builtins))"],
        rt, fresh("pylazy"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "False True\n"


# -- Node.js --------------------------------------------------------------------------------

NODE_DOCS = """
const inputData = cronium.input();
const userId = inputData.user_id || 'unknown';
const n = parseInt(cronium.getVariable('COUNTER') || '0') + 1;
cronium.setVariable('COUNTER', String(n));
let before = 'unset';
if (cronium.getCondition()) { before = 'true'; } else { before = 'false'; }
cronium.setCondition(true);
const event = cronium.event();
const result = { user: userId, n, before, after: cronium.getCondition(), event: event.name };
cronium.output(result);
console.log(JSON.stringify(result));
"""


def test_node_docs_pattern_synchronous_with_no_require(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-node"]
    ex = fresh("node")
    base = counter(rt, ex)
    first = lines_of(img.run(["node", "-e", NODE_DOCS], rt, ex))
    second = lines_of(img.run(["node", "-e", NODE_DOCS], rt, ex))
    # A fresh execution: no input, no event and no condition yet, so the docs' fallbacks apply.
    assert first == [{"user": "unknown", "n": base + 1, "before": "false", "after": True}]
    assert second == [{"user": "unknown", "n": base + 2, "before": "true", "after": True}]
    assert rt.state(ex, "/output") == (200, {"success": True, "data": second[0]})


def test_node_docs_pattern_in_cjs_and_esm_files(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-node"]
    for name in ("job.js", "job.mjs"):
        (img.workdir / name).write_text(NODE_DOCS)
        out = lines_of(img.run(["node", str(img.workdir / name)], rt, CONTEXT["executionId"]))
        assert out[0]["user"] == "u-42" and out[0]["event"] == "Docs example", (name, out)


def test_node_original_and_explicit_entry_points(images: Dict[str, Image], rt: Rt) -> None:
    script = """
(async () => {
  const Cronium = require('cronium');
  const c = new Cronium();
  await c.setVariable('NODE_ORIG', 'a');
  const viaSingleton = await require('cronium').cronium.getVariable('NODE_ORIG');
  const viaModule = await require('cronium').input();
  const sync = require('cronium/sync');
  const esm = await import('cronium');
  console.log(JSON.stringify([viaSingleton, viaModule, sync.getVariable('NODE_ORIG'),
    typeof esm.input, cronium.input()]));
})();
"""
    assert lines_of(images["runner-node"].run(["node", "-e", script], rt, fresh("nodeorig"))) == [
        ["a", {}, "a", "function", {}]]


# -- bash -----------------------------------------------------------------------------------

BASH_DOCS = r"""
set -euo pipefail
input=$(cronium_input)
user=$(jq -r '.user_id // "unknown"' <<<"$input")
n=$(( $(cronium_getVariable COUNTER || true) + 1 ))
cronium_setVariable COUNTER "$n"
before=$(cronium_getCondition)
cronium_setCondition true
name=$(cronium_event | jq -r '.name // "none"')
result=$(jq -nc --arg u "$user" --argjson n "$n" --arg b "$before" --arg e "$name" \
  --argjson a "$(cronium_getCondition)" '{user: $u, n: $n, before: $b, after: $a, event: $e}')
cronium_output "$result"
echo "$result"
"""

BASH_DOTTED = r"""
set -euo pipefail
input=$(cronium.input)
v=$(cronium.getVariable DOTTED || true)
cronium.setVariable DOTTED "${v}x"
name=$(cronium.event | jq -r '.name // "none"')
cronium.output "{\"dotted\": true}"
jq -nc --argjson i "$input" --arg v "$(cronium.getVariable DOTTED)" --arg e "$name" \
  --arg api "$CRONIUM_API" --arg id "$CRONIUM_EXEC_ID" --arg tok "${CRONIUM_TOKEN:+set}" \
  '{input: $i, v: $v, event: $e, api: $api, id: $id, tok: $tok}'
cronium_info >&2
"""


def test_bash_docs_pattern_with_no_source(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-bash"]
    ex = CONTEXT["executionId"]
    base = counter(rt, ex)
    first = lines_of(img.run(["bash", "-c", BASH_DOCS], rt, ex))
    assert first[0]["user"] == "u-42" and first[0]["event"] == "Docs example"
    assert first[0]["n"] == base + 1 and first[0]["after"] is True
    no_input = lines_of(img.run(["bash", "-c", BASH_DOCS], rt, fresh("bash")))
    assert no_input[0]["user"] == "unknown" and no_input[0]["event"] == "none"
    assert no_input[0]["before"] == "null"


def test_bash_dotted_names_and_the_original_variables(images: Dict[str, Image], rt: Rt) -> None:
    img = images["runner-bash"]
    ex = fresh("dotted")
    r = img.run(["bash", "-c", BASH_DOTTED], rt, ex)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out == {"input": {}, "v": "x", "event": "none", "api": rt.url, "id": ex, "tok": "set"}
    assert r.stderr.startswith("Cronium Bash SDK v")
    assert rt.state(ex, "/output") == (200, {"success": True, "data": {"dotted": True}})


def test_the_replayed_environment_is_only_the_images(images: Dict[str, Image], rt: Rt) -> None:
    # The control: the same replay without the image's ENV lines (BASH_ENV, NODE_OPTIONS) and
    # without the .pth line has no `cronium`, so the tests above depend on the images' setup.
    for name, argv in (("runner-bash", ["bash", "-c", "cronium.input"]),
                       ("runner-node", ["node", "-e", "cronium.input()"])):
        img = images[name]
        saved, img.env = img.env, {}
        try:
            r = img.run(argv, rt, fresh("ctl"))
        finally:
            img.env = saved
        assert r.returncode != 0, (name, r.stdout, r.stderr)
    r = subprocess.run([PYTHON, "-c", "cronium.input()"], capture_output=True, text=True, timeout=30,
                       env={"PATH": BASE_PATH}, cwd=images["runner-python"].workdir)
    assert r.returncode != 0 and "NameError" in r.stderr
    env = images["runner-node"].environment(rt, "x")
    assert set(env) == {"PATH", "HOME", "NODE_OPTIONS", "CRONIUM_RUNTIME_API", "CRONIUM_EXECUTION_ID",
                        "CRONIUM_EXECUTION_TOKEN"}
