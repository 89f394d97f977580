"""Fixtures for the integration tests: a recording notifier and a clean
slate (every integration off, no trace open) around each test."""

import pytest

from stacktrail import integrations
from stacktrail import notifier
from stacktrail import profiler
from stacktrail.common import settings

KEY = "integration-test-key"


class Recorder(list):
    """The formatted messages the profiler emitted, in order."""

    def __call__(self, message):
        self.append(message)

    def names(self):
        return [m["name"] for m in self]

    def spans(self, name):
        """[(start message, stop message)] of the spans called ``name``."""
        starts = {m["trace_id"]: m for m in self
                  if m["name"] == name + "-start"}
        return [(starts[m["trace_id"]], m) for m in self
                if m["name"] == name + "-stop" and m["trace_id"] in starts]

    def unclosed(self):
        stops = {m["trace_id"] for m in self if m["name"].endswith("-stop")}
        return [m for m in self
                if m["name"].endswith("-start") and m["trace_id"] not in stops]


@pytest.fixture
def recorder():
    previous = notifier.get()
    rec = Recorder()
    notifier.set(rec)
    yield rec
    notifier.set(previous)


@pytest.fixture
def live(monkeypatch):
    """Fresh [profiler] settings with a validation/signing key."""
    fresh = settings.Settings()
    fresh.set_keys([KEY])
    monkeypatch.setattr(settings, "current", fresh)
    return fresh


@pytest.fixture(autouse=True)
def clean_slate():
    profiler.clean()
    yield
    profiler.clean()
    integrations.apply({flag: False for flag in integrations.modules()})


@pytest.fixture
def trace(recorder):
    """An open trace; returns its profiler."""
    return profiler.init(KEY)
