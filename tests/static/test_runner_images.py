"""The runner images' helper installs, replayed on this machine.

No Docker engine here, so each runner Dockerfile's COPY, ENV, WORKDIR and pip
install steps are applied under a temporary root directory (absolute paths
rewritten into it), and then:
  * the image's own HEALTHCHECK command must pass with no job settings at all;
  * without the install (the control), the same command must fail;
  * a job script, written as a user would, reaches a dev-mode service through
    the helper with no configuration beyond the CRONIUM_* variables.
Same interpreters as the images: Debian bookworm's bash, Python 3.11, Node 20.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from . import _dockerfile as df
from .conftest import REPO, clean_env

CONTAINERS = REPO / "containers"


class Replay:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.env = {}
        self.workdir = root
        self.stage = df.stages(df.parse((CONTAINERS / name / "Dockerfile").read_text()))[-1]
        self.healthcheck = self.stage.last("HEALTHCHECK").exec_form

    def path(self, abs_path):
        return self.root / abs_path.lstrip("/")

    def rewrite(self, value):
        # Every absolute path in the value that the replay installed, also inside a
        # longer value such as NODE_OPTIONS="--require /node_modules/cronium/global.js".
        def one(word):
            return str(self.path(word)) if word.startswith("/") and self.path(word).exists() else word
        return " ".join(one(word) for word in value.split(" "))

    def apply(self):
        for ins in self.stage.instructions:
            if ins.keyword == "COPY":
                ops = df.copy_operands(ins)
                srcs, dest = ops[:-1], ops[-1]
                into_dir = dest.endswith("/") or len(srcs) > 1
                for src in srcs:
                    s = REPO / src
                    d = self.path(dest) / s.name if into_dir else self.path(dest)
                    d.parent.mkdir(parents=True, exist_ok=True)
                    if s.is_dir():
                        shutil.copytree(s, d, ignore=shutil.ignore_patterns(
                            "__pycache__", "build", "*.egg-info", ".mypy_cache", "tests"))
                    else:
                        shutil.copy2(s, d)
            elif ins.keyword == "ENV":
                for k, v in df.env_pairs(ins).items():
                    self.env[k] = self.rewrite(v)
            elif ins.keyword == "WORKDIR":
                self.workdir = self.path(ins.rest)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "RUN":
                for cmd in df.run_commands(ins):
                    if " pip install " in f" {cmd} ":
                        self._pip(cmd)
        return self

    def _pip(self, cmd):
        words = cmd.split()
        args = words[words.index("install") + 1:]
        site = self.root / "site-packages"
        argv = [sys.executable, "-m", "pip", "install", "--target", str(site)]
        argv += [self.rewrite(a) if a.startswith("/") else a for a in args]
        env = clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout}\n{r.stderr}"
        self.env["PYTHONPATH"] = str(site)   # stands in for the image's site-packages

    def run(self, argv, env=None, cwd=None):
        exe = {"python3": sys.executable}.get(argv[0], argv[0])
        full_env = clean_env({**self.env, **(env or {})})
        full_env.pop("NODE_PATH", None)
        return subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60,
                              env=full_env, cwd=cwd or self.workdir)


@pytest.fixture
def replay(tmp_path):
    return lambda name: Replay(name, tmp_path / name).apply()


@pytest.mark.parametrize("name", ["runner-bash", "runner-python", "runner-node"])
def test_healthcheck_passes_without_job_settings(replay, name):
    img = replay(name)
    r = img.run(img.healthcheck)
    assert r.returncode == 0, f"{img.healthcheck}\n{r.stdout}\n{r.stderr}"
    assert r.stdout == "" and r.stderr == "", "loading a helper prints nothing"


@pytest.mark.parametrize("name", ["runner-bash", "runner-python", "runner-node"])
def test_healthcheck_fails_without_the_install(replay, tmp_path, name):
    img = replay(name)
    outside = tmp_path / "outside"
    outside.mkdir()
    no_install = {"BASH_ENV": None, "PYTHONPATH": None}
    r = img.run(img.healthcheck, env=no_install, cwd=outside)
    assert r.returncode != 0, "the health check must depend on the helper being installed"


def test_node_helper_resolves_for_require_and_import_from_any_directory(replay):
    img = replay("runner-node")
    deep = img.root / "srv" / "jobs" / "nightly"
    deep.mkdir(parents=True)
    (deep / "job.cjs").write_text("const c = require('cronium'); console.log(typeof c.getVariable);\n")
    (deep / "job.mjs").write_text("import cronium, { getVariable } from 'cronium';\n"
                                  "console.log(typeof getVariable, typeof cronium.input);\n")
    for script, expect in (("job.cjs", "function"), ("job.mjs", "function function")):
        r = img.run(["node", str(deep / script)], cwd=img.root)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == expect
    # NODE_PATH would not have done it for ESM: the same import from outside the root fails.
    elsewhere = img.root.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(deep / "job.mjs", elsewhere / "job.mjs")
    r = img.run(["node", str(elsewhere / "job.mjs")],
                env={"NODE_PATH": str(img.root / "node_modules")}, cwd=elsewhere)
    assert r.returncode != 0 and "cronium" in r.stderr


# ---- a job script in each runner, against a dev-mode service ----------------------------------

JOBS = {
    "runner-bash": ["bash", "-c", "cronium_input"],
    "runner-python": ["python3", "-c", "import cronium, json; print(json.dumps(cronium.input()))"],
    "runner-node": ["node", "--input-type=module", "-e",
                    "import { input } from 'cronium'; console.log(JSON.stringify(await input()));"],
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_a_job_reads_its_input_through_the_helper(replay, start_service, tmp_path, name):
    job_input = {"runner": name, "n": os.getpid(), "nested": {"ok": True, "list": [0, "", None]}}
    ctx = tmp_path / "context.json"
    ctx.write_text(json.dumps({"executionId": f"exec-{name}", "jobId": "j", "userId": "u",
                               "metadata": {"input": job_input}, "event": None, "user": None}))
    svc = start_service(args=["--dev-context", str(ctx)])
    assert svc.exports["CRONIUM_EXECUTION_ID"] == f"exec-{name}"
    img = replay(name)
    r = img.run(JOBS[name], env=svc.exports)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert json.loads(r.stdout) == job_input
