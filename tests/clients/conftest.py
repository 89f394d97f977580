"""Fixtures for the client tests: client environments, the local cloud
(cloud_stub.py) and a real zaqar-server, both traced into one store."""

from pathlib import Path

import pytest

from tests import servers
from tests.clients import harness
from tests.services import envs
from tests.services import tracing
from tests.services import zaqar

FRAGMENT = Path(__file__).resolve().parents[2] / "etc" / "zaqar" / \
    "stacktrail.conf"


def _env(osprofiler):
    try:
        return harness.clients_env(osprofiler=osprofiler)
    except envs.EnvUnavailable as exc:
        pytest.skip(f"client environment unavailable: {exc}")


@pytest.fixture(scope="session")
def clients_env():
    """python-openstackclient, keystoneauth1, openstacksdk, the
    python-*clients; no osprofiler."""
    return _env(False)


@pytest.fixture(scope="session")
def clients_osprofiler_env():
    """The same clients with osprofiler 4.4.0 installed."""
    return _env(True)


@pytest.fixture(scope="session")
def client_overlay(clients_env, tmp_path_factory):
    """This clone installed (no deps) for a client's PYTHONPATH."""
    target = tmp_path_factory.mktemp("client-overlay") / "site"
    try:
        return envs.stacktrail_overlay(target, clients_env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def client_home(tmp_path_factory):
    """HOME for client programs (no clouds.yaml of the machine's user)."""
    return tmp_path_factory.mktemp("client-home")


@pytest.fixture(scope="session")
def trace_store(tmp_path_factory):
    """One file store for the session's clients and servers (each test
    reads its own trace ids)."""
    return "file://%s" % (tmp_path_factory.mktemp("client-traces")
                          / "traces.jsonl")


@pytest.fixture(scope="session")
def zaqar_server(_redis, trace_store, client_overlay, tmp_path_factory):
    """A real zaqar-server 23 traced from etc/zaqar/stacktrail.conf into
    ``trace_store`` (stacktrail from the overlay)."""
    try:
        env = zaqar.zaqar_env()
    except envs.EnvUnavailable as exc:
        pytest.skip(f"Zaqar environment unavailable: {exc}")
    with servers.redis_db(_redis) as db:
        url = f"redis://{_redis.host}:{_redis.port}/{db}"
        with zaqar.zaqar_server(
                tmp_path_factory.mktemp("zaqar"), url, env=env,
                overlay=client_overlay, extra_conf_files=[FRAGMENT],
                profiler={"connection_string": trace_store,
                          "hmac_keys": tracing.KEY}) as server:
            yield server


@pytest.fixture(scope="session")
def cloud(zaqar_server, trace_store, tmp_path_factory):
    """The local cloud, its catalog's messaging endpoint the real Zaqar."""
    with harness.CloudStub(tmp_path_factory.mktemp("cloud"), trace_store,
                           tracing.KEY, zaqar_server.url) as stub:
        yield stub
