"""The conformance tests every trace store passes against its real server.

Use it by subclassing in a test module and overriding the
``connection_string`` fixture (and, optionally, the class attributes)::

    from tests.drivers import conformance

    class TestRedisConformance(conformance.DriverConformance):

        @pytest.fixture
        def connection_string(self, redis_url):
            return redis_url

Everything goes through the public path: ``stacktrail.notifier.create`` ->
the profiler API -> the sink's buffer and flusher -> the store, then the
read side of a fresh ``get_driver`` (a different object than the writer, as
the CLI would be).
"""

import multiprocessing
import os
import threading
import time

import pytest

from stacktrail import notifier
from stacktrail import profiler
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.common.sink import NoopSink
from stacktrail.drivers import base

HMAC_KEY = "conformance-secret"
PROJECT = "conformance"
SERVICE = "api"
HOST = "node-1"


class Tracer:
    """A few profiler verbs on one sink, through ``stacktrail.profiler``.

    ``notifier.set(sink)`` installs the sink for the whole process, as a
    service's initializer does; ``base_id``/``parent_id`` join a trace that
    another thread or process started.
    """

    def __init__(self, sink, base_id=None, parent_id=None):
        notifier.set(sink)
        profiler.clean()
        profiler.init(HMAC_KEY, base_id=base_id, parent_id=parent_id)
        self.base_id = profiler.get().get_base_id()

    def start(self, name, info=None):
        profiler.start(name, info=info)

    def stop(self, info=None):
        profiler.stop(info=info)

    def current_id(self):
        """The id of the innermost open span (UUID text)."""
        return profiler.get().get_id()

    def span(self, name, info=None):
        self.start(name, info)
        self.stop()

    def failing_span(self, name):
        """A span that ends with an exception, as ``Trace`` records it."""
        with pytest.raises(KeyError):
            with profiler.Trace(name, info={"k": "v"}):
                raise KeyError("boom")

    def finish(self):
        profiler.clean()


def create_sink(connection_string, **kwargs):
    """The sink a service gets for a connection string."""
    return notifier.create(connection_string, project=PROJECT,
                           service=SERVICE, host=HOST, **kwargs)


def walk(nodes):
    for node in nodes:
        yield node
        yield from walk(node.get("children", ()))


def names_tree(nodes):
    """The report's shape as nested (name, [children]) tuples, ordered."""
    return [(n["info"]["name"], names_tree(n.get("children", [])))
            for n in nodes]


def _child_process(connection_string, base_id, parent_id, index, spans):
    """A forked worker: its own spans under the parent's open span."""
    status = 1
    try:
        sink = create_sink(connection_string)
        tracer = Tracer(sink, base_id, parent_id)
        for i in range(spans):
            tracer.span("proc-%d-span-%d" % (index, i))
        tracer.finish()
        status = 0 if sink.flush(10) else 2
    finally:
        os._exit(status)


