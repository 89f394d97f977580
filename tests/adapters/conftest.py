"""Fixtures for the adapter contract: a recording notifier, a trace, and a
clean slate (no adapter wired, osprofiler's names its own) around each test."""

import pytest

from stacktrail import adapters
from stacktrail import profiler
from tests import state
from tests.integrations.conftest import KEY  # noqa: F401
from tests.integrations.conftest import recorder  # noqa: F401


@pytest.fixture(autouse=True)
def clean_slate():
    yield
    state.reset()     # unwires every adapter and the takeover
    adapters._loaded.clear()


@pytest.fixture
def trace(recorder):  # noqa: F811
    return profiler.init(KEY)
