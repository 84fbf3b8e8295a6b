"""A small Dockerfile parser and .dockerignore matcher for the static checks.

It follows the Dockerfile reference closely enough to catch what a build would
reject (unknown instructions, missing arguments, broken exec-form JSON, a
backslash continuation running off the end) and to answer the questions the
tests ask: which stages, which COPY sources, which ENV values, which
HEALTHCHECK command.
"""
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional

KNOWN = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
         "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
EXEC_FORM_CAPABLE = {"RUN", "CMD", "ENTRYPOINT", "SHELL"}
FLAGGED = {"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"}


class DockerfileError(Exception):
    def __init__(self, line, message):
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str                       # everything after the keyword, continuations joined
    flags: Dict[str, Optional[str]] = field(default_factory=dict)
    rest: str = ""                  # args after the leading --flags
    exec_form: Optional[List[str]] = None   # the JSON array form, if used

    def __repr__(self):
        return f"{self.keyword}@{self.line}"


@dataclass
class Stage:
    index: int
    image: str
    name: Optional[str]
    instructions: List[Instruction]

    def all(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword):
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text):
    """Yields (first line number, joined text) with the default escape character."""
    lines = text.split("\n")
    i = 0
    in_directives = True
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if in_directives and re.match(r"^#\s*([a-zA-Z]+)\s*=", stripped):
            name = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(.*)$", stripped)
            if name.group(1).lower() == "escape" and name.group(2).strip() != "\\":
                raise DockerfileError(i + 1, "only the default escape character is supported here")
            i += 1
            continue
        in_directives = False
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts = []
        cur = raw
        while True:
            body = cur.rstrip()
            if body.endswith("\\"):
                parts.append(body[:-1])
                i += 1
                # Comment and empty lines inside a continuation are skipped.
                while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    raise DockerfileError(start, "a line continuation runs off the end of the file")
                cur = lines[i]
                continue
            parts.append(body)
            i += 1
            break
        yield start, " ".join(p.strip() for p in parts)


def _split_flags(keyword, args, line):
    flags = {}
    rest = args
    if keyword not in FLAGGED:
        return flags, rest
    while True:
        m = re.match(r"^--([A-Za-z][A-Za-z0-9-]*)(?:=(\S*))?(?:\s+|$)", rest)
        if not m:
            break
        if keyword == "HEALTHCHECK" or m.group(2) is not None or keyword == "RUN":
            flags[m.group(1)] = m.group(2)
            rest = rest[m.end():]
            continue
        # COPY/ADD/FROM boolean flags (--link, --parents)
        flags[m.group(1)] = None
        rest = rest[m.end():]
    return flags, rest.strip()


def _exec_form(text, line, keyword):
    t = text.strip()
    if not t.startswith("["):
        return None
    try:
        value = json.loads(t)
    except ValueError as e:
        raise DockerfileError(line, f"{keyword}: '[' starts an exec form that is not valid JSON ({e})")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DockerfileError(line, f"{keyword}: the exec form must be a non-empty JSON array of strings")
    return value


def parse(text):
    """Parses a Dockerfile into a list of Instruction; raises DockerfileError."""
    out = []
    for line, logical in _logical_lines(text):
        m = re.match(r"^([A-Za-z]+)(?:\s+(.*))?$", logical)
        if not m:
            raise DockerfileError(line, f"not an instruction: {logical[:60]!r}")
        keyword = m.group(1).upper()
        args = (m.group(2) or "").strip()
        if keyword not in KNOWN:
            raise DockerfileError(line, f"unknown instruction {m.group(1)}")
        if not args:
            raise DockerfileError(line, f"{keyword} has no arguments")
        flags, rest = _split_flags(keyword, args, line)
        ins = Instruction(line, keyword, args, flags, rest)
        if keyword in EXEC_FORM_CAPABLE:
            ins.exec_form = _exec_form(rest, line, keyword)
        elif keyword == "HEALTHCHECK":
            hm = re.match(r"^(CMD|NONE)\b\s*(.*)$", rest)
            if not hm:
                raise DockerfileError(line, "HEALTHCHECK needs CMD <command> or NONE")
            if hm.group(1) == "CMD":
                if not hm.group(2):
                    raise DockerfileError(line, "HEALTHCHECK CMD has no command")
                ins.exec_form = _exec_form(hm.group(2), line, keyword)
        elif keyword in ("COPY", "ADD"):
            files = copy_operands(ins)
            if len(files) < 2:
                raise DockerfileError(line, f"{keyword} needs at least one source and a destination")
        out.append(ins)
    if not out:
        raise DockerfileError(1, "empty Dockerfile")
    first = next((i for i in out if i.keyword != "ARG"), None)
    if first is None or first.keyword != "FROM":
        raise DockerfileError(out[0].line, "the first instruction (after ARG) must be FROM")
    return out


def stages(instructions):
    result = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.rest.split()
            name = None
            if len(words) == 3 and words[1].upper() == "AS":
                name = words[2]
            elif len(words) != 1:
                raise DockerfileError(ins.line, f"FROM takes an image and an optional `AS name`: {ins.rest!r}")
            result.append(Stage(len(result), words[0], name, [ins]))
        elif result:
            result[-1].instructions.append(ins)
    return result


def copy_operands(ins):
    """Sources and destination of COPY/ADD (the last one is the destination)."""
    t = ins.rest.strip()
    if t.startswith("["):
        value = _exec_form(t, ins.line, ins.keyword)
        return value
    return shlex.split(t, posix=True)


def env_pairs(ins):
    """ENV key=value ... (or the legacy `ENV key value`) as a dict."""
    t = ins.rest.strip()
    words = shlex.split(t, posix=True)
    if words and "=" not in words[0]:
        return {words[0]: t[len(t.split(None, 1)[0]):].strip()}
    pairs = {}
    for w in words:
        if "=" not in w:
            raise DockerfileError(ins.line, f"ENV: {w!r} is not key=value")
        k, v = w.split("=", 1)
        pairs[k] = v
    return pairs


def run_commands(ins):
    """The shell commands of a RUN, split on && and ; (for simple policy checks)."""
    text = " ".join(ins.exec_form) if ins.exec_form else ins.rest
    return [c.strip() for c in re.split(r"&&|;|\|\|", text) if c.strip()]


def apt_installs(ins):
    """Package names installed by `apt-get install` in one RUN, with its options."""
    found = []
    for cmd in run_commands(ins):
        words = cmd.split()
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            after = words[words.index("install") + 1:]
            opts = [w for w in words[1:] if w.startswith("-")]
            pkgs = [w for w in after if not w.startswith("-")]
            found.append((opts, pkgs))
    return found


# ---- .dockerignore ------------------------------------------------------------------------------

def _pattern_regex(pattern):
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out.append(re.escape(c))
            else:
                cls = pattern[i + 1:j]
                if cls.startswith("^") or cls.startswith("!"):
                    cls = "^" + cls[1:]
                out.append("[" + cls + "]")
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


class DockerIgnore:
    """Docker's rules: patterns in order, the last one matching a path (or one of
    its parent directories) decides; `!` re-includes."""

    def __init__(self, text):
        self.rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = line.strip("/")
            while line.startswith("./"):
                line = line[2:]
            if line:
                self.rules.append((negate, _pattern_regex(line), line))

    def excluded(self, path):
        path = path.strip("/")
        parents = []
        parts = path.split("/")
        for n in range(1, len(parts) + 1):
            parents.append("/".join(parts[:n]))
        result = False
        for negate, rx, _text in self.rules:
            if any(rx.match(p) for p in parents):
                result = not negate
        return result
