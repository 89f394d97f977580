"""The agent as a real subprocess, with real Redis servers."""

import os
import signal
import socket
import subprocess
import time

from stacktrail.agent import protocol
from stacktrail.common import ids
from tests.agent import harness


def test_delivery_batching_and_status(agents, redis_url):
    agent = agents([redis_url], batch_size=1000, flush_interval=0.2).start()
    batch = harness.make_points(4000)
    sink = harness.send(agent.url, batch)
    assert sink.dropped == 0
    status = agent.wait_written(4000)
    assert sorted(harness.stored_points(redis_url)) == \
        harness.expected_points(batch)
    assert status["received"] == 4000 and status["dropped"] == {}
    (backend,) = status["backends"]
    assert backend["writes"] <= 10   # batched, not one write per point
    for name in ("received", "written", "dropped", "spooled",
                 "backend_errors", "lag"):
        assert name in status
    # the CLI prints the same JSON from the config file alone
    out = subprocess.run(
        [harness.sys.executable, "-m", "stacktrail.agent.status",
         "--config-file", agent.conf_path], capture_output=True, text=True)
    assert out.returncode == 0 and '"written": 4000' in out.stdout
    assert agent.stop() == 0


def test_spool_replays_across_backend_outage(agents, throwaway_redis):
    store = throwaway_redis()
    agent = agents([store.url]).start()
    first = harness.make_points(200)
    harness.send(agent.url, first)
    agent.wait_written(200)
    store.stop()
    during = harness.make_points(2000)
    sink = harness.send(agent.url, during)
    assert sink.dropped == 0     # the agent keeps accepting
    harness.wait_for(lambda: agent.status()["backend_errors"] > 0, 10)
    status = agent.status()
    assert status["received"] == 2200 and status["written"] == 200
    assert status["status"] == "degraded" and status["spool_bytes"] > 0
    store.start()
    status = agent.wait_written(2200, timeout=20)
    assert status["spooled"] >= 2000
    assert sorted(harness.stored_points(store.url)) == \
        harness.expected_points(first + during)
    assert agent.stop() == 0


def test_spool_survives_agent_restart_and_sigterm_flushes(
        agents, throwaway_redis):
    store = throwaway_redis()
    store.stop()
    agent = agents([store.url], shutdown_timeout=1).start()
    batch = harness.make_points(1000)
    harness.send(agent.url, batch)
    harness.wait_for(lambda: agent.status()["received"] == 1000, 10)
    assert agent.stop() == 0     # within the deadline, spool kept
    store.start()
    agent.start()                # replays the spool
    agent.wait_written(1000)
    assert sorted(harness.stored_points(store.url)) == \
        harness.expected_points(batch)
    # SIGTERM flushes what waits for a fuller batch
    agent.stop()
    agent.options.update(batch_size=100000, flush_interval=60)
    agent.write_config([store.url])
    agent.start()
    more = harness.make_points(300)
    harness.send(agent.url, more)
    harness.wait_for(lambda: agent.status()["received"] == 300, 10)
    assert agent.status()["written"] == 0
    t = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t < 5
    assert sorted(harness.stored_points(store.url)) == \
        harness.expected_points(batch + more)


def _raw(path, data):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(data)
    sock.close()


def test_hostile_input_is_dropped_and_counted(agents, redis_url):
    agent = agents([redis_url], max_frame_bytes=65536).start()
    path = agent.listen[len("unix://"):]
    _raw(path, os.urandom(5000))
    _raw(path, protocol.HEADER.pack(protocol.MAGIC, 1 << 30) + b"x" * 100)
    _raw(path, protocol.frame(b'["p","s","h",[["n",0,"a","b","c",1,5]]]'))
    _raw(path, protocol.frame(b"{not json"))
    _raw(path, protocol.frame(b"[1]")[:6])            # torn
    frames, _ = protocol.encode_batch(harness.make_points(10), "p", "s", "h")
    _raw(path, b"".join(f for f, _ in frames))       # a good one still works
    agent.wait_written(10)
    dropped = agent.status()["dropped"]
    assert dropped["oversized"] == 1
    assert dropped["malformed"] == 3
    assert dropped["truncated"] == 1
    assert agent.proc.poll() is None


def test_udp_garbage_datagrams(agents, redis_url):
    port = harness.free_port()
    agent = agents([redis_url], listen="udp://127.0.0.1:%d" % port).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):
        sock.sendto(os.urandom(300), ("127.0.0.1", port))
    sock.sendto(protocol.frame(b"x" * 100)[:50], ("127.0.0.1", port))
    batch = harness.make_points(100)
    harness.send(agent.url, batch)
    agent.wait_written(100)
    assert sorted(harness.stored_points(redis_url)) == \
        harness.expected_points(batch)
    assert agent.status()["dropped"]["malformed"] == 51


def test_refuses_non_loopback_and_bad_backend(workdir):
    for args, message in (
            (["--agent-listen", "tcp://0.0.0.0:6832"], "loopback"),
            (["--agent-listen", "unix://%s/a.sock" % workdir,
              "--agent-connection_string", "nosuch://x"], "scheme")):
        out = subprocess.run(
            [harness.AGENT, "--agent-spool_dir", workdir + "/spool",
             "--agent-connection_string", "redis://127.0.0.1:1"] + args,
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 2
        assert message in out.stderr and "Traceback" not in out.stderr


def test_one_backend_down_does_not_stall_another_and_sighup(
        agents, redis_url, throwaway_redis, workdir):
    down = throwaway_redis()
    down.stop()
    agent = agents([down.url, redis_url]).start()
    batch = harness.make_points(500)
    harness.send(agent.url, batch)
    harness.wait_for(lambda: sorted(harness.stored_points(redis_url))
                     == harness.expected_points(batch), 10)
    states = {b["connection_string"]: b["state"]
              for b in agent.status()["backends"]}
    assert states[down.url] == "retrying" and states[redis_url] == "ok"
    # SIGHUP: drop the dead backend, add a file backend
    path = os.path.join(workdir, "traces.jsonl")
    agent.write_config([redis_url, "file://" + path])
    agent.send_signal(signal.SIGHUP)
    harness.wait_for(lambda: len(agent.status()["backends"]) == 2 and all(
        b["state"] == "ok" for b in agent.status()["backends"]), 10)
    more = harness.make_points(100)
    harness.send(agent.url, more)
    harness.wait_for(lambda: os.path.exists(path) and
                     len(open(path).read().splitlines()) >= 100, 10)
    assert agent.stop() == 0


def test_otlp_leg_to_a_collector(agents, redis_url):
    from tests.otlp_receiver import OTLPReceiver
    with OTLPReceiver() as receiver:
        agent = agents([redis_url, receiver.connection_string]).start()
        batch = harness.make_points(40)
        harness.send(agent.url, batch)
        receiver.wait_for_spans(20, timeout=15)
        spans = receiver.spans()
        assert {s.span_id.hex() for s in spans} == {
            ids.span_id_hex(p[4]) for p in batch}
        assert agent.stop() == 0
