"""Every Dockerfile under containers/ parses, passes two linters from the npm
registry (dockerfile-utils, the linter behind VS Code's Docker support, and
dockerfilelint), follows the project's image rules, and copies only files that
exist in the repository and are sent in the build context."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from . import _dockerfile as df
from lib.proc import require_binary

from .conftest import REPO

CONTAINERS = REPO / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*/Dockerfile"))
IDS = [p.parent.name for p in DOCKERFILES]
RUNNERS = ["runner-bash", "runner-python", "runner-node"]


def load(name):
    path = CONTAINERS / name / "Dockerfile"
    return df.stages(df.parse(path.read_text()))


def test_the_expected_images_exist():
    assert set(IDS) == {"runtime-api", *RUNNERS}


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_dockerfile_parses(path):
    stages = df.stages(df.parse(path.read_text()))
    assert stages, "no FROM"
    names = [s.name for s in stages if s.name]
    assert len(names) == len(set(names)), f"duplicate stage names {names}"


def test_parser_rejects_what_a_build_would_reject():
    bad = {
        "FROM debian:bookworm-slim\nFOO bar\n": "unknown instruction",
        "FROM debian:bookworm-slim\nUSER\n": "no arguments",
        "FROM debian:bookworm-slim\nCMD [\"a\", \n": "not valid JSON",
        "FROM debian:bookworm-slim\nRUN true \\\n": "runs off the end",
        "RUN true\n": "must be FROM",
        "FROM debian:bookworm-slim\nCOPY onlyone\n": "at least one source",
        "FROM debian:bookworm-slim\nHEALTHCHECK --interval=5s\n": "CMD <command> or NONE",
    }
    for text, why in bad.items():
        with pytest.raises(df.DockerfileError, match=re.escape(why)):
            df.parse(text)


# ---- linters from npm --------------------------------------------------------------------------

def _node(npm_tools, *args):
    return subprocess.run(["node", *args], capture_output=True, text=True, timeout=120)


def dockerfile_utils_lint(npm_tools, path):
    script = npm_tools / "dockerfile-utils" / "bin" / "dockerfile-utils"
    r = _node(npm_tools, str(script), "lint", "--json", str(path))
    problems = json.loads(r.stdout)
    assert r.returncode == (1 if problems else 0), r.stderr   # exits 1 when it found something
    return problems


def dockerfilelint(npm_tools, path):
    script = npm_tools / "dockerfilelint" / "bin" / "dockerfilelint"
    r = _node(npm_tools, str(script), "-o", "json", str(path))
    out = json.loads(r.stdout)
    return [i for f in out["files"] for i in f["issues"]]


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_dockerfile_utils_reports_nothing(npm_tools, path):
    problems = dockerfile_utils_lint(npm_tools, path)
    assert problems == [], json.dumps(problems, indent=1)


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_dockerfilelint_reports_nothing(npm_tools, path):
    issues = dockerfilelint(npm_tools, path)
    assert issues == [], json.dumps(issues, indent=1)


def test_the_linters_do_catch_mistakes(npm_tools, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nEXPOSE http\nRUN apt-get install curl\n"
                   "HEALTHCHECK --intervall=3s CMD [\"true\"]\n")
    assert len(dockerfile_utils_lint(npm_tools, bad)) >= 2
    titles = {i["title"] for i in dockerfilelint(npm_tools, bad)}
    assert "Invalid Port Exposed" in titles and "Missing parameter for `apt-get`" in titles


# ---- project rules, all images -----------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_base_images_are_pinned_to_a_release(path):
    for st in df.stages(df.parse(path.read_text())):
        if st.image in {s.name for s in df.stages(df.parse(path.read_text())) if s.name}:
            continue
        assert ":" in st.image and not st.image.endswith(":latest"), f"{st.image}: pin a tag"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_apt_usage_is_clean(path):
    for st in df.stages(df.parse(path.read_text())):
        for run in st.all("RUN"):
            installs = df.apt_installs(run)
            if not installs:
                continue
            cmds = df.run_commands(run)
            assert any(c.startswith("apt-get update") for c in cmds), f"line {run.line}: update in the same RUN"
            assert any("rm -rf /var/lib/apt/lists" in c for c in cmds), f"line {run.line}: drop the apt lists"
            for opts, pkgs in installs:
                assert "-y" in opts and "--no-install-recommends" in opts, f"line {run.line}: {opts}"
                assert pkgs, f"line {run.line}: nothing installed"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_final_stage_runs_unprivileged_with_exec_forms(path):
    final = df.stages(df.parse(path.read_text()))[-1]
    user = final.last("USER")
    assert user is not None, "the final stage must set USER"
    uid = user.rest.split(":")[0]
    if final.image.startswith("node:"):
        assert uid in {"node", "1000"}, user.rest      # the node image's user is UID 1000
    else:
        assert uid == "1000", user.rest
    hc = final.last("HEALTHCHECK")
    assert hc is not None and hc.exec_form, "HEALTHCHECK CMD must use the exec form"
    for kw in ("CMD", "ENTRYPOINT"):
        for ins in final.all(kw):
            assert ins.exec_form, f"{kw} on line {ins.line} must use the exec form"
    assert not [i for i in final.instructions if i.keyword == "ADD"], "use COPY, not ADD"
    # The USER comes after the last RUN: nothing at run time happens as root.
    runs = final.all("RUN")
    assert not runs or runs[-1].line < user.line


# ---- COPY sources and the build context -----------------------------------------------------

def _git_ignored(rel):
    r = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", rel],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def _files_under(path):
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_and_are_in_the_build_context(path):
    """The build context is the repository root (see each Dockerfile's header and
    compose.yaml); <Dockerfile>.dockerignore must let every source through."""
    ignore_file = path.with_name("Dockerfile.dockerignore")
    assert ignore_file.is_file(), "each image filters its context with Dockerfile.dockerignore"
    ignore = df.DockerIgnore(ignore_file.read_text())
    sts = df.stages(df.parse(path.read_text()))
    names = set()
    checked = 0
    for st in sts:
        for ins in st.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            ops = df.copy_operands(ins)
            if "from" in ins.flags:
                assert ins.flags["from"] in names, f"line {ins.line}: --from={ins.flags['from']} is no earlier stage"
                continue
            for src in ops[:-1]:
                assert not re.match(r"^[a-z]+://", src), f"line {ins.line}: no remote sources"
                local = REPO / src
                assert local.exists(), f"line {ins.line}: {src} does not exist in the repository"
                assert not _git_ignored(src), f"line {ins.line}: {src} is gitignored (missing in a clone)"
                assert not ignore.excluded(src), f"line {ins.line}: {src} is excluded by {ignore_file.name}"
                sent = [f for f in _files_under(local)
                        if not ignore.excluded(str(f.relative_to(REPO)))
                        and not _git_ignored(str(f.relative_to(REPO)))]
                assert sent, f"line {ins.line}: nothing of {src} reaches the build"
                checked += 1
        if st.name:
            names.add(st.name)
    assert checked > 0


def test_dockerignore_matcher_follows_docker_rules():
    ig = df.DockerIgnore("*\n!src/\n!helpers/python/\nhelpers/python/**/*.egg-info\n")
    assert ig.excluded("build/cronium-runtime")
    assert ig.excluded("README.md")
    assert not ig.excluded("src/app.c")
    assert not ig.excluded("helpers/python/cronium/__init__.py")
    assert ig.excluded("helpers/python/x/cronium.egg-info/PKG-INFO")
    assert ig.excluded("helpers/node/index.js")


# ---- the runtime image --------------------------------------------------------------------------

BUILD_DEPS = {"build-essential", "meson", "ninja-build", "pkg-config", "libuv1-dev", "libhiredis-dev",
              "libcurl4-openssl-dev", "libssl-dev", "libjansson-dev", "libyaml-dev", "node-llhttp"}
RUNTIME_LIBS = {"libuv1", "libhiredis0.14", "libcurl4", "libssl3", "libjansson4", "libyaml-0-2",
                "ca-certificates"}


def _packages(stage):
    return {p for run in stage.all("RUN") for _opts, pkgs in df.apt_installs(run) for p in pkgs}


def _env(stage):
    env = {}
    for ins in stage.all("ENV"):
        env.update(df.env_pairs(ins))
    return env


def test_runtime_image_is_multi_stage_with_the_right_packages():
    build, final = load("runtime-api")
    assert build.image == "debian:bookworm-slim" and build.name
    assert final.image == "debian:bookworm-slim"
    assert _packages(build) == BUILD_DEPS
    assert _packages(final) == RUNTIME_LIBS
    assert not {"curl", "wget", "busybox"} & _packages(final)
    runs = " ".join(r.rest for r in build.all("RUN"))
    assert "meson setup build --buildtype=release -Dtests=false" in runs
    assert "meson compile -C build" in runs


def test_runtime_build_stage_copies_everything_meson_reads():
    build, _ = load("runtime-api")
    copied = set()
    for ins in build.all("COPY"):
        copied.update(df.copy_operands(ins)[:-1])
    assert {"meson.build", "meson_options.txt", "src", "include", "subprojects"} <= copied
    top = (REPO / "meson.build").read_text()
    # subdir() calls outside the option-guarded blocks (tests, fuzz: off in the image) must be copied.
    unguarded = re.sub(r"if get_option\('(tests|fuzz)'\).*?endif", "", top, flags=re.S)
    for sub in re.findall(r"subdir\('([^']+)'\)", unguarded):
        assert sub in copied, f"meson.build reads {sub}/ but the build stage does not copy it"
    for f in re.findall(r"files\('([^']+)'", unguarded) + re.findall(r"executable\([^,]+,\s*'([^']+)'", top):
        assert f.split("/")[0] in copied, f"meson.build needs {f}"


def test_runtime_final_stage_contract():
    build, final = load("runtime-api")
    env = _env(final)
    assert final.last("USER").rest == "1000:1000"
    assert [e.rest for e in final.all("EXPOSE")] == ["8081"]
    assert final.last("STOPSIGNAL").rest == "SIGTERM"
    entry = final.last("ENTRYPOINT").exec_form
    assert entry and entry[0].startswith("/") and entry[0].endswith("/cronium-runtime")
    assert final.last("HEALTHCHECK").exec_form == [entry[0], "healthcheck"]
    assert env.get("TMPDIR") == "/tmp"
    assert not final.all("VOLUME"), "a VOLUME would be a writable area outside /tmp"
    copies = {df.copy_operands(c)[-1]: c for c in final.all("COPY")}
    binary = copies.get(entry[0])
    assert binary is not None and binary.flags.get("from") == build.name, "binary comes from the build stage"
    # The default config is where CONFIG_FILE points, so service and health check read it.
    assert env.get("CONFIG_FILE") in copies
    assert df.copy_operands(copies[env["CONFIG_FILE"]])[0] == "containers/runtime-api/config.yaml"


def test_runtime_image_ships_every_library_the_binary_links():
    """Each NEEDED entry of the built binary maps (dpkg -S) to a package the final
    stage installs, or to libc6 which the base image has."""
    binary = require_binary()
    r = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    assert needed
    _, final = load("runtime-api")
    installed = _packages(final) | {"libc6"}
    for lib in needed:
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.", lib):
            continue                      # sanitizer builds of the test suite only
        q = subprocess.run(["dpkg", "-S", "*/" + lib], capture_output=True, text=True, timeout=30)
        assert q.returncode == 0, f"no Debian package ships {lib}"
        owners = {line.split(":")[0] for line in q.stdout.splitlines() if ":" in line}
        assert owners & installed, f"{lib} comes from {owners}; the final stage installs none of them"


def test_runtime_config_yaml_is_accepted_by_the_binary():
    from lib.proc import run_cli
    cfg = str(CONTAINERS / "runtime-api" / "config.yaml")
    r = run_cli(["--config", cfg, "--print-config"], env={"BACKEND_URL": None, "JWT_SECRET": None})
    assert r.returncode == 0, r.stderr
    assert "# mode: dev" in r.stdout
    prod = run_cli(["--config", cfg, "--print-config"],
                   env={"BACKEND_URL": "http://backend:8080", "JWT_SECRET": "s" * 32,
                        "LOG_LEVEL": "debug", "PORT": "9000"})
    assert prod.returncode == 0, prod.stderr
    assert "# mode: production" in prod.stdout and "port: 9000" in prod.stdout
    assert "level: debug" in prod.stdout       # ${LOG_LEVEL:-info} and the env override
    assert "s" * 32 not in prod.stdout         # secrets are redacted
    # No secret is written in the shipped file.
    text = (CONTAINERS / "runtime-api" / "config.yaml").read_text()
    for key in ("jwtSecret:", "token:", "password:"):
        assert not re.search(rf"^\s*{key}", text, re.M), f"{key} must come from the environment"


# ---- runner images ----------------------------------------------------------------------------

def test_bash_runner_loads_the_helper_through_bash_env():
    (final,) = load("runner-bash")
    env = _env(final)
    assert env.get("BASH_ENV") == "/etc/cronium/cronium.sh"
    dests = {df.copy_operands(c)[-1]: df.copy_operands(c)[0] for c in final.all("COPY")}
    assert dests.get("/etc/cronium/cronium.sh") == "helpers/bash/cronium.sh"
    assert {"bash", "curl", "jq"} <= _packages(final)


def test_python_runner_pip_installs_the_helper_offline():
    (final,) = load("runner-python")
    assert final.image.startswith("python:3.11")   # carries setuptools + wheel for --no-build-isolation
    copies = {df.copy_operands(c)[0]: df.copy_operands(c)[-1] for c in final.all("COPY")}
    assert "helpers/python" in copies
    pip = [c for r in final.all("RUN") for c in df.run_commands(r) if " pip install " in f" {c} "]
    assert len(pip) == 1, pip
    words = pip[0].split()
    assert {"--no-build-isolation", "--no-index", "--no-deps"} <= set(words)
    assert copies["helpers/python"] in words


def test_node_runner_puts_the_package_on_every_resolution_path():
    (final,) = load("runner-node")
    assert final.image.startswith("node:")
    assert final.last("USER").rest == "node"
    pkg = json.loads((REPO / "helpers/node/package.json").read_text())
    needed = {pkg["main"].lstrip("./"), "package.json"}
    for cond in pkg["exports"]["."].values():
        needed.add(cond.lstrip("./"))
    copied = {}
    for c in final.all("COPY"):
        ops = df.copy_operands(c)
        for src in ops[:-1]:
            copied[Path(src).name] = ops[-1]
    for name in needed:
        assert copied.get(name) == "/node_modules/cronium/", f"{name} must be copied to /node_modules/cronium/"
