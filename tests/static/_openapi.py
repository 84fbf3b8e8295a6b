"""docs/openapi.yaml as a response validator: a small $ref resolver, operation
lookup by method and concrete path, and checks of status, headers and body."""
import json
import re

import jsonschema
import yaml

from .conftest import REPO

SPEC_PATH = REPO / "docs" / "openapi.yaml"
METHODS = ("get", "head", "post", "put", "delete", "options", "patch", "trace")
# Headers whose presence the document must account for on every response.
TRACKED_HEADERS = ("x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                   "retry-after", "allow")


# Answers any request can get, documented once under components/responses.
ANY_PATH = {431: "#/components/responses/HeadersTooLarge"}


def load_spec():
    return yaml.safe_load(SPEC_PATH.read_text())


class Spec:
    def __init__(self, doc=None):
        self.doc = doc if doc is not None else load_spec()
        self._paths = []
        for template, item in self.doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self._paths.append((re.compile(rx), template, item))

    # -- references ----------------------------------------------------------------------------
    def pointer(self, ref):
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are used here: {ref}")
        node = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[part]
        return node

    def deref(self, node):
        """Follows $ref chains of an OpenAPI object (response, header, parameter)."""
        seen = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise ValueError(f"reference cycle at {ref}")
            seen.add(ref)
            node = self.pointer(ref)
        return node

    def inline(self, schema, _stack=()):
        """A copy of a JSON schema with every local $ref replaced by its target."""
        if isinstance(schema, list):
            return [self.inline(s, _stack) for s in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in _stack:
                raise ValueError(f"recursive schema {ref}: not supported by this resolver")
            target = self.inline(self.pointer(ref), _stack + (ref,))
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            if rest:
                return {"allOf": [target, self.inline(rest, _stack)]}
            return target
        return {k: self.inline(v, _stack) for k, v in schema.items()}

    # -- lookup ------------------------------------------------------------------------------------
    def path_item(self, raw_path):
        path = raw_path.split("?", 1)[0]
        for rx, template, item in self._paths:
            if rx.match(path):
                return template, item
        return None, None

    def operation(self, method, raw_path):
        template, item = self.path_item(raw_path)
        if item is None:
            return None, None
        return template, item.get(method.lower())

    # -- validation ----------------------------------------------------------------------------------
    def validate_schema(self, schema, value, where):
        full = self.inline(schema)
        errors = list(jsonschema.Draft202012Validator(full).iter_errors(value))
        assert not errors, f"{where}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])

    def check_response(self, response, status, headers, body, where, head=False):
        """response: an OpenAPI response object (or $ref). headers: dict (lower-case names)."""
        response = self.deref(response)
        documented = {}
        for name, h in (response.get("headers") or {}).items():
            documented[name.lower()] = self.deref(h)
        for name, h in documented.items():
            if h.get("required") and name not in headers:
                raise AssertionError(f"{where}: required header {name} missing; got {sorted(headers)}")
        for name in TRACKED_HEADERS:
            if name in headers:
                assert name in documented, f"{where}: header {name} sent but not documented for {status}"
        for name, h in documented.items():
            if name in headers and "schema" in h:
                raw = headers[name]
                schema = self.inline(h["schema"])
                value = raw
                if schema.get("type") == "integer":
                    assert re.fullmatch(r"\d+", raw), f"{where}: {name}: {raw!r} is not an integer"
                    value = int(raw)
                self.validate_schema(schema, value, f"{where} header {name}")
        content = response.get("content")
        if head or not content:
            assert body == b"", f"{where}: status {status} documents no body, got {body[:200]!r}"
            return None
        ctype = headers.get("content-type", "")
        media = self._media(content, ctype, where)
        schema = media.get("schema")
        base = ctype.split(";")[0].strip().lower()
        if base == "application/json":
            value = json.loads(body)
        else:
            value = body.decode("utf-8")
        if schema is not None:
            self.validate_schema(schema, value, f"{where} body")
        return value

    @staticmethod
    def _media(content, ctype, where):
        base = ctype.split(";")[0].strip().lower()
        params = {p.strip().lower() for p in ctype.split(";")[1:] if p.strip()}
        for key, media in content.items():
            kbase = key.split(";")[0].strip().lower()
            kparams = {p.strip().lower() for p in key.split(";")[1:] if p.strip()}
            if kbase == base and kparams <= params:
                return media
        raise AssertionError(f"{where}: Content-Type {ctype!r} is not documented ({list(content)})")

    def check(self, method, raw_path, status, headers, body):
        """Validates one real exchange against the document; returns the parsed body."""
        where = f"{method} {raw_path} -> {status}"
        template, item = self.path_item(raw_path)
        head = method.upper() == "HEAD"
        if item is None:
            assert status == 404, f"{where}: undocumented path"
            return self.check_response({"$ref": "#/components/responses/RouteNotFound"}, status, headers,
                                       body, where, head)
        if status == 405:
            allowed = {m.upper() for m in METHODS if m in item and m != "options"}
            if "GET" in allowed:
                allowed.add("HEAD")           # the router answers HEAD with the GET handler
            sent = {m.strip() for m in headers.get("allow", "").split(",") if m.strip()}
            assert sent == allowed, f"{where}: Allow {sent} but the document has {allowed}"
        op = item.get(method.lower())
        if op is None and head and "get" in item:
            op = item["get"]      # HEAD is answered by the GET handler, without a body
        if op is None:
            assert status == 405, f"{where}: {method} is not documented for {template}"
            return self.check_response({"$ref": "#/components/responses/MethodNotAllowed"}, status, headers,
                                       body, where, head)
        responses = op["responses"]
        if str(status) not in responses and status in ANY_PATH:
            return self.check_response({"$ref": ANY_PATH[status]}, status, headers, body, where, head)
        key = str(status)
        if key not in responses:
            key = f"{key[0]}XX" if f"{key[0]}XX" in responses else "default"
        assert key in responses, f"{where}: status {status} not documented for {method} {template}"
        return self.check_response(responses[key], status, headers, body, where, head)
