"""Fixtures for the production-mode tests (real binary, redis-server, backend fake).

`stack`       one stack shared by a test module (executions are unique per test);
              faults injected into its fake are cleared after every test and the
              fake is back to its default, the real backend (no DELETE on
              variables, no tool actions).
`rich_stack`  the same stack with the fake's opt-in richer backend (DELETE on
              variables, tool actions), for tests of what the runtime does with them.
`make_stack`  a factory for a fresh stack per test (fault tests that kill things).
Teardown fails the test if the service died by itself, did not stop on SIGTERM
with exit 0, printed a sanitizer report, or the fake recorded an internal error.
"""
import pytest

from lib.proc import close_all

from ._support import Stack


@pytest.fixture(scope="module")
def _module_stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("prod"))
    try:
        st.start()
        yield st
    finally:
        problems = st.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def stack(_module_stack):
    yield _module_stack
    _module_stack.fb.clear_faults()
    _module_stack.fb.configure({"rich": False})


@pytest.fixture
def rich_stack(stack):
    stack.fb.configure({"rich": True})
    return stack


@pytest.fixture
def make_stack(tmp_path):
    made = []

    def make(env=None, valkey=True, fake_kwargs=None):
        st = Stack(tmp_path / f"stack{len(made)}", env=env, valkey=valkey, fake_kwargs=fake_kwargs)
        made.append(st)
        st.start()
        return st

    yield make
    problems = close_all(made)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)

