"""Fixtures for the tests that run real OpenStack services."""

import pytest

from tests import servers
from tests.services import cinder
from tests.services import envs
from tests.services import nova
from tests.services import overlays
from tests.services import zaqar


def _env(name, build):
    try:
        return build()
    except envs.EnvUnavailable as exc:
        pytest.skip(f"{name} environment unavailable: {exc}")


@pytest.fixture(scope="session")
def zaqar_env():
    """The cached Zaqar environment; skips when it cannot be built."""
    return _env("Zaqar", zaqar.zaqar_env)


@pytest.fixture(scope="session")
def stacktrail_overlay(zaqar_env):
    """This clone installed (no deps) for Zaqar's PYTHONPATH."""
    return overlays.overlay_for(zaqar_env)


@pytest.fixture(scope="session")
def cinder_env():
    """The cached Cinder environment; skips when it cannot be built."""
    return _env("Cinder", cinder.cinder_env)


@pytest.fixture(scope="session")
def nova_env():
    """The cached Nova environment; skips when it cannot be built."""
    return _env("Nova", nova.nova_env)


@pytest.fixture(scope="session")
def cinder_overlay(cinder_env):
    return overlays.overlay_for(cinder_env)


@pytest.fixture(scope="session")
def nova_overlay(nova_env):
    return overlays.overlay_for(nova_env)


@pytest.fixture
def second_redis_url(_redis):
    """Like redis_url, another db of its own (e.g. a second Zaqar pool)."""
    with servers.redis_db(_redis) as db:
        yield f"redis://{_redis.host}:{_redis.port}/{db}"
