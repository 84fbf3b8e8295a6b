"""docs/api.md, the API description for people, says the same as docs/openapi.yaml,
the one for tools: the same endpoints (path and method, both ways), the same error
codes with the same statuses (both ways), the headers, and only settings that
`cronium-runtime --list-settings` knows. Each check is also run against a copy of
api.md with one line taken out, to show it would notice."""
import re

import pytest

from ._openapi import METHODS, Spec, load_spec
from .conftest import REPO, settings_table

API_DOC = REPO / "docs" / "api.md"


def api_text():
    assert API_DOC.is_file(), "docs/api.md is missing"
    return API_DOC.read_text()


def section(text, number):
    """The text of `## <number>.` up to the next `## ` heading."""
    m = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.M | re.S)
    assert m, f"api.md has no section '## {number}.'"
    return m.group(0)


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ---- what api.md says --------------------------------------------------------------------------

def doc_endpoints(text):
    """(METHOD, path) of every row of the endpoint tables of §4 ("GET, HEAD | `/health`")."""
    pairs = set()
    for line in section(text, 4).splitlines():
        if not line.startswith("|"):
            continue
        row = cells(line)
        if len(row) < 2:
            continue
        methods = [m.strip() for m in row[0].split(",")]
        if not all(re.fullmatch(r"GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH", m) for m in methods):
            continue
        path = re.fullmatch(r"`(/[^`]*)`", row[1])
        for m in methods:
            pairs.add((m, path.group(1) if path else row[1]))
    return pairs


def doc_errors(text):
    """{code: status} from the error table of §3; a code listed twice is an error."""
    out = {}
    for line in section(text, 3).splitlines():
        m = re.match(r"^\|\s*(\d{3})\s*\|([^|]*)\|\s*(.*)\|\s*$", line)
        if not m:
            continue
        codes = re.findall(r"`([a-z_]+)`", m.group(2))
        assert codes, f"error row without a code: {line}"
        assert len(m.group(3).strip()) > 10, f"say when it happens: {line}"
        for code in codes:
            assert code not in out, f"{code} is listed twice"
            out[code] = int(m.group(1))
    return out


def doc_settings(text):
    """Every `section.name` in backticks that looks like a setting."""
    sections = {y.split(".", 1)[0] for y, *_ in settings_table()}
    names = set(re.findall(r"`([a-z]+\.[A-Za-z]+)`", text))
    return {n for n in names if n.split(".", 1)[0] in sections}


# ---- what openapi.yaml says --------------------------------------------------------------------

def spec_endpoints():
    pairs = set()
    for path, item in load_spec()["paths"].items():
        for m in METHODS:
            if m in item and m != "options":
                pairs.add((m.upper(), path))
    return pairs


def _codes(spec, node):
    """The codes a response or schema narrows `code` to, through $ref, allOf,
    anyOf and oneOf; the base Error schema (every code) contributes none."""
    if not isinstance(node, dict):
        return set()
    if "$ref" in node:
        if node["$ref"] == "#/components/schemas/Error":
            return set()
        return _codes(spec, spec.pointer(node["$ref"]))
    found = set()
    if "content" in node:
        found |= _codes(spec, node["content"].get("application/json", {}).get("schema"))
    for key in ("allOf", "anyOf", "oneOf"):
        for member in node.get(key, []):
            found |= _codes(spec, member)
    code = node.get("properties", {}).get("code", {})
    if "const" in code:
        found.add(code["const"])
    found.update(code.get("enum", []))
    return found


def spec_errors():
    """(the ErrorCode enum, {code: statuses of the documented responses that carry it})."""
    spec = Spec()
    enum = spec.doc["components"]["schemas"]["ErrorCode"]["enum"]
    statuses = {}
    responses = [(int(status), resp) for item in spec.doc["paths"].values()
                 for m, op in item.items() if m in METHODS
                 for status, resp in op["responses"].items() if status.isdigit()]
    responses += [(404, {"$ref": "#/components/responses/RouteNotFound"}),
                  (405, {"$ref": "#/components/responses/MethodNotAllowed"}),
                  (431, {"$ref": "#/components/responses/HeadersTooLarge"})]
    for status, resp in responses:
        for code in _codes(spec, resp):
            statuses.setdefault(code, set()).add(status)
    return enum, statuses


# ---- the checks ----------------------------------------------------------------------------------

def endpoint_problems(text):
    doc = doc_endpoints(text)
    wanted = spec_endpoints()
    problems = []
    have = {(m, p) for m, p in doc if m != "OPTIONS"}
    if wanted - have:
        problems.append(f"in openapi.yaml, not in api.md: {sorted(wanted - have)}")
    if have - wanted:
        problems.append(f"in api.md, not in openapi.yaml: {sorted(have - wanted)}")
    if ("OPTIONS", "any") not in doc:
        problems.append("api.md: no 'OPTIONS | any' row")
    return problems


def error_problems(text):
    doc = doc_errors(text)
    enum, statuses = spec_errors()
    problems = []
    if set(enum) - set(doc):
        problems.append(f"ErrorCode values missing from api.md's table: {sorted(set(enum) - set(doc))}")
    if set(doc) - set(enum):
        problems.append(f"codes in api.md that ErrorCode lacks: {sorted(set(doc) - set(enum))}")
    for code, status in doc.items():
        if code in statuses and status not in statuses[code]:
            problems.append(f"{code}: api.md says {status}, openapi.yaml answers it with {sorted(statuses[code])}")
    return problems


