"""Shared by every pytest suite under tests/: pytest puts this directory on
sys.path (so `import lib` finds the harness, tests/lib), and a failing test's
report gets what each running service logged (lib.proc.add_failure_sections)."""
import pytest

from lib.proc import add_failure_sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        add_failure_sections(rep)
