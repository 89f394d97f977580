"""Fixtures for the tests that run real OpenStack services."""

import pytest

from tests import servers
from tests.services import envs
from tests.services import zaqar


@pytest.fixture(scope="session")
def zaqar_env():
    """The cached Zaqar environment; skips when it cannot be built."""
    try:
        return zaqar.zaqar_env()
    except envs.EnvUnavailable as exc:
        pytest.skip(f"Zaqar environment unavailable: {exc}")


@pytest.fixture(scope="session")
def stacktrail_overlay(zaqar_env, tmp_path_factory):
    """This clone installed (no deps) into a dir for a service's PYTHONPATH."""
    target = tmp_path_factory.mktemp("overlay") / "site"
    try:
        return envs.stacktrail_overlay(target, zaqar_env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def second_redis_url(_redis):
    """Like redis_url, another db of its own (e.g. a second Zaqar pool)."""
    with servers.redis_db(_redis) as db:
        yield f"redis://{_redis.host}:{_redis.port}/{db}"
