"""The helpers against a production-mode runtime whose backend is the real one (the
backend fake's default: no DELETE on variables, no tools/execute route).

For each language (bash, Python, Node.js), one small job script loads the helper the way
a job does and calls delete-variable and a tool action: both must fail with the runtime's
501 not_supported (Python: CroniumAPIError status_code 501, code not_supported; Node:
CroniumAPIError statusCode 501, code not_supported; bash: a non-zero exit status and the
error line `cronium: 501 not_supported: ...` on stderr), each after exactly one call to
the backend (a 501 is final: no retry), and the variable survives.

Run from the repository root:  /usr/bin/python3 -m pytest tests/scenario
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.proc import REPO
from production._support import Stack

BASH_HELPER = REPO / "helpers" / "bash" / "cronium.sh"
PYTHON_HELPER = REPO / "helpers" / "python"
NODE_HELPER = REPO / "helpers" / "node"
TIMEOUT = 60.0

PY_JOB = r'''
import json, cronium
out = {}
for name, call in (("delete", lambda: cronium.delete_variable("keep")),
                   ("tool", lambda: cronium.execute_tool_action("slack", "send", {"text": "hi"}))):
    try:
        call()
        out[name] = {"raised": None}
    except cronium.CroniumAPIError as e:
        out[name] = {"raised": type(e).__name__, "status": e.status_code, "code": e.code, "message": str(e)}
out["value"] = cronium.get_variable("keep")
print(json.dumps(out, sort_keys=True))
'''

NODE_JOB = r'''
import * as cronium from 'cronium';
const out = {};
for (const [name, call] of [['delete', () => cronium.deleteVariable('keep')],
                            ['tool', () => cronium.executeToolAction('slack', 'send', { text: 'hi' })]]) {
  try {
    await call();
    out[name] = { raised: null };
  } catch (e) {
    out[name] = { raised: e instanceof cronium.CroniumAPIError ? 'CroniumAPIError' : String(e),
                  status: e.statusCode, code: e.code, message: e.message };
  }
}
out.value = await cronium.getVariable('keep');
console.log(JSON.stringify(out));
'''

BASH_JOB = r'''
cronium_delete_variable keep 2>del.err; del=$?
cronium_execute_tool_action slack send '{"text":"hi"}' >/dev/null 2>tool.err; tool=$?
value=$(cronium_get_variable keep)
printf '{"delete":{"rc":%d,"stderr":%s},"tool":{"rc":%d,"stderr":%s},"value":%s}\n' \
  "$del" "$(jq -Rs . <del.err)" "$tool" "$(jq -Rs . <tool.err)" "$(printf '%s' "$value" | jq -Rs .)"
'''


def _command(lang: str, workdir: Path):
    if lang == "python":
        script = workdir / "job.py"
        script.write_text(PY_JOB)
        return [sys.executable, str(script)], {"PYTHONPATH": str(PYTHON_HELPER)}
    if lang == "node":
        run_dir = workdir / "node-job"
        (run_dir / "node_modules").mkdir(parents=True)
        (run_dir / "node_modules" / "cronium").symlink_to(NODE_HELPER, target_is_directory=True)
        (run_dir / "job.mjs").write_text(NODE_JOB)
        return ["node", str(run_dir / "job.mjs")], {}
    script = workdir / "job.sh"
    script.write_text(BASH_JOB)
    return ["bash", str(script)], {"BASH_ENV": str(BASH_HELPER)}


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("real-backend"))
    try:
        st.start()
        assert (st.fb.delete_mode, st.fb.tools_route) == (405, False)   # the real backend
        yield st
    finally:
        problems = st.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.mark.parametrize("lang", ["bash", "python", "node"])
def test_helper_reports_501_not_supported_for_delete_and_tool_actions(prod, lang, tmp_path):
    eid, uid, _ = prod.execution()
    prod.fb.seed_variable(uid, "keep", "still here")
    cmd, extra = _command(lang, tmp_path)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
           "CRONIUM_RUNTIME_API": f"http://127.0.0.1:{prod.port}",
           "CRONIUM_EXECUTION_ID": eid, "CRONIUM_EXECUTION_TOKEN": prod.token(eid, uid), **extra}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT)
    report = f"exit {proc.returncode}\n--- stdout\n{proc.stdout.decode()}\n--- stderr\n{proc.stderr.decode()}"
    assert proc.returncode == 0, report
    out = json.loads(proc.stdout)
    for op, word in (("delete", "delet"), ("tool", "tool")):
        got = out[op]
        if lang == "bash":
            assert got["rc"] != 0, (op, report)
            assert re.match(r"^cronium: 501 not_supported: .*backend does not (offer|support)", got["stderr"]), \
                (op, report)
            assert word in got["stderr"].lower(), (op, report)
        else:
            assert got["raised"] == "CroniumAPIError", (op, report)
            assert (got["status"], got["code"]) == (501, "not_supported"), (op, report)
            assert word in got["message"].lower(), (op, report)
    assert out["value"] == "still here", report
    # a 501 is final: one backend call each, no retry by the runtime or the helper
    assert prod.fb.count(f"/api/internal/variables/{uid}/keep", "DELETE") == 1, prod.fb.counts()
    calls = [r for r in prod.fb.requests_to("/api/internal/tools/execute", "POST") if r.json().get("userId") == uid]
    assert [r.status for r in calls] == [404], [r.status for r in calls]
    assert prod.fb.variable(uid, "keep") == "still here"
