"""What the agent costs idle and at a low rate, and that its timers and
acknowledgements still work now that its threads sleep until needed."""

import os
import signal
import threading
import time

from stacktrail.agent import opts
from stacktrail.agent import service
from stacktrail.agent import spool as spool_mod
from stacktrail.agent import writer as writer_mod
from tests.agent import harness


def _wakeups(pid):
    """Times the threads of ``pid`` went to sleep and were woken."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, task)) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def test_an_idle_agent_sleeps(agents, redis_url):
    """Nothing sent: no thread polls (it used to wake ~16 times a second),
    and the status socket, a connected service and SIGTERM are still
    served at once."""
    agent = agents([redis_url], flush_interval=0.05).start()
    harness.send(agent.url, harness.make_points(10))   # a service connects
    agent.wait_written(10)
    time.sleep(1.5)   # the spool's fsync (1 s after the frame) is done
    before = _wakeups(agent.proc.pid)
    time.sleep(3.0)
    assert _wakeups(agent.proc.pid) - before <= 3
    assert agent.status()["written"] == 10   # answers after a long sleep
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 3.0


def test_idle_connections_still_time_out(agents, redis_url):
    agent = agents([redis_url], idle_timeout=1).start()
    harness.send(agent.url, harness.make_points(10))
    agent.wait_written(10)
    harness.wait_for(lambda: agent.status()["connections"] == 0, 5,
                     what="the idle connection closed")
    assert agent.status()["refused"]["idle_timeout"] == 1


def _in_process_agent(workdir, redis_url, *options):
    conf = opts.make_conf([
        "--agent-listen", "unix://%s/a.sock" % workdir,
        "--agent-spool_dir", os.path.join(workdir, "spool"),
        "--agent-connection_string", redis_url] + list(options))
    agent = service.Agent(conf)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread


def test_fsync_and_segment_collection_still_happen(workdir, redis_url):
    """The main thread sleeps without a timeout while idle; the first frame
    wakes it, the spool is fsync-ed within spool_fsync_interval and
    acknowledged segments are deleted."""
    agent, thread = _in_process_agent(
        workdir, redis_url, "--agent-spool_fsync_interval", "0.3",
        "--agent-spool_max_bytes", str(1 << 20), "--agent-flush_interval",
        "0.05")
    try:
        time.sleep(0.5)   # idle: the main thread waits for a frame
        url = "agent://%s/a.sock" % workdir
        batch = harness.make_points(6000)   # several 128 KiB segments
        for start in range(0, len(batch), 500):
            harness.send(url, batch[start:start + 500])
        harness.wait_for(lambda: agent.snapshot()["written"] == 6000, 20,
                         what="points written")
        harness.wait_for(lambda: agent.spool.closed_segments == 0, 3,
                         what="acknowledged segments deleted")
        assert agent.spool.oldest > 0, agent.spool.head   # there were some
        harness.wait_for(lambda: not agent.spool.unsynced, 1.5,
                         what="the spool fsync-ed")
        # the writer's offset is on disk and is the spool's head
        key = writer_mod.backend_key(redis_url)
        assert agent.spool._read_ack_file(agent.spool._ack_path(key)) == \
            agent.spool.head
    finally:
        agent.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_acknowledged_points_are_not_written_again(agents, redis_url):
    """Offsets are rewritten in place after each batch: a restart (even
    after SIGKILL) replays nothing that was acknowledged."""
    agent = agents([redis_url]).start()
    first = harness.make_points(300)
    for start in range(0, 300, 100):
        harness.send(agent.url, first[start:start + 100])
        agent.wait_written(start + 100)
    time.sleep(0.3)   # the offset is saved just after "written" counts
    agent.stop(signal.SIGKILL)
    agent.start()
    second = harness.make_points(100)
    harness.send(agent.url, second)
    agent.wait_written(100)
    time.sleep(0.3)
    assert agent.status()["written"] == 100
    assert sorted(harness.stored_points(redis_url)) == \
        harness.expected_points(first + second)
    assert agent.stop() == 0


def test_offsets_rewritten_in_place(tmp_path):
    spool = spool_mod.Spool(str(tmp_path / "s"), 1 << 30)
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    os.symlink(victim, tmp_path / "s" / "ack-k")   # replaced, not followed
    spool.save_ack("k", 1000)
    assert victim.read_text() == "keep me\n"
    assert not os.path.islink(tmp_path / "s" / "ack-k")
    spool.save_ack("k", 123456)
    assert (tmp_path / "s" / "ack-k").read_text() == "123456\n"
    spool.save_ack("k", 99)   # backwards: no digit of the old one left
    assert (tmp_path / "s" / "ack-k").read_text() == "99\n"
    spool.forget({"other"})   # a removed backend's offset goes
    assert not os.path.exists(tmp_path / "s" / "ack-k")
    spool.save_ack("k", 7)
    spool.close()
    again = spool_mod.Spool(str(tmp_path / "s"), 1 << 30)
    assert again._read_ack_file(again._ack_path("k")) == 7
    again.close()


def test_a_waiting_writer_is_woken_only_for_a_full_batch():
    writer = writer_mod.Writer("redis://127.0.0.1:1/0", harness.IdleSpool(),
                               100, 0.2, 1.0)
    # not waiting for a batch: woken
    writer.offer(harness.spool_record(0, 10))
    assert writer._wake.is_set()
    writer._wake.clear()
    writer._room = 90                 # holds 10, waits for 90 more
    writer.offer(harness.spool_record(10, 50))
    assert not writer._wake.is_set()  # taken when the wait ends
    writer.offer(harness.spool_record(20, 40))
    assert writer._wake.is_set()      # the batch is full: write now
