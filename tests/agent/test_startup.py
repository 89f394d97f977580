"""Starting and stopping the real ``stacktrail-agent`` console script: a
configuration it refuses is one line and exit 2 with nothing left behind;
a good one logs where it listens and writes, and what it did at stop; the
configured group may use its sockets."""

import grp
import json
import os
import signal
import socket
import stat
import subprocess
import urllib.request

import pytest

from tests.agent import harness

STACKTRAIL = os.path.join(os.path.dirname(harness.AGENT), "stacktrail")


def _unwritable_parent(workdir):
    """A directory the agent cannot create anything in."""
    if os.geteuid() == 0:
        return "/sys"   # read-only even for root
    path = os.path.join(workdir, "readonly")
    os.mkdir(path, 0o500)
    return path


def _busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.fixture
def busy_port():
    sock = _busy_port()
    yield sock.getsockname()[1]
    sock.close()


def _refused(workdir, *args):
    """Run the agent with ``args`` over a good configuration; it must exit
    2 with one line on stderr and leave no socket behind."""
    socket_path = os.path.join(workdir, "run", "a.sock")
    spool = os.path.join(workdir, "spool")
    command = [harness.AGENT, "--agent-listen", "unix://" + socket_path,
               "--agent-spool_dir", spool, "--agent-connection_string",
               "file://%s/traces.jsonl" % workdir] + list(args)
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=30)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("stacktrail-agent: ")
    assert not os.path.lexists(socket_path)
    assert not os.path.lexists(os.path.join(spool, "status.sock"))
    return lines[0]


def test_metrics_beyond_loopback_is_one_line(workdir):
    line = _refused(workdir, "--agent-metrics_listen", "0.0.0.0:9467")
    assert "metrics_listen 0.0.0.0:9467" in line and "loopback" in line


def test_metrics_port_in_use_is_one_line(workdir, busy_port):
    line = _refused(workdir, "--agent-metrics_listen",
                    "127.0.0.1:%d" % busy_port)
    assert "127.0.0.1:%d" % busy_port in line
    assert "Address already in use" in line


def test_listen_port_in_use_is_one_line(workdir, busy_port):
    line = _refused(workdir, "--agent-listen",
                    "tcp://127.0.0.1:%d" % busy_port)
    assert "cannot listen on tcp://127.0.0.1:%d" % busy_port in line


def test_bad_listen_address_is_one_line(workdir):
    line = _refused(workdir, "--agent-listen", "unix://relative.sock")
    assert "must be absolute" in line


def test_unwritable_spool_dir_is_one_line(workdir):
    spool = os.path.join(_unwritable_parent(workdir), "st-spool")
    line = _refused(workdir, "--agent-spool_dir", spool)
    assert "spool_dir %s" % spool in line
    assert not os.path.exists(spool)


def test_unwritable_socket_dir_is_one_line(workdir):
    path = os.path.join(_unwritable_parent(workdir), "st-run", "a.sock")
    line = _refused(workdir, "--agent-listen", "unix://" + path)
    assert "cannot listen on unix://%s" % path in line
    assert not os.path.exists(os.path.dirname(path))


def test_unknown_socket_group_is_one_line(workdir):
    line = _refused(workdir, "--agent-socket_group", "st-no-such-group")
    assert "socket_group 'st-no-such-group': no such group" in line


def test_start_and_stop_are_logged_with_masked_stores(agents, workdir):
    store = os.path.join(workdir, "traces.jsonl")
    secret_store = "redis://:s3cret@127.0.0.1:1/0"   # down: retried
    agent = agents(["file://" + store, secret_store],
                   metrics_listen="127.0.0.1:%d" % harness.free_port(),
                   shutdown_timeout=0.5).start()
    from stacktrail import __version__
    # written just after the sockets are bound, which start() waits for
    harness.wait_for(lambda: any("listening on" in line
                                 for line in agent.log_lines()),
                     10, what="the agent's start line")
    start = [line for line in agent.log_lines() if "listening on" in line]
    assert len(start) == 1, agent.log_tail()
    assert __version__ in start[0] and agent.listen in start[0]
    assert "file://%s" % store in start[0]
    assert "redis://:***@127.0.0.1:1/0" in start[0]

    # status and metrics name each backend as configured, password masked
    names = {b["connection_string"] for b in agent.status()["backends"]}
    assert names == {"file://" + store, "redis://:***@127.0.0.1:1/0"}
    url = "http://%s/metrics" % agent.options["metrics_listen"]
    with urllib.request.urlopen(url, timeout=5) as reply:
        metrics = reply.read().decode()
    assert 'connection_string="redis://:***@127.0.0.1:1/0"' in metrics
    assert "s3cret" not in metrics + json.dumps(agent.status())

    harness.send(agent.url, harness.make_points(40))
    harness.wait_for(lambda: any(b["written"] == 40 for b in
                                 agent.status()["backends"]),
                     what="40 points written to the file")
    assert agent.stop() == 0
    stop = [line for line in agent.log_lines() if "stopped" in line]
    assert len(stop) == 1, agent.log_tail()
    assert "40 points received, 40 written, 0 dropped" in stop[0]
    assert "s3cret" not in "\n".join(agent.log_lines())


