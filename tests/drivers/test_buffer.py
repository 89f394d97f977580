"""BufferedSink: bounded, never blocks or raises, survives fork and exit."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from stacktrail.common import buffer
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base


class Recorder(base.Driver):
    """Keeps batches; ``gate`` (an Event) holds writes; ``fail`` raises."""

    def __init__(self, gate=None):
        super().__init__("recorder://")
        self.batches = []
        self.gate = gate
        self.fail = None
        self.forked = 0

    def write_points(self, batch):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(batch))

    def after_fork(self):
        self.forked += 1

    @property
    def count(self):
        return sum(len(b) for b in self.batches)


def _point(i=0):
    return ("p%d" % i, points.START, 1, 1, ids.new_id(), time.time_ns(),
            None)


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_flush_writes_in_batches():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, batch_size=7, interval=60)
    for i in range(50):
        sink.put(_point(i))
    assert sink.flush(5)
    assert driver.count == 50
    assert max(len(b) for b in driver.batches) <= 7
    assert [p[0] for b in driver.batches for p in b] == \
        ["p%d" % i for i in range(50)]  # order kept
    assert sink.stats() == {"queued": 50, "written": 50, "dropped": 0,
                            "errors": 0, "buffered": 0}
    sink.close()


def test_interval_wakes_the_flusher():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, batch_size=1000, interval=0.02)
    sink.put(_point())
    assert _wait(lambda: driver.count == 1, 2)
    sink.close()


def test_idle_flusher_sleeps_until_the_next_point(monkeypatch):
    """Between traces the flusher does not wake every interval (a service
    traced now and then pays nothing meanwhile); the next burst of points
    wakes it, and still reaches the store as one batch an interval later."""
    driver = Recorder()
    sink = buffer.BufferedSink(driver, batch_size=1000, interval=0.05)
    rounds = []
    report = sink._report
    monkeypatch.setattr(sink, "_report",
                        lambda: rounds.append(1) or report())
    sink.put(_point(0))
    assert _wait(lambda: driver.count == 1, 2)
    time.sleep(0.1)
    before = len(rounds)
    time.sleep(0.5)                  # ten intervals, nothing to write
    assert len(rounds) - before <= 1
    for i in range(1, 4):
        sink.put(_point(i))
    assert _wait(lambda: driver.count == 4, 2)
    assert [len(b) for b in driver.batches] == [1, 3]
    sink.close()


def test_full_batch_wakes_the_flusher_early():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, batch_size=10, interval=60)
    for i in range(10):
        sink.put(_point(i))
    assert _wait(lambda: driver.count == 10, 2)
    sink.close()


def test_bounded_drop_and_count_never_blocks():
    gate = threading.Event()
    driver = Recorder(gate)  # the store hangs until the gate opens
    sink = buffer.BufferedSink(driver, max_points=100, batch_size=10,
                               interval=0.001)
    sink.put(_point())
    assert _wait(lambda: len(sink._buffer) == 0)  # the flusher holds it
    started = time.perf_counter()
    for i in range(1000):
        sink.put(_point(i))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, "put blocked on a hung store"
    assert sink.dropped == 900 and len(sink._buffer) == 100
    gate.set()
    assert sink.flush(5)
    assert driver.count == 101 and sink.queued == 101
    sink.close()


def test_store_errors_logged_once_per_burst(caplog):
    driver = Recorder()
    driver.fail = ConnectionError("store down\nsecond line with details")
    sink = buffer.BufferedSink(driver, batch_size=10, interval=60)
    for i in range(100):
        sink.put(_point(i))
    assert sink.flush(5) is False  # nothing raised, delivery reported
    assert sink.errors == 10 and sink.dropped == 100
    warnings = [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "store down" in warnings[0] and "second line" not in warnings[0]
    driver.fail = None
    sink.put(_point())
    assert sink.flush(5)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "back" in warnings[1]
    assert sink.written == 1
    sink.close()


def test_failing_store_backs_off():
    driver = Recorder()
    driver.fail = RuntimeError("down")
    calls = []
    original = driver.write_points

    def counting(batch):
        calls.append(time.monotonic())
        original(batch)

    driver.write_points = counting
    sink = buffer.BufferedSink(driver, batch_size=1, interval=0.001)
    for i in range(50):
        sink.put(_point(i))
    time.sleep(0.5)
    # Without backoff the flusher would have tried all 50 at once.
    assert 1 <= len(calls) < 10
    sink.close(0.1)


def test_osprofiler_message_door():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, interval=60)
    base_id = ids.to_uuid(ids.new_id())
    sink({"name": "db-start", "base_id": base_id, "parent_id": base_id,
          "trace_id": ids.to_uuid(ids.new_id()),
          "timestamp": "2024-01-02T03:04:05.000006", "info": {"a": 1}})
    sink({"garbage": True})  # counted, never raised
    assert sink.flush(5)
    (point,), = driver.batches
    assert point[0] == "db" and point[1] == points.START
    assert sink.dropped == 1


def test_close_then_reuse():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, interval=0.01)
    sink.put(_point())
    assert sink.close(5)
    sink.put(_point())  # a cached sink keeps working after close
    assert _wait(lambda: driver.count == 2, 2)
    sink.close()


def test_flusher_is_a_daemon_thread():
    sink = buffer.BufferedSink(Recorder(), interval=60)
    sink.put(_point())
    assert sink._thread.daemon and sink._thread.name == "stacktrail-flusher"
    sink.close()


def test_fork_child_owns_its_points(tmp_path):
    """The child neither rewrites the parent's buffer nor loses its own."""
    path = tmp_path / "t.jsonl"
    driver = base.get_driver("file://%s" % path)
    sink = buffer.BufferedSink(driver, interval=0.02)
    sink._flush_lock.acquire()  # parent's points stay buffered over fork
    for i in range(5):
        sink.put(("parent", points.START, 1, 1, i + 1, time.time_ns(),
                  None))
    pid = os.fork()
    if pid == 0:  # child: lock and buffer were reset by the at-fork hook
        status = 1
        try:
            for i in range(3):
                sink.put(("child", points.START, 1, 1, i + 1,
                          time.time_ns(), None))
            # no explicit flush: the child's own flusher thread delivers
            deadline = time.monotonic() + 5
            while sink.written < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            status = 0 if sink.written == 3 else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    sink._flush_lock.release()
    assert sink.flush(5)
    assert os.waitstatus_to_exitcode(status) == 0
    names = [json.loads(line)["name"] for line in path.read_text().split()]
    assert sorted(names) == ["child-start"] * 3 + ["parent-start"] * 5
    sink.close()


