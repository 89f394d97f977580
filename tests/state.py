"""The tracer's process-wide state put back as a fresh process has it.

The notifier, the web switch, the live settings, the runtime (activations,
adapters' wiring, the osprofiler takeover), the current trace, every
integration a test switched on, and osprofiler's own state when a test
imported it: a test that changes any of it must not leak into the next.
"""

import sys

import pytest

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import runtime
from stacktrail import web
from stacktrail.common import settings
from stacktrail.common import signing
from stacktrail.common import sink


def reset():
    profiler.clean()
    runtime.reset()
    integrations = sys.modules.get("stacktrail.integrations")
    if integrations is not None:
        integrations.apply({flag: False for flag in integrations.modules()})
        integrations._said.clear()
    signing._refused.clear()
    notifier.set(sink.NoopSink())
    notifier.clear_notifier_cache()
    web._ENABLED = None
    web._HMAC_KEYS = None
    settings.current = settings.Settings()
    _reset_osprofiler()


@pytest.fixture(autouse=True)
def clean_state():
    """``reset`` around each test (import it into a conftest.py)."""
    reset()
    yield
    reset()


def _reset_osprofiler():
    if "osprofiler.web" in sys.modules:
        import osprofiler.notifier
        import osprofiler.profiler
        import osprofiler.web
        osprofiler.profiler.clean()
        osprofiler.notifier.set(osprofiler.notifier._noop_notifier)
        osprofiler.notifier.clear_notifier_cache()
        osprofiler.web._ENABLED = None
        osprofiler.web._HMAC_KEYS = None
    if "osprofiler.sqlalchemy" in sys.modules:
        sys.modules["osprofiler.sqlalchemy"].enable()