def _mode_and_gid(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_socket_group_members_may_send_and_read_status(agents):
    """With the user's own group as socket_group, the sockets are 0660 of
    that group and the spool directory 0750: what members need."""
    gid = os.getgid()
    agent = agents(["file:///dev/null"],
                   socket_group=grp.getgrgid(gid).gr_name).start()
    socket_path = agent.listen[len("unix://"):]
    assert _mode_and_gid(socket_path) == (0o660, gid)
    assert _mode_and_gid(os.path.join(agent.spool_dir, "status.sock")) == \
        (0o660, gid)
    assert _mode_and_gid(agent.spool_dir) == (0o750, gid)
    done = subprocess.run([STACKTRAIL, "agent", "status", "--config-file",
                           agent.conf_path], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"


def test_without_a_group_only_the_agents_user_may(agents):
    agent = agents(["file:///dev/null"]).start()
    assert _mode_and_gid(agent.listen[len("unix://"):])[0] == 0o600
    assert _mode_and_gid(os.path.join(agent.spool_dir, "status.sock"))[0] \
        == 0o600
    assert _mode_and_gid(agent.spool_dir)[0] == 0o700
    agent.send_signal(signal.SIGTERM)
    assert agent.proc.wait(20) == 0


def test_a_group_the_agents_user_is_not_in_is_refused(monkeypatch):
    """Only root may give its sockets to a group it is not in: for any
    other user such a socket_group is a configuration error, said first."""
    from stacktrail.agent import opts
    group = grp.getgrgid(os.getgid())
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getegid", lambda: group.gr_gid + 1)
    monkeypatch.setattr(os, "getgroups", lambda: [group.gr_gid + 1])
    with pytest.raises(ValueError, match="the agent's user is not in it"):
        opts.socket_gid(group.gr_name)
    monkeypatch.setattr(os, "getgroups", lambda: [group.gr_gid])
    assert opts.socket_gid(group.gr_name) == group.gr_gid


def _priorities(pid):
    """{thread id: (nice, scheduling policy)} of every thread of ``pid``."""
    found = {}
    for task in os.listdir("/proc/%d/task" % pid):
        tid = int(task)
        try:
            found[tid] = (os.getpriority(os.PRIO_PROCESS, tid),
                          os.sched_getscheduler(tid))
        except OSError:     # a thread that just ended
            pass
    return found


@pytest.mark.parametrize("nice, started_at, expected", [
    (None, 0, (10, os.SCHED_BATCH)),      # the default: services first
    (5, 15, (15, os.SCHED_BATCH)),        # never raised above its start
    (0, 0, (0, os.SCHED_OTHER)),          # 0: left as it was started
])
def test_the_agent_yields_the_cpu_to_the_services(agents, workdir, nice,
                                                  started_at, expected):
    store = os.path.join(workdir, "traces.jsonl")
    options = {} if nice is None else {"nice": nice}
    agent = agents(["file://" + store], **options).start(
        preexec_fn=(lambda: os.nice(started_at)) if started_at else None)
    harness.send(agent.url, harness.make_points(20))
    harness.wait_for(lambda: agent.status()["backends"][0]["written"] == 20,
                     what="20 points written")
    threads = _priorities(agent.proc.pid)
    assert len(threads) > 1    # the listener and writer threads too
    assert set(threads.values()) == {expected}, threads
