"""Both libraries start every test from their defaults: osprofiler's and
stacktrail's process-wide state (notifier, web switch, current trace, live
settings, runtime) is reset before and after each test."""

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
    integrations = sys.modules.get("stacktrail.integrations")
    if integrations is not None:
        integrations.apply({flag: False for flag in integrations.modules()})
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


@pytest.fixture(autouse=True)
def clean_state():
    _reset()
    yield
    _reset()