def setting_problems(text):
    known = {y for y, *_ in settings_table()}
    envs = {e for _y, e, *_ in settings_table()}
    problems = [f"api.md names a setting the binary does not know: {n}"
                for n in sorted(doc_settings(text) - known)]
    # Upper-case names in backticks: a setting's env name, or a variable the helpers read.
    others = {"CRONIUM_RUNTIME_API", "CRONIUM_EXECUTION_ID", "CRONIUM_EXECUTION_TOKEN"}
    for name in set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", text)) - others:
        if name not in envs:
            problems.append(f"api.md names an environment variable the binary does not read: {name}")
    return problems


def test_every_endpoint_of_openapi_is_in_api_md_and_nothing_else():
    text = api_text()
    assert len(doc_endpoints(text)) >= 17
    assert not endpoint_problems(text)


def test_every_error_code_with_its_status_is_in_api_md_and_nothing_else():
    text = api_text()
    enum, statuses = spec_errors()
    assert len(enum) >= 20 and len(statuses) >= 18, (enum, statuses)
    assert statuses["backend_error"] == {502} and statuses["conflict"] == {409}, statuses
    assert not error_problems(text)


def test_settings_named_in_api_md_exist():
    text = api_text()
    assert len(doc_settings(text)) >= 10
    assert not setting_problems(text)


def test_headers_limits_and_the_value_caveat_are_described():
    text = api_text()
    for header in ("X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                   "Retry-After", "Allow", "Access-Control-Allow-Origin"):
        assert f"`{header}`" in text, header
    for needle in ("1 MiB", "8 KiB", "255 bytes", "`.`", "`..`", "control character",
                   "HS256", "`exp`", "`executionId`", "leeway", "`security.authFailuresPerMin`",
                   "Only failures count", "text column", "reads back as the value it spells"):
        assert needle in text, needle
    context = section(text, 5)
    fields = Spec().doc["components"]["schemas"]["Context"]["required"]
    for field in fields:
        assert re.search(rf"^\| `{field}` \|", context, re.M), f"§5 does not describe {field}"


# ---- the checks can fail -------------------------------------------------------------------------

def without(text, pattern):
    lines = text.splitlines(keepends=True)
    hits = [i for i, l in enumerate(lines) if re.search(pattern, l)]
    assert hits, f"no line of api.md matches {pattern!r}"
    return "".join(l for i, l in enumerate(lines) if i != hits[0])


@pytest.mark.parametrize("pattern,check", [
    (r"^\| HEAD \| `/executions/\{id\}/variables/\{key\}`", endpoint_problems),
    (r"^\| DELETE \|", endpoint_problems),
    (r"^\| POST \| `/executions/\{id\}/variables/\{key\}/increment`", endpoint_problems),
    (r"^\| POST \| `/tool-actions/execute`", endpoint_problems),
    (r"^\| GET \| `/metrics`", endpoint_problems),
    (r"^\| OPTIONS \| any", endpoint_problems),
    (r"^\| 502 \| `backend_error`", error_problems),
    (r"^\| 503 \| `audit_unavailable`", error_problems),
    (r"^\| 431 \|", error_problems),
])
def test_removing_a_line_is_noticed(pattern, check):
    text = api_text()
    assert not check(text)
    assert check(without(text, pattern)), f"removing the line {pattern!r} went unnoticed"


def test_wrong_status_extra_endpoint_and_unknown_setting_are_noticed():
    text = api_text()
    assert error_problems(text.replace("| 502 | `backend_error`", "| 500 | `backend_error`"))
    assert endpoint_problems(text.replace("| OPTIONS | any |", "| PATCH | `/executions/{id}/input` | none | x |\n| OPTIONS | any |"))
    assert setting_problems(text + "\nSee `server.noSuchSetting`.\n")
    assert setting_problems(text + "\nSet `NO_SUCH_SETTING`.\n")


# ---- the repository stands alone -------------------------------------------------------------------

def repository_text_files():
    """Tracked and new (not ignored) files, as text; the fuzz corpus is binary input."""
    import subprocess
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=REPO, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in sorted(set(r.stdout.decode().split("\0")) - {""}):
        path = REPO / name
        if not path.is_file() or "/corpus/" in f"/{name}" or "/regressions/" in f"/{name}":
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue
        yield name, data.decode("utf-8", "replace")


OUTSIDE = [
    (re.compile(r"\.\./shared\b"), "../shared"),
    (re.compile(r"\bshared/API\.md\b"), "shared/API.md"),
    (re.compile(r"""parent\s*/\s*["']shared["']"""), 'a path to the "shared" folder next to the repository'),
]


def outside_references(name, text):
    found = []
    for rx, what in OUTSIDE:
        for m in rx.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{name}:{line}: {what}")
    if name.endswith(".md"):
        here = (REPO / name).parent
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        targets += re.findall(r"`(\.\./[^`\s]+)`", text)
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                continue
            resolved = (here / target).resolve()
            if resolved != REPO and REPO not in resolved.parents:
                found.append(f"{name}: {target} points outside the repository")
    return found


def test_nothing_in_the_repository_points_outside_it():
    files = list(repository_text_files())
    assert len(files) > 150, len(files)
    own = "tests/static/test_api_doc.py"     # it spells the patterns out
    found = [hit for name, text in files if name != own for hit in outside_references(name, text)]
    assert not found, "references outside the repository (use docs/api.md):\n" + "\n".join(found)


def test_outside_references_are_noticed():
    assert outside_references("docs/x.md", "see `../shared/API.md` §3")
    assert outside_references("docs/helpers.md", "the endpoints (`../../shared/API.md` §4)")
    assert outside_references("docs/x.md", "[the contract](../../API.md)")
    assert outside_references("README.md", "[x](../notes/common.md)")
    assert outside_references("tests/static/conftest.py", 'SHARED = REPO.parent / "shared"')
    assert not outside_references("docs/x.md", "[the API](api.md), [tests](../tests/static/test_docs.py)")
    assert not outside_references("docs/x.md", "[site](https://example.org/a/../b)")
