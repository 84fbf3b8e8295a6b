"""Fixtures that start the real cronium-runtime binary for black-box tests.

The process handling lives in tests/lib/proc.py: every service listens on
127.0.0.1 on a port picked at run time, is configured through the environment
(docs/api.md §8 names), and is stopped (SIGTERM, then SIGKILL) when its fixture ends.
Its stderr goes to a file whose tail is added to the report of any failing
test, and teardown fails loudly if the process died on its own, did not exit 0
on SIGTERM, or a sanitizer (or valgrind) reported an error.
"""
import secrets
import uuid
from pathlib import Path

import pytest

from lib.proc import Service, close_all, raise_nofile

raise_nofile()


class ServiceManager:
    """Starts services (dev mode unless told otherwise) and tears every one of
    them down, failing on problems."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.services = []

    def start(self, env=None, args=("--dev",), name=None):
        env = dict(env or {})
        env.setdefault("JWT_SECRET", "bb-" + secrets.token_hex(16))
        name = name or f"svc{len(self.services)}-{uuid.uuid4().hex[:6]}"
        svc = Service(self.workdir, env, args, name)
        self.services.append(svc)
        return svc.start()

    def close(self):
        problems = close_all(self.services)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_services(tmp_path_factory):
    m = ServiceManager(tmp_path_factory.mktemp("svc"))
    yield m
    m.close()


@pytest.fixture
def services(tmp_path):
    m = ServiceManager(tmp_path)
    yield m
    m.close()
