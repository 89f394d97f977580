"""Fixtures for the OpenTelemetry bridge tests.

OpenTelemetry keeps process-wide state (one global tracer provider, set
once; the runtime context; the global propagator), and so do oslo.messaging
and oslo.middleware's tracing (their tracer and provider).  Each test starts
with none of it set, as a fresh process would, and puts back what it found:
the same resets opentelemetry-test-utils makes between tests.
"""

import sys

import pytest

from stacktrail import otel
from stacktrail import profiler
from tests import state
from tests.integrations.conftest import live  # noqa: F401
from tests.integrations.conftest import recorder  # noqa: F401

pytest.importorskip("opentelemetry.trace")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import propagate  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402

from stacktrail.otel import bridge  # noqa: E402
from stacktrail.otel import owners  # noqa: E402


def _fresh_otel():
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    bridge._warned_beside = False
    bridge._state.mode = "off"
    om = sys.modules.get("oslo_messaging._tracing.client")
    if om is not None:
        om._TRACER = None
    mw = sys.modules.get("oslo_middleware.tracing")
    if mw is not None:
        mw._TRACER_PROVIDER = None
        mw._INITIALIZED = False


@pytest.fixture(autouse=True)
def otel_globals():
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE,
             otel_context._RUNTIME_CONTEXT, propagate.get_global_textmap())
    _fresh_otel()
    yield
    otel.apply(False)
    _fresh_otel()
    (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE,
     otel_context._RUNTIME_CONTEXT) = saved[:3]
    propagate.set_global_textmap(saved[3])


@pytest.fixture(autouse=True)
def clean_slate():
    profiler.clean()
    yield
    state.reset()
    assert not owners.active


@pytest.fixture
def bridged(live, recorder):  # noqa: F811
    """The bridge installed as the global provider; returns a tracer."""
    assert otel.apply(True)
    assert otel.status() == "global"
    return trace.get_tracer("tests.otel")


def span_of(recorder, name):  # noqa: F811
    """(start, stop) of the one span called ``name``."""
    found = recorder.spans(name)
    assert len(found) == 1, (name, recorder.names())
    return found[0]


def low64(uuid_text):
    return "%016x" % (int(uuid_text.replace("-", ""), 16) & (2 ** 64 - 1))
