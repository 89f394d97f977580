"""Fixtures of the sampling policy tests: real agents (tests.agent), and
a clean tracing runtime around every test."""

import pytest

from stacktrail import policy_client
from stacktrail import profiler
from stacktrail import runtime
from stacktrail.common import settings
from tests.agent.conftest import agents, workdir  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def clean_runtime():
    yield
    runtime.reset()
    policy_client.stop()
    profiler.clean()
    settings.current = settings.Settings()