def test_fork_tells_the_driver():
    driver = Recorder()
    sink = buffer.BufferedSink(driver, interval=60)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if driver.forked == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert driver.forked == 0
    sink.close()


def _run(script, timeout=30, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
        text=True, timeout=timeout, cwd=os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))),
        env=dict(os.environ, **(env or {})))


def test_exit_flushes_pending_points(tmp_path):
    path = tmp_path / "t.jsonl"
    result = _run("""
        import time
        from stacktrail.common import buffer, points
        from stacktrail.drivers import base
        sink = buffer.BufferedSink(base.get_driver("file://%s"), interval=60)
        for i in range(10):
            sink.put(("x", points.START, 1, 1, i + 1, time.time_ns(), None))
    """ % path)
    assert result.returncode == 0, result.stderr
    assert len(path.read_text().splitlines()) == 10


def test_exit_deadline_with_hung_store():
    result = _run("""
        import threading, time
        from stacktrail.common import buffer, points
        from stacktrail.drivers import base

        class Hung(base.Driver):
            def write_points(self, batch):
                threading.Event().wait(60)

        sink = buffer.BufferedSink(Hung("hung://"), batch_size=1,
                                   interval=0.001)
        for i in range(10):
            sink.put(("x", points.START, 1, 1, i + 1, time.time_ns(), None))
        time.sleep(0.1)
        started = time.monotonic()
        import atexit
        atexit.register(lambda: print("left %.1f" % (time.monotonic()
                                                     - started)))
    """)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < 3.0


