"""Fixtures of the tempest runs: the cached Zaqar and tempest
environments, this clone installed once for both, a second Redis db."""

import pytest

from tests.services import envs
from tests.services.conftest import second_redis_url  # noqa: F401
from tests.services.conftest import zaqar_env  # noqa: F401
from tests.tempest import overlays


@pytest.fixture(scope="session")
def stacktrail_overlay(zaqar_env):  # noqa: F811
    try:
        return overlays.shared_overlay(zaqar_env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))