class DriverConformance:
    """The tests; a subclass supplies ``connection_string``.

    ``unreachable_connection_string``: a string for the same scheme whose
    store does not answer, to check that a sink never raises into the
    service (None skips that test).
    """

    unreachable_connection_string = None
    # Extra keyword arguments for notifier.create / get_driver.
    driver_kwargs = {}
    threads = 8
    processes = 4
    spans_per_worker = 25

    @pytest.fixture
    def connection_string(self):
        raise NotImplementedError("override the connection_string fixture")

    # helpers

    def sink(self, connection_string):
        sink = create_sink(connection_string, **self.driver_kwargs)
        self._sinks = getattr(self, "_sinks", []) + [sink]
        return sink

    def reader(self, connection_string):
        return base.get_driver(connection_string, **self.driver_kwargs)

    @pytest.fixture(autouse=True)
    def _close_sinks(self):
        yield
        for sink in getattr(self, "_sinks", []):
            sink.close(5)
        self._sinks = []
        profiler.clean()
        notifier.set(NoopSink())
        # create() caches a sink per connection string; the next test may
        # reuse the string (a recycled redis db) for a fresh store.
        notifier.clear_notifier_cache()

    def write_sample(self, connection_string):
        """One request: wsgi -> (db, rpc -> db-call), flushed to the store.

        Names carry dashes: osprofiler cut names at the first one, we don't.
        """
        sink = self.sink(connection_string)
        tracer = Tracer(sink)
        tracer.start("wsgi", {"request": {"path": "/v2/queues",
                                          "method": "GET"}})
        tracer.span("db", {"db": {"statement": "SELECT 1"}})
        tracer.start("rpc-call", {"function": {"name": "x.y"}})
        time.sleep(0.002)
        tracer.span("db-call")
        tracer.stop()
        tracer.stop()
        tracer.finish()
        assert sink.flush(10), "the sink did not drain"
        return tracer.base_id

    # write then read

    def test_report_tree(self, connection_string):
        base_id = self.write_sample(connection_string)
        report = self.reader(connection_string).get_report(base_id)
        assert report["info"]["name"] == "total"
        assert names_tree(report["children"]) == [
            ("wsgi", [("db", []), ("rpc-call", [("db-call", [])])])]
        wsgi = report["children"][0]
        rpc = wsgi["children"][1]
        assert wsgi["info"]["finished"] >= rpc["info"]["finished"] >= 2
        assert report["info"]["finished"] >= wsgi["info"]["finished"]
        assert wsgi["info"]["host"] == HOST
        assert wsgi["info"]["project"] == PROJECT
        assert wsgi["info"]["service"] == SERVICE
        assert wsgi["parent_id"] == base_id
        for node in walk(report["children"]):
            assert ids.is_uuid(node["trace_id"])
            assert ids.is_uuid(node["parent_id"])
        assert report["stats"]["db"]["count"] == 1

    def test_report_microseconds(self, connection_string):
        base_id = self.write_sample(connection_string)
        report = self.reader(connection_string).get_report(base_id)
        rpc = report["children"][0]["children"][1]["info"]
        assert rpc["duration_us"] >= 2000
        assert rpc["duration_us"] == rpc["finished_us"] - rpc["started_us"]
        assert rpc["finished"] == rpc["finished_us"] // 1000 or \
            abs(rpc["finished"] * 1000 - rpc["finished_us"]) < 1000

    def test_raw_payload_kept(self, connection_string):
        base_id = self.write_sample(connection_string)
        report = self.reader(connection_string).get_report(base_id)
        wsgi = report["children"][0]["info"]
        start = wsgi["meta.raw_payload.wsgi-start"]
        assert start["info"]["request"]["path"] == "/v2/queues"
        assert start["base_id"] == base_id
        assert "meta.raw_payload.wsgi-stop" in wsgi

    def test_messages_are_osprofiler_messages(self, connection_string):
        base_id = self.write_sample(connection_string)
        messages = self.reader(connection_string).get_messages(base_id)
        assert len(messages) == 8
        for m in messages:
            assert m["base_id"] == base_id
            assert m["name"].endswith(("-start", "-stop"))
            assert m["info"]["host"] == HOST
            assert m["project"] == PROJECT and m["service"] == SERVICE
            points.from_message(m)  # the timestamp parses

    def test_driver_builds_many_reports(self, connection_string):
        first = self.write_sample(connection_string)
        second = self.write_sample(connection_string)
        reader = self.reader(connection_string)
        a1 = reader.get_report(first)
        b = reader.get_report(second)
        a2 = reader.get_report(first)
        assert names_tree(a1["children"]) == names_tree(a2["children"])
        assert len(list(walk(b["children"]))) == 4
        assert len(list(walk(a2["children"]))) == 4

    def test_unknown_trace_is_empty(self, connection_string):
        self.write_sample(connection_string)
        report = self.reader(connection_string).get_report(
            ids.to_uuid(ids.new_id()))
        assert report["children"] == []

    # listing

    def test_list_traces(self, connection_string):
        base_ids = [self.write_sample(connection_string) for _ in range(3)]
        reader = self.reader(connection_string)
        listed = {t["base_id"]: t for t in reader.list_traces()}
        assert set(base_ids) <= set(listed)
        for base_id in base_ids:
            first = min(m["timestamp"] for m in reader.get_messages(base_id))
            assert listed[base_id]["timestamp"] == first

    def test_list_traces_fields(self, connection_string):
        base_id = self.write_sample(connection_string)
        listed = self.reader(connection_string).list_traces(
            fields={"base_id", "timestamp", "service"})
        mine = [t for t in listed if t["base_id"] == base_id]
        assert len(mine) == 1
        assert {"base_id", "timestamp"} <= set(mine[0])

    def test_list_error_traces(self, connection_string):
        clean = self.write_sample(connection_string)
        sink = self.sink(connection_string)
        tracer = Tracer(sink)
        tracer.start("wsgi")
        tracer.failing_span("db-fail")
        tracer.stop()
        tracer.finish()
        assert sink.flush(10)
        reader = self.reader(connection_string)
        errors = reader.list_error_traces()
        error_ids = [t["base_id"] for t in errors]
        assert tracer.base_id in error_ids
        assert clean not in error_ids
        for t in errors:
            assert "timestamp" in t
        report = reader.get_report(tracer.base_id)
        failing = report["children"][0]["children"][0]["info"]
        stop = failing["meta.raw_payload.db-fail-stop"]
        assert stop["info"]["etype"] == "KeyError"

    # concurrency

    def test_threads_write_one_trace(self, connection_string):
        sink = self.sink(connection_string)
        tracer = Tracer(sink)
        tracer.start("fan-out")
        base_id, parent = tracer.base_id, tracer.current_id()
        errors = []

        def worker(index):
            try:
                t = Tracer(sink, base_id, parent)
                for i in range(self.spans_per_worker):
                    t.span("thread-%d-span-%d" % (index, i))
                t.finish()
            except BaseException as exc:  # reported below, not swallowed
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(i,))
                   for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        tracer.stop()
        tracer.finish()
        assert not errors
        assert sink.flush(10)
        report = self.reader(connection_string).get_report(base_id)
        root, = report["children"]
        assert root["info"]["name"] == "fan-out"
        assert len(root["children"]) == self.threads * self.spans_per_worker
        assert sink.dropped == 0

    def test_processes_write_one_trace(self, connection_string):
        sink = self.sink(connection_string)
        tracer = Tracer(sink)
        tracer.start("fork-parent")
        tracer.span("before-fork")  # buffered in the parent while forking
        base_id, parent = tracer.base_id, tracer.current_id()
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_child_process,
                             args=(connection_string, base_id, parent, i,
                                   self.spans_per_worker))
                 for i in range(self.processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        tracer.stop()
        tracer.finish()
        assert [p.exitcode for p in procs] == [0] * self.processes
        assert sink.flush(10)
        report = self.reader(connection_string).get_report(base_id)
        root, = report["children"]
        names = [c["info"]["name"] for c in root["children"]]
        # The parent's buffered point is written once, not once per child.
        assert names.count("before-fork") == 1
        assert len(names) == 1 + self.processes * self.spans_per_worker

    # failure never reaches the service

    def test_unreachable_store_never_raises(self):
        if not self.unreachable_connection_string:
            pytest.skip("no unreachable connection string for this store")
        # Creating the sink must not fail either: services start while
        # their trace store is down.
        sink = create_sink(self.unreachable_connection_string,
                           **self.driver_kwargs)
        self._sinks = getattr(self, "_sinks", []) + [sink]
        tracer = Tracer(sink)
        started = time.monotonic()
        for i in range(50):
            tracer.span("unreachable-%d" % i)
        tracer.finish()
        assert time.monotonic() - started < 1.0, "put blocked"
        sink.flush(1)  # may be False; must not raise
