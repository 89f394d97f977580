"""Fixtures for the adapter contract: a recording notifier, a trace, and a
clean slate (no adapter wired, osprofiler's names its own) around each test."""

import pytest

from stacktrail import adapters
from stacktrail import notifier
from stacktrail import profiler
from stacktrail import runtime
from stacktrail import web
from stacktrail.common import settings
from stacktrail.common import sink
from tests.integrations.conftest import KEY, Recorder  # noqa: F401


@pytest.fixture(autouse=True)
def clean_slate():
    yield
    profiler.clean()
    runtime.reset()     # unwires every adapter and the takeover
    adapters._loaded.clear()
    notifier.set(sink.NoopSink())
    notifier.clear_notifier_cache()
    web._ENABLED = None
    web._HMAC_KEYS = None
    settings.current = settings.Settings()


@pytest.fixture
def recorder():
    rec = Recorder()
    notifier.set(rec)
    return rec


@pytest.fixture
def trace(recorder):
    return profiler.init(KEY)
