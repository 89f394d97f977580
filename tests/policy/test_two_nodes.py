"""One policy change reaches the services of two nodes, without restart.

Two real agents read the policy from one Redis store; each serves a real
service process (its own [profiler] config, connection_string agent://).
"""

import contextlib
import getpass
import json
import os
import subprocess
import sys
import threading
import time

from stacktrail.cmd import cli
from tests.agent import harness


class Service:
    """tests/policy/service.py in a subprocess; ``last`` is its newest
    report: the live sampling rate and how many of 200 requests it traced."""

    def __init__(self, workdir, name, agent_url):
        path = os.path.join(workdir, name + ".conf")
        with open(path, "w") as f:
            f.write("[profiler]\nenabled = true\nhmac_keys = %s\n"
                    "connection_string = %s\nsampling_rate = 0.0\n"
                    "max_sampled_traces_per_second = 0\n"
                    % ("k" * 32, agent_url))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.policy.service", path, name],
            cwd=harness.ROOT, stdout=subprocess.PIPE, text=True)
        self.last = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.last = json.loads(line)

    def traced(self):
        return self.last["traced"] if self.last else None

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


def set_policy(store, *options):
    assert cli.main(["sampling", "set", "--store", store] + list(options)) \
        == 0


def wait_traced(services, counts, timeout=10.0):
    """Seconds until each service traces ``count`` of 200 requests."""
    start = time.monotonic()
    harness.wait_for(lambda: [s.traced() for s in services] == counts,
                     timeout, interval=0.05,
                     what="traced counts %s, have %s" % (
                         counts, [s.traced() for s in services]))
    return time.monotonic() - start


@contextlib.contextmanager
def two_nodes(workdir, redis_url):
    """Two real agents (own directory, config and spool each) reading the
    policy from ``redis_url``, a service process behind each: yields
    (agents, services), all stopped at the end."""
    nodes, services = [], []
    try:
        for name in ("a", "b"):
            path = os.path.join(workdir, "node-" + name)
            os.makedirs(path)
            nodes.append(harness.Agent(
                path, [redis_url], sampling_policy_store=redis_url).start())
            services.append(Service(workdir, "svc-" + name, nodes[-1].url))
        yield nodes, services
    finally:
        for service in services:
            service.close()
        for node in nodes:
            node.stop()


def test_policy_change_reaches_two_nodes(workdir, redis_url, capsys,
                                         monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    with two_nodes(workdir, redis_url) as (nodes, services):
        # no policy yet: the [profiler] defaults (sampling_rate 0)
        wait_traced(services, [0, 0])
        set_policy(redis_url, "--default-rate", "1")
        took = wait_traced(services, [200, 200])
        assert took < 8, took
        # a rule for one service only
        set_policy(redis_url, "--rate", "service:svc-b=0")
        wait_traced(services, [200, 0])
        # node a's agent goes away: its service keeps the last policy
        nodes[0].stop()
        set_policy(redis_url, "--rate", "service:svc-a=0",
                   "--rate", "service:svc-b=none")
        wait_traced(services, [200, 200])
        time.sleep(3)
        assert services[0].traced() == 200
    capsys.readouterr()
    assert cli.main(["sampling", "show", "--store", redis_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    # newest first, each with who and when
    assert [c["user"] for c in shown["changes"]] == [getpass.getuser()] * 3
    assert all(c["at"].endswith("Z") for c in shown["changes"])
    assert shown["changes"][0]["policy"]["rates"]["service"] == \
        {"svc-a": 0.0}
