"""The shared helper scenario: bash, Python and Node.js do the same ten operations.

Each of scenario.sh, scenario.py and scenario.mjs runs the same operations through its
language's helper (never raw HTTP) and prints one canonical line per operation,
``op=<name> result=<compact JSON, keys sorted>``. This file starts the real
cronium-runtime binary in dev mode, runs each script against it with the helper loaded
the way a job loads it, and checks that

* each script exits 0 with nothing on stderr;
* each script prints exactly the expected lines (every one of them, in order);
* the three outputs are identical, byte for byte;
* the runtime holds what the script left behind (read with plain HTTP, not a helper).

Dev mode seeds exactly one execution with an input and an event (the one in the
``--dev-context`` file); an execution id it has never seen gets no input and no event
(service-spec.md, "Dev mode"). So that every language reads the same input and event and
still has its own execution id and its own user (no shared variables, output or
condition), each language gets its own runtime process, seeded from context.json with
``executionId`` and ``userId`` replaced by that language's own.

Run from the repository root:  /usr/bin/python3 -m pytest tests/scenario
The binary is $CRONIUM_RUNTIME_BIN (default build/cronium-runtime); without it the tests
fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from lib.proc import REPO, Service  # tests/lib, on sys.path through tests/conftest.py

HERE = Path(__file__).resolve().parent

CONTEXT_FILE = HERE / "context.json"

BASH_HELPER = REPO / "helpers" / "bash" / "cronium.sh"
PYTHON_HELPER = REPO / "helpers" / "python"
NODE_HELPER = REPO / "helpers" / "node"

LANGS = ("bash", "python", "node")
SCRIPT_TIMEOUT = 60.0  # seconds for one scenario script

# The expected canonical output. Every value comes from what the scenario chose:
# the input and the event of context.json, the PROFILE value and TOOL_PARAMS written in
# each script, a counter that starts missing and is incremented by 1, 2 and 0.5, a
# condition that is unset, then true, then false, and an output made from the counter.
EXPECTED_LINES = [
    'op=input result={"dryRun":false,"limit":0,"note":"","recipients":["ops@example.com","zoë@example.com"],'
    '"report":"daily","window":{"from":"2024-01-01","to":null}}',
    'op=event result={"event":{"id":"event-42","name":"Nightly report ☾","tags":["nightly",""],'
    '"type":"SCHEDULED"},"eventName":"Nightly report ☾"}',
    "op=set_variable result=null",
    'op=get_variable result={"big":9007199254740991,"empty":"","emptyList":[],"emptyObject":{},'
    '"false":false,"lines":"one\\ntwo\\tthree","name":"Zoë Ünïcødé 日本語 😀","negative":-7,'
    '"nested":{"list":[0,false,"",null,{"deep":[1,2.5,-3]}],"ключ":"значение"},"nothing":null,'
    '"quote":"say \\"hi\\" \\\\ bye","zero":0}',
    'op=variable_exists result={"missing":false,"present":true}',
    "op=increment_variable result=[1,3,3.5]",
    'op=delete_variable result={"deleted":true,"exists":false,"value":null}',
    'op=condition result={"afterFalse":false,"afterTrue":true,"before":null}',
    'op=output result={"counter":3.5,"note":"fini 🎉","ok":true,"warnings":[],"zero":0}',
    'op=tool_action result={"data":{"action":"send_message","params":{"channel":"#ops","count":0,'
    '"silent":false,"text":"Zoë: report ✓"},"tool":"slack"},"metadata":{"dev":true},"success":true}',
]
EXPECTED_OPS = [line.split(" ", 1)[0][len("op="):] for line in EXPECTED_LINES]


# -- the runtime --------------------------------------------------------------------


def http(method: str, url: str, token: Optional[str] = None, timeout: float = 5.0) -> Tuple[int, Any]:
    """One plain HTTP request to the runtime: (status, parsed JSON body or None)."""
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, (json.loads(raw) if raw.strip() else None)


class Runtime(Service):
    """cronium-runtime --dev on a free 127.0.0.1 port, seeded with one context, in the
    environment a job's container gives it (only PATH and the sanitizer options)."""

    def __init__(self, workdir: Path, context: Dict[str, Any]) -> None:
        ctx_path = workdir / "dev-context.json"
        ctx_path.write_text(json.dumps(context, ensure_ascii=False), encoding="utf-8")
        super().__init__(workdir, {"JWT_SECRET": secrets.token_hex(32)},
                         args=["--dev", "--dev-context", str(ctx_path)], name="runtime", inherit=False)

    @property
    def url(self) -> str:
        return self.base_url

    def logs(self) -> str:
        return self.stderr() + self.stdout()


