import shutil

import pytest

from tests.agent import harness


@pytest.fixture
def workdir():
    path = harness.short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agents(workdir):
    """Make agents in this test's directory; all stopped at the end."""
    started = []

    def make(backends, **options):
        agent = harness.Agent(workdir, backends, **options)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)


@pytest.fixture
def throwaway_redis():
    servers = []

    def make():
        server = harness.ThrowawayRedis().start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
