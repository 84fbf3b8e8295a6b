"""The backend fake (tests/fakes/backend.py) for the suites that need one:
started in-process on a free 127.0.0.1 port and checked for internal errors
when it stops.

Its default is the real Cronium backend (no DELETE on variables, no tool
actions: the runtime answers 501 not_supported for them); a test of what the
runtime does with a delete or a tool result opts in with start_fake(rich=True)
or FakeBackend(**RICH)."""
from fakes.backend import RICH, FakeBackend  # noqa: F401  (tests/ is on sys.path: see lib/__init__.py)


def start_fake(rich=False, **kwargs):
    """A started FakeBackend(**kwargs); rich=True adds the opt-in DELETE and tools routes."""
    return FakeBackend(**{**(RICH if rich else {}), **kwargs}).start()


def stop_fake(fb):
    """Stop it; returns the internal errors it recorded, as problems."""
    fb.stop()
    if fb.errors:
        return ["the backend fake recorded errors:\n" + "\n".join(fb.errors)]
    return []


class Fakes:
    """Fakes started for one test or module: start(**kwargs), close() -> problems."""

    def __init__(self):
        self.started = []

    def start(self, **kwargs):
        fb = start_fake(**kwargs)
        self.started.append(fb)
        return fb

    __call__ = start

    def close(self):
        problems = []
        for fb in self.started:
            problems += stop_fake(fb)
        self.started = []
        return problems
