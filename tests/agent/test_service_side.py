"""The service side (``agent://``): never blocks, never raises, counts."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from stacktrail.drivers import base
from tests.agent import harness


def test_agent_down_costs_nothing_and_is_counted(workdir):
    driver = base.get_driver("agent://%s/none.sock" % workdir)
    sink = driver.make_sink()
    batch = harness.make_points(20000)
    t = time.perf_counter()
    for point in batch:
        sink.put(point)             # request path: never raises
    put_cost = (time.perf_counter() - t) / len(batch)
    assert put_cost < 20e-6
    t = time.perf_counter()
    assert sink.flush(5) is False   # delivered nothing, and said so
    assert time.perf_counter() - t < 5
    assert sink.dropped == 20000
    assert driver.stats()["drops"]["agent_unavailable"] > 0
    sink.close(1)


def test_an_unavailable_agent_is_named_with_the_real_cause(workdir):
    # what the outage's log line says: a socket that is not there (no
    # agent started) is not one that refused (an agent gone)
    import errno
    import socket

    import pytest
    from stacktrail.drivers import agent
    missing = base.get_driver("agent://%s/none.sock" % workdir)
    batch = harness.make_points(4)
    with pytest.raises(agent.AgentUnavailable) as raised:
        missing.write_points(batch)
    assert raised.value.errno == errno.ENOENT
    assert "none.sock unavailable: No such file or directory (is " \
        "stacktrail-agent running?)" in str(raised.value)
    assert raised.value.unsent == batch       # kept, to be sent again
    path = os.path.join(workdir, "gone.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.close()                          # the file stays, no agent
    gone = base.get_driver("agent://" + path)
    with pytest.raises(agent.AgentUnavailable) as raised:
        gone.write_points(harness.make_points(3))
    assert raised.value.errno == errno.ECONNREFUSED
    assert "Connection refused" in str(raised.value)


def test_write_points_never_blocks_on_a_stuck_agent(workdir):
    import socket
    path = os.path.join(workdir, "stuck.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)                # accepts, never reads
    driver = base.get_driver("agent://" + path)
    batch = harness.make_points(2000)
    worst = 0.0
    failures = 0
    for _ in range(300):
        t = time.perf_counter()
        try:
            driver.write_points(batch)
        except OSError:
            failures += 1
        worst = max(worst, time.perf_counter() - t)
    assert failures > 0 and driver.stats()["dropped"] > 0
    assert worst < 0.5              # bounded by the send timeout
    server.close()


def test_agent_restart_reconnects(agents, redis_url):
    agent = agents([redis_url]).start()
    driver = base.get_driver(agent.url)
    sink = driver.make_sink()
    first = harness.make_points(100)
    for p in first:
        sink.put(p)
    assert sink.flush(5)
    # once the agent has the points they survive even SIGKILL (spool);
    # what sits in the socket at the kill is the bounded in-flight loss
    harness.wait_for(lambda: agent.status()["received"] == 100, 5)
    agent.stop(signal.SIGKILL)
    lost = harness.make_points(100)
    for p in lost:
        sink.put(p)
    sink.flush(2)
    agent.start()
    again = harness.make_points(100)

    def delivered():
        for p in again:
            sink.put(p)
        sink.flush(2)
        stored = set(harness.stored_points(redis_url))
        return set(harness.expected_points(again)) <= stored

    harness.wait_for(delivered, 15, interval=0.3)
    stored = set(harness.stored_points(redis_url))
    assert set(harness.expected_points(first)) <= stored
    sink.close(1)


FORKED = textwrap.dedent("""
    import os, sys
    from stacktrail.drivers import base
    from tests.agent import harness
    sink = base.get_driver(sys.argv[1], project="nova",
                           service="api").make_sink()
    sink.put(harness.make_points(2)[0])    # parent starts its flusher
    sink.flush(5)
    children = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:
            for p in harness.make_points(1000):
                sink.put(p)
            ok = sink.flush(10)
            os._exit(0 if ok and sink.dropped == 0 else 3)
        children.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    sys.exit(1 if any(codes) else 0)
""")


def test_forked_workers_each_deliver(agents, redis_url):
    agent = agents([redis_url]).start()
    out = subprocess.run([sys.executable, "-c", FORKED, agent.url],
                         cwd=harness.ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    agent.wait_written(1 + 3 * 1000)
    assert len(harness.stored_points(redis_url)) == 3001


EVENTLET = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import sys, time
    from stacktrail.drivers import base
    from tests.agent import harness
    sink = base.get_driver(sys.argv[1]).make_sink()
    points = harness.make_points(1000)
    def worker(chunk):
        for p in chunk:
            sink.put(p)
            eventlet.sleep(0)
    pool = eventlet.GreenPool()
    for i in range(10):
        pool.spawn(worker, points[i * 100:(i + 1) * 100])
    pool.waitall()
    sys.exit(0 if sink.flush(10) and sink.dropped == 0 else 1)
""")


def test_under_eventlet(agents, redis_url):
    agent = agents([redis_url]).start()
    out = subprocess.run([sys.executable, "-c", EVENTLET, agent.url],
                         cwd=harness.ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    agent.wait_written(1000)


def _old_agent(path, received):
    """An agent from before wire version 2: reads frames, never answers
    the hello, and knows only version 1 payloads."""
    import json
    import socket
    import threading
    from stacktrail.agent import protocol
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        reader = protocol.FrameReader()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            for payload in reader.feed(data):
                assert payload[:1] == b"["       # JSON: version 1
                received.extend(json.loads(payload)[3])
        conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_new_service_speaks_version_1_to_an_old_agent(workdir):
    # The node's services may be upgraded before its agent.
    received = []
    path = os.path.join(workdir, "old.sock")
    thread = _old_agent(path, received)
    driver = base.get_driver("agent://" + path)
    batch = harness.make_points(100)
    driver.write_points(batch)
    assert driver.wire_version == 1
    driver.close()
    thread.join(5)
    points = [p for p in received if p]       # the hello holds no points
    assert [tuple(p) for p in points] == [tuple(p) for p in batch]


def test_new_agent_stores_both_wire_versions_alike(agents, redis_url):
    # The agent may be upgraded before the services: it reads version 1
    # (here a service pinned to it) and stores the same messages.
    agent = agents([redis_url]).start()
    old = base.get_driver(agent.url + "?wire=1")
    new = base.get_driver(agent.url)
    first, second = harness.make_points(100), harness.make_points(100)
    old.write_points(first)
    new.write_points(second)
    assert (old.wire_version, new.wire_version) == (1, 2)
    agent.wait_written(200)
    assert sorted(harness.stored_points(redis_url)) == \
        harness.expected_points(first + second)
