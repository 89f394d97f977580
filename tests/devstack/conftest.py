"""Fixtures of the test that runs zaqar-server as the plugin configured
it: the cached Zaqar environment, this clone installed once (shared with
the tempest tests)."""

import pytest

from tests.services import envs
from tests.services.conftest import zaqar_env  # noqa: F401
from tests.tempest import overlays


@pytest.fixture(scope="session")
def stacktrail_overlay(zaqar_env):  # noqa: F811
    try:
        return overlays.shared_overlay(zaqar_env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))