# -- the scenario runs ---------------------------------------------------------------


class Run:
    def __init__(self, lang: str, execution_id: str, user_id: str) -> None:
        self.lang = lang
        self.execution_id = execution_id
        self.user_id = user_id
        self.returncode: Optional[int] = None
        self.stdout = b""
        self.stderr = b""
        self.state: Dict[str, Tuple[int, Any]] = {}
        self.runtime_logs = ""
        self.runtime_exit: Optional[int] = None

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8")

    @property
    def lines(self) -> List[str]:
        return self.text.splitlines()

    def describe(self) -> str:
        return (
            f"{self.lang} scenario (execution {self.execution_id}, user {self.user_id}): "
            f"exit {self.returncode}\n--- stdout\n{self.stdout.decode('utf-8', 'replace')}"
            f"--- stderr\n{self.stderr.decode('utf-8', 'replace')}"
        )


def script_command(lang: str, workdir: Path) -> Tuple[List[str], Dict[str, str]]:
    """The command and the extra environment that load the helper the way a job does."""
    if lang == "bash":
        # BASH_ENV: the runner image preloads the helper into every non-interactive bash.
        return ["bash", str(HERE / "scenario.sh")], {"BASH_ENV": str(BASH_HELPER)}
    if lang == "python":
        # PYTHONPATH stands in for the pip install of the runner image.
        return [sys.executable, str(HERE / "scenario.py")], {"PYTHONPATH": str(PYTHON_HELPER)}
    if lang == "node":
        # An ES module resolves a bare "cronium" through node_modules folders next to the
        # importing file and above it (NODE_PATH is ignored by import): the runner image
        # has /node_modules/cronium; here a copy of the script sits next to a
        # node_modules/cronium link to helpers/node.
        run_dir = workdir / "node-job"
        (run_dir / "node_modules").mkdir(parents=True)
        (run_dir / "node_modules" / "cronium").symlink_to(NODE_HELPER, target_is_directory=True)
        shutil.copyfile(HERE / "scenario.mjs", run_dir / "scenario.mjs")
        return ["node", str(run_dir / "scenario.mjs")], {}
    raise AssertionError(lang)


def run_scenario(lang: str, workdir: Path, base_context: Dict[str, Any]) -> Run:
    run = Run(lang, f"scenario-{lang}-{secrets.token_hex(4)}", f"user-{lang}-{secrets.token_hex(4)}")
    context = dict(base_context, executionId=run.execution_id, userId=run.user_id)
    runtime = Runtime(workdir, context)
    try:
        runtime.start()
        token = runtime.token(run.execution_id, run.user_id)
        cmd, extra = script_command(lang, workdir)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "CRONIUM_RUNTIME_API": runtime.url,
            "CRONIUM_EXECUTION_ID": run.execution_id,
            "CRONIUM_EXECUTION_TOKEN": token,
            **extra,
        }
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=str(workdir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SCRIPT_TIMEOUT,
        )
        run.returncode, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr

        # What the run left in the runtime, read with plain HTTP.
        base = f"{runtime.url}/executions/{run.execution_id}"
        for name, path in (
            ("counter", "/variables/counter"),
            ("profile", "/variables/profile"),
            ("condition", "/condition"),
            ("output", "/output"),
        ):
            run.state[name] = http("GET", base + path, token)
    finally:
        runtime.close()  # the checks below look at its exit code and log themselves
        run.runtime_exit = None if runtime.proc is None else runtime.returncode
        run.runtime_logs = runtime.logs()
    return run


