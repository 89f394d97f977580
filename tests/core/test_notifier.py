"""osprofiler's notifier API: plain callables stay synchronous, connection
strings give sinks, and a broken notifier never reaches the traced code."""

import logging
import threading

import pytest

from stacktrail import notifier
from stacktrail import profiler
from stacktrail.common import sink


def _stacktrail_lines(caplog, level=logging.WARNING):
    return [r for r in caplog.records
            if r.name.startswith("stacktrail") and r.levelno >= level]


def _all_lines(caplog, level=logging.WARNING):
    """What an operator sees in the service log, whoever logged it."""
    return [r for r in caplog.records if r.levelno >= level]


def test_plain_callable_receives_formatted_dicts_synchronously():
    received = []

    def fn(message):
        received.append((threading.get_ident(), message))

    notifier.set(fn)
    assert notifier.get() is fn
    profiler.init("key")
    profiler.start("sync", info={"a": 1})
    # delivered before start() returned, on the caller's thread
    assert len(received) == 1
    ident, message = received[0]
    assert ident == threading.get_ident()
    assert message["name"] == "sync-start"
    assert message["info"]["a"] == 1
    assert isinstance(message["base_id"], str)
    assert isinstance(message["timestamp"], str)
    profiler.stop()
    assert [m["name"] for _, m in received] == ["sync-start", "sync-stop"]


def test_notify_passes_a_message_to_the_callable():
    received = []
    notifier.set(received.append)
    notifier.notify({"name": "x-start"})
    assert received == [{"name": "x-start"}]


def test_create_returns_a_callable_as_is():
    def fn(message):
        pass

    assert notifier.create(fn) is fn


def test_noop_connection_string_discards():
    noop = notifier.create("noop://")
    assert isinstance(noop, sink.Sink)
    notifier.set(noop)
    assert notifier.get() is noop
    prof = profiler.init("key")

    @profiler.trace("work", hide_result=False)
    def work():
        return 42

    assert work() == 42
    assert profiler.get() is prof  # tracing is on ...
    assert noop.dropped == 0       # ... and nothing was kept or failed
    assert noop.flush(1) is True


def test_unknown_scheme_logs_one_line_and_gives_a_noop(caplog):
    caplog.set_level(logging.DEBUG)
    made = notifier.create("nosuch://x")
    assert isinstance(made, sink.NoopSink)
    lines = _stacktrail_lines(caplog)
    assert len(lines) == 1
    assert "nosuch" in lines[0].getMessage()
    # one line in the log, not one of ours plus library noise
    assert len(_all_lines(caplog)) == 1, [
        r.getMessage() for r in _all_lines(caplog)]
    assert "\n" not in lines[0].getMessage() and lines[0].exc_info is None
    # the service keeps tracing calls without failing
    notifier.set(made)
    profiler.init("key")
    with profiler.Trace("x"):
        pass


@pytest.mark.parametrize("text", ["not a url", "", "://nothing"])
def test_garbage_connection_string_gives_a_noop(caplog, text):
    made = notifier.create(text)
    assert isinstance(made, sink.NoopSink)
    assert len(_stacktrail_lines(caplog)) == 1


def test_password_masked_in_the_log_line(caplog):
    notifier.create("nosuch://admin:hunter2@db.example:5432/traces")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text
    assert "admin" in text


def test_raising_callable_never_reaches_the_traced_code():
    calls = []

    def broken(message):
        calls.append(message["name"])
        raise RuntimeError("store down")

    notifier.set(broken)
    profiler.init("key")

    @profiler.trace("work")
    def work(x):
        return x + 1

    assert work(1) == 2
    with profiler.Trace("block"):
        pass
    profiler.start("manual")
    profiler.stop()
    assert calls == ["work-start", "work-stop", "block-start", "block-stop",
                     "manual-start", "manual-stop"]
    # the trace state stayed consistent despite the failures
    assert profiler.get().get_id() == profiler.get().get_base_id()


def test_sink_put_receives_raw_points():
    class Collect(sink.Sink):
        def __init__(self):
            self.points = []

        def put(self, point):
            self.points.append(point)

    collect = Collect()
    notifier.set(collect)
    prof = profiler.init("key")
    with profiler.Trace("raw", info={"k": "v"}):
        pass
    assert len(collect.points) == 2
    name, phase, base_id, parent_id, trace_id, ns, info = collect.points[0]
    assert name == "raw" and phase == 0 and info == {"k": "v"}
    assert isinstance(ns, int) and isinstance(base_id, int)
    assert collect.points[1][1] == 1
    from stacktrail.common import ids
    assert ids.to_uuid(base_id) == prof.get_base_id()
