"""Fixtures for the core tracer tests: every test starts from a clean slate.

The tracer keeps process-wide state (the notifier, the web switch, the live
settings, the current context); a test that changes it must never leak into
the next one.
"""

import sys

import pytest

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import runtime
from stacktrail import web
from stacktrail.common import settings
from stacktrail.common import sink


def _reset():
    profiler.clean()
    notifier.set(sink.NoopSink())
    notifier.clear_notifier_cache()
    web._ENABLED = None
    web._HMAC_KEYS = None
    settings.current = settings.Settings()
    runtime.reset()


@pytest.fixture(autouse=True)
def clean_state():
    _reset()
    yield
    _reset()
    # init_from_conf switches integrations on (trace_rpc, trace_drivers):
    # switch off the ones a test imported, so no patch outlives its test.
    integrations = sys.modules.get("stacktrail.integrations")
    if integrations is not None:
        integrations.apply({flag: False for flag in integrations.modules()})
    # Reset the real osprofiler too, when a test imported it.
    if "osprofiler.web" in sys.modules:
        import osprofiler.notifier
        import osprofiler.profiler
        import osprofiler.web
        osprofiler.profiler.clean()
        osprofiler.notifier.set(lambda info, context=None: None)
        osprofiler.web._ENABLED = None
        osprofiler.web._HMAC_KEYS = None


@pytest.fixture
def messages():
    """A list receiving every formatted message, synchronously."""
    received = []
    notifier.set(received.append)
    return received


@pytest.fixture
def live():
    """The live settings object; tests change its attributes."""
    return settings.current
