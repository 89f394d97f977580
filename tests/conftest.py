"""Shared fixtures: real servers, each test with its own isolated resource.

Servers are found or started lazily, the first time a test asks for them,
and the ones we started are stopped at session end (see tests/servers.py and
DEVELOPERS.md).  A fixture skips its tests only when its server is down and
a throwaway one could not be started either; the reason says why.
"""

import secrets
import signal

import pytest

from tests import servers


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # A SIGTERM (CI's timeout, a killed run) would otherwise end pytest
    # without teardown and leave the throwaway servers running; as an
    # interrupt, pytest still finalizes the session fixtures.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _session_server(name):
    """Find/start server `name` once; skip (cached) when impossible."""
    try:
        server = servers.ensure(name)
    except servers.ServerUnavailable as exc:
        # pytest caches a session fixture's exception, so this skips every
        # later user without trying to start the server again.
        pytest.skip(f"{name} server unavailable: {exc}")
    return server


@pytest.fixture(scope="session")
def _redis():
    server = _session_server("redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(_redis):
    """(host, port) of the Redis server the tests use."""
    return _redis.host, _redis.port


@pytest.fixture
def redis_url(_redis):
    """redis://host:port/N with a db (1..15) owned by this test, flushed."""
    with servers.redis_db(_redis) as db:
        yield f"redis://{_redis.host}:{_redis.port}/{db}"


@pytest.fixture(scope="session")
def _postgres():
    server = _session_server("postgres")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(_postgres):
    """postgresql://postgres@host:port/<fresh database>, dropped after."""
    with servers.postgres_database(_postgres) as name:
        yield f"postgresql://postgres@{_postgres.host}:{_postgres.port}/{name}"


@pytest.fixture(scope="session")
def _mysql():
    server = _session_server("mysql")
    yield server
    server.stop()


@pytest.fixture
def mysql_url(_mysql):
    """mysql+pymysql://root@host:port/<fresh database>, dropped after."""
    with servers.mysql_database(_mysql) as name:
        yield f"mysql+pymysql://root@{_mysql.host}:{_mysql.port}/{name}"


@pytest.fixture(scope="session")
def _mongo():
    server = _session_server("mongo")
    yield server
    server.stop()


@pytest.fixture
def mongo_url(_mongo):
    """mongodb://host:port/<fresh db name> on nx-27017; dropped after."""
    with servers.mongo_database(_mongo) as name:
        yield f"mongodb://{_mongo.host}:{_mongo.port}/{name}"


@pytest.fixture(scope="session")
def _rabbit():
    server = _session_server("rabbit")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbit_url(_rabbit):
    """rabbit://guest:guest@host:port/ (shared: use unique_name for topics)."""
    return f"rabbit://guest:guest@{_rabbit.host}:{_rabbit.port}/"


@pytest.fixture
def unique_name():
    """Short unique lowercase name for topics, key prefixes, queues."""
    return "st" + secrets.token_hex(5)
