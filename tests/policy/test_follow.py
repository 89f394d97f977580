"""A service in this process follows the policy of its node's agent (a
policy file the agent watches), and keeps it through a config reload, a
broken policy file and an agent that went away; an eventlet service follows
in an OS thread of its own."""

import json
import os
import socket
import textwrap
import threading
import time

import pytest
from oslo_config import cfg

from stacktrail import policy_client
from stacktrail import runtime
from stacktrail.cmd import cli
from stacktrail.common import policy as policy_mod
from stacktrail.common import settings
from tests import fresh_process
from tests.agent import harness


def activate(workdir, agent_url):
    path = os.path.join(workdir, "api.conf")
    with open(path, "w") as f:
        f.write("[profiler]\nenabled = true\nconnection_string = %s\n"
                "sampling_rate = 0.05\n" % agent_url)
    conf = cfg.ConfigOpts()
    conf(["--config-file", path], project="nova")
    runtime.activate(conf, project="nova", service="api")
    return conf


def wait_rate(rate, timeout=10.0):
    harness.wait_for(lambda: settings.current.sampling_rate == rate, timeout,
                     what="sampling rate %s, have %s"
                     % (rate, settings.current.sampling_rate))


def test_service_follows_the_agent_policy_file(agents, workdir, capsys):
    policy_file = os.path.join(workdir, "policy.json")
    agent = agents(["file://" + os.path.join(workdir, "out")],
                   sampling_policy_file=policy_file).start()
    # the policy socket has the listen socket's permissions
    listen = agent.listen[len("unix://"):]
    assert os.stat(listen + ".policy").st_mode == os.stat(listen).st_mode
    conf = activate(workdir, agent.url)
    assert settings.current.sampling_rate == 0.05   # [profiler] default
    assert cli.main(["sampling", "set", "--agent-config", agent.conf_path,
                     "--default-rate", "0.3", "--rate", "service:api=0.7",
                     "--max-traces-per-second", "5"]) == 0
    wait_rate(0.7)
    assert settings.current.sampled_limiter.rate == 5.0
    # a reload (SIGHUP) rebuilds [profiler]; the policy stays on top
    runtime._reload(conf)
    assert settings.current.sampling_rate == 0.7
    # a broken file: the agent keeps serving the last valid policy
    with open(policy_file, "w") as f:
        f.write("{not json")
    harness.wait_for(lambda: agent.status()["sampling_policy"]["errors"],
                     5, what="the agent noticing the broken policy")
    time.sleep(2.5)
    assert settings.current.sampling_rate == 0.7
    # the agent goes away: the service keeps its last policy
    agent.stop()
    time.sleep(2.5)
    assert settings.current.sampling_rate == 0.7
    capsys.readouterr()


def test_cli_refuses_an_invalid_change(workdir, capsys):
    policy_file = os.path.join(workdir, "policy.json")
    assert cli.main(["sampling", "set", "--file", policy_file,
                     "--default-rate", "0.2"]) == 0
    before = open(policy_file).read()
    assert cli.main(["sampling", "set", "--file", policy_file,
                     "--rate", "service:api=2"]) == 1
    assert "rates.service.api must be a number from 0 to 1" in \
        capsys.readouterr().err
    assert open(policy_file).read() == before
    assert cli.main(["sampling", "set", "--file", policy_file,
                     "--rate", "host:x=0.1"]) == 1
    assert "KIND one of project, service, operation" in \
        capsys.readouterr().err
    assert cli.main(["sampling", "show", "--file", policy_file]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["policy"]["default_rate"] == 0.2
    assert len(shown["changes"]) == 1


def test_cli_needs_a_location(workdir, capsys):
    empty = os.path.join(workdir, "agent.conf")
    open(empty, "w").write("[agent]\n")
    assert cli.main(["sampling", "show", "--agent-config", empty]) == 1
    assert "no policy location" in capsys.readouterr().err


def test_agent_refuses_two_policy_sources(agents, workdir):
    agent = agents(["file://" + os.path.join(workdir, "out")],
                   sampling_policy_file=os.path.join(workdir, "p.json"),
                   sampling_policy_store="redis://127.0.0.1:6379/0")
    agent.start(wait=False)
    assert agent.proc.wait(20) == 2
    assert "sampling_policy_file or sampling_policy_store, not both" in \
        agent.log_tail()


@pytest.fixture
def served(workdir):
    """An agent's policy socket serving the last of ``replies``: yields
    (the agent's ``agent://`` address, replies)."""
    listen = os.path.join(workdir, "agent.sock")
    replies = [policy_mod.Policy(default_rate=0.4).dumps()]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen + policy_mod.SOCKET_SUFFIX)
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(replies[-1].encode())

    threading.Thread(target=serve, daemon=True).start()
    yield "agent://" + listen, replies
    server.close()


def test_follower_parses_a_reply_only_when_it_changed(served, monkeypatch):
    """Every poll reads the agent's reply, but a service parses and
    applies it only when it changed: an idle armed service's poll is a
    read and a comparison."""
    url, replies = served
    parsed = []
    loads = policy_mod.loads
    monkeypatch.setattr(policy_mod, "loads",
                        lambda text: parsed.append(text) or loads(text))
    policy_client.follow("noop://", {"service": "api"})  # the base
    follower = policy_client.Follower(policy_client.policy_path(url))
    for _ in range(3):
        follower.poll()
    assert settings.current.sampling_rate == 0.4
    assert len(parsed) == 1
    replies.append(policy_mod.Policy(default_rate=0.6).dumps())
    follower.poll()
    follower.poll()
    assert settings.current.sampling_rate == 0.6
    assert len(parsed) == 2
    replies.append("{not json")           # kept, and tried again
    follower.poll()
    follower.poll()
    assert settings.current.sampling_rate == 0.6
    assert len(parsed) == 4


def test_eventlet_service_follows_in_an_os_thread(served):
    """In a service eventlet patched, the follower is an OS thread of its
    own reading an unpatched socket: its polls never go through the hub
    (where each cost about 25 times as much), and it still applies the
    agent's policy."""
    pytest.importorskip("eventlet")
    url, _ = served
    script = textwrap.dedent("""
        import eventlet
        eventlet.monkey_patch()
        import time
        from eventlet import patcher
        from stacktrail import policy_client
        from stacktrail.common import settings
        policy_client.follow(%r, {"service": "api"})
        deadline = time.monotonic() + 10
        while settings.current.sampling_rate != 0.4:
            assert time.monotonic() < deadline, "policy not applied"
            eventlet.sleep(0.02)
        print(sorted(t.name for t in patcher.original("threading")
                     .enumerate() if t.name.startswith("stacktrail")))
    """) % url
    assert fresh_process.output(script).strip() == \
        "['stacktrail-policy-follower']"
