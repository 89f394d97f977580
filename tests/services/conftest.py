"""Fixtures for the tests that run real OpenStack services."""

import pytest

from tests import servers
from tests.services import cinder
from tests.services import envs
from tests.services import nova
from tests.services import zaqar


def _env(name, build):
    try:
        return build()
    except envs.EnvUnavailable as exc:
        pytest.skip(f"{name} environment unavailable: {exc}")


def _overlay(tmp_path_factory, name, env):
    """This clone installed (no deps) for ``env``'s PYTHONPATH."""
    target = tmp_path_factory.mktemp(name + "-overlay") / "site"
    try:
        return envs.stacktrail_overlay(target, env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def zaqar_env():
    """The cached Zaqar environment; skips when it cannot be built."""
    return _env("Zaqar", zaqar.zaqar_env)


@pytest.fixture(scope="session")
def stacktrail_overlay(zaqar_env, tmp_path_factory):
    """This clone installed (no deps) for Zaqar's PYTHONPATH."""
    return _overlay(tmp_path_factory, "zaqar", zaqar_env)


@pytest.fixture(scope="session")
def cinder_env():
    """The cached Cinder environment; skips when it cannot be built."""
    return _env("Cinder", cinder.cinder_env)


@pytest.fixture(scope="session")
def nova_env():
    """The cached Nova environment; skips when it cannot be built."""
    return _env("Nova", nova.nova_env)


@pytest.fixture(scope="session")
def cinder_overlay(cinder_env, tmp_path_factory):
    return _overlay(tmp_path_factory, "cinder", cinder_env)


@pytest.fixture(scope="session")
def nova_overlay(nova_env, tmp_path_factory):
    return _overlay(tmp_path_factory, "nova", nova_env)


@pytest.fixture
def second_redis_url(_redis):
    """Like redis_url, another db of its own (e.g. a second Zaqar pool)."""
    with servers.redis_db(_redis) as db:
        yield f"redis://{_redis.host}:{_redis.port}/{db}"