@pytest.fixture(scope="module")
def base_context() -> Dict[str, Any]:
    return json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, base_context: Dict[str, Any]) -> Iterator[Dict[str, Run]]:
    results = {}
    for lang in LANGS:
        results[lang] = run_scenario(lang, tmp_path_factory.mktemp(f"scenario-{lang}"), base_context)
    yield results


# -- the checks ------------------------------------------------------------------------


def test_expected_lines_match_the_context_file(base_context: Dict[str, Any]) -> None:
    # The input and event lines above must be those of context.json (keeps the two in step).
    canon = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # noqa: E731
    assert EXPECTED_LINES[0] == "op=input result=" + canon(base_context["metadata"]["input"])
    event = base_context["event"]
    assert EXPECTED_LINES[1] == "op=event result=" + canon({"event": event, "eventName": event["name"]})
    assert len(EXPECTED_LINES) == 10 and len(set(EXPECTED_OPS)) == 10


@pytest.mark.parametrize("lang", LANGS)
def test_script_succeeds_quietly(runs: Dict[str, Run], lang: str) -> None:
    run = runs[lang]
    assert run.returncode == 0, run.describe() + "\n--- runtime log\n" + run.runtime_logs[-4000:]
    assert run.stderr == b"", run.describe()


@pytest.mark.parametrize("lang", LANGS)
def test_every_operation_line_is_present(runs: Dict[str, Run], lang: str) -> None:
    lines = runs[lang].lines
    for expected in EXPECTED_LINES:
        assert expected in lines, f"{lang}: missing line\n  {expected}\n{runs[lang].describe()}"
    ops = [line.split(" ", 1)[0] for line in lines]
    assert ops == [f"op={op}" for op in EXPECTED_OPS], runs[lang].describe()


@pytest.mark.parametrize("lang", LANGS)
def test_output_is_exactly_the_expected_lines(runs: Dict[str, Run], lang: str) -> None:
    expected = ("\n".join(EXPECTED_LINES) + "\n").encode("utf-8")
    assert runs[lang].stdout == expected, runs[lang].describe()


def test_three_outputs_are_identical(runs: Dict[str, Run]) -> None:
    bash, python, node = (runs[lang].stdout for lang in LANGS)
    assert bash, "the bash scenario printed nothing"
    assert bash == python, "bash and Python differ:\n" + runs["bash"].describe() + runs["python"].describe()
    assert python == node, "Python and Node differ:\n" + runs["python"].describe() + runs["node"].describe()


@pytest.mark.parametrize("lang", LANGS)
def test_runtime_state_after_the_run(runs: Dict[str, Run], lang: str) -> None:
    state = runs[lang].state
    assert state["counter"] == (200, {"success": True, "data": {"key": "counter", "value": 3.5}})
    status, body = state["profile"]
    assert status == 404 and body["code"] == "variable_not_found", state["profile"]
    assert state["condition"] == (200, {"success": True, "data": {"condition": False}})
    assert state["output"] == (
        200,
        {
            "success": True,
            "data": {"counter": 3.5, "note": "fini 🎉", "ok": True, "warnings": [], "zero": 0},
        },
    )


@pytest.mark.parametrize("lang", LANGS)
def test_runtime_served_the_run_cleanly(runs: Dict[str, Run], lang: str) -> None:
    # A sanitizer build (the CI's) reports memory errors in its log; the runtime stops
    # with status 0 on SIGTERM.
    logs = runs[lang].runtime_logs
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in logs, logs[-4000:]
    assert runs[lang].runtime_exit == 0, f"runtime exit status {runs[lang].runtime_exit}\n{logs[-4000:]}"


def test_each_run_had_its_own_execution_and_user(runs: Dict[str, Run]) -> None:
    assert len({runs[lang].execution_id for lang in LANGS}) == 3
    assert len({runs[lang].user_id for lang in LANGS}) == 3