def test_first_point_made_while_the_interpreter_finalizes_does_not_hang(
        tmp_path):
    """Traced code run by a finalizer at exit (an object in a reference
    cycle, closed by the interpreter's last collection) makes the
    process's first point: a flusher started then never runs (Python 3.11
    lets it die without a word), and waiting for it hung the exit for
    ever.  Seen in Zaqar's own SQLAlchemy storage tests, traced."""
    result = _run("""
        import gc, time
        from stacktrail.common import buffer, points
        from stacktrail.drivers import base

        class ClosedAtExit:
            def __init__(self, sink):
                self.put = sink.put
                self.cycle = self

            def __del__(self):
                self.put(("close", points.START, 1, 1, 2, time.time_ns(),
                          None))

        gc.collect()   # the cycle below waits for the collection at exit
        ClosedAtExit(buffer.BufferedSink(base.get_driver("file://%s")))
        print("done")
    """ % (tmp_path / "t.jsonl"), timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done"]
    assert "Traceback" not in result.stderr   # put raised nothing either


EVENTLET_SCRIPT = """
    import eventlet
    eventlet.monkey_patch()
    import os, threading, time
    from eventlet import patcher
    from stacktrail.common import buffer, points
    from stacktrail.drivers import base
    real = patcher.original("threading")
    real_time = patcher.original("time")
    seen = {}

    class Slow(base.Driver):
        def write_points(self, batch):
            seen["native"] = real.get_native_id()
            real_time.sleep(0.5)   # blocks this OS thread only
            self.inner.write_points(batch)

    driver = Slow("slow://")
    driver.inner = base.get_driver(os.environ["TARGET"])
    sink = buffer.BufferedSink(driver, batch_size=5, interval=0.01)
    ticks = []

    def ticker():
        begin = time.monotonic()
        for _ in range(40):
            ticks.append(1)
            eventlet.sleep(0.01)
        # 0.4 s if the hub runs freely; 2 s or more if the four 0.5 s
        # writes blocked it.
        ticks.append(time.monotonic() - begin)

    gt = eventlet.spawn(ticker)
    started = time.monotonic()
    for i in range(20):
        sink.put(("green", points.START, 1, 1, i + 1, time.time_ns(), None))
    put_time = time.monotonic() - started
    gt.wait()
    assert sink.flush(10), sink.stats()
    assert seen["native"] != real.get_native_id(), "flusher not an OS thread"
    assert put_time < 0.1, put_time
    assert ticks[-1] < 1.2, ticks[-1]
    print("ok", sink.written)
"""


def test_eventlet_flusher_is_a_real_thread(tmp_path):
    pytest.importorskip("eventlet")
    result = _run(EVENTLET_SCRIPT, env={
        "TARGET": "file://%s" % (tmp_path / "t.jsonl")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "20"]


def test_eventlet_with_redis(redis_url):
    pytest.importorskip("eventlet")
    result = _run(EVENTLET_SCRIPT, env={"TARGET": redis_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "20"]


def test_put_is_cheap():
    """Not a benchmark: catches an accidental lock or format on put."""
    sink = buffer.BufferedSink(Recorder(), max_points=10**6,
                               batch_size=10**6, interval=60)
    point = _point()
    sink.put(point)
    started = time.perf_counter()
    for _ in range(100_000):
        sink.put(point)
    per_put = (time.perf_counter() - started) / 100_000
    assert per_put < 5e-6, per_put
    sink._buffer.clear()
    sink.close()


def test_unreachable_store_through_the_notifier(caplog):
    from stacktrail import notifier
    caplog.set_level(logging.WARNING)
    made = notifier.create("redis://127.0.0.1:1/0")
    made.put(_point())
    assert made.flush(2) is False
    notifier.clear_notifier_cache()
    made.close(1)
