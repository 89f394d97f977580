"""Fixtures for the core tracer tests: every test starts from a clean slate.

The tracer keeps process-wide state (the notifier, the web switch, the live
settings, the current context); a test that changes it must never leak into
the next one.
"""

import pytest

from stacktrail import notifier
from stacktrail.common import settings
from tests.state import clean_state  # noqa: F401


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
