"""What an operator meets at the edges of the stores: a mistyped SQLite
path, ``noop://`` on the read side, osprofiler stores we do not serve, and
stores that stop answering."""

import logging
import socket
import sys
import threading
import time
import urllib.parse

import pytest

from stacktrail import notifier
from stacktrail import profiler
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.common import sink as sinks
from stacktrail.drivers import base
from tests.test_cli import assert_error
from tests.test_cli import run

UNKNOWN = ids.to_uuid(ids.new_id())


def test_read_side_refuses_a_sqlite_path_that_does_not_exist(tmp_path):
    path = tmp_path / "typo.db"
    url = "sqlite:///%s" % path
    for args in (("trace", "list"), ("trace", "show", UNKNOWN)):
        assert_error(run(*args, "--connection-string", url),
                     "no SQLite trace database at %s" % path)
    assert not path.exists()


def test_noop_on_the_read_side_says_it_keeps_nothing():
    for args in (("trace", "list"), ("trace", "show", UNKNOWN)):
        line = assert_error(run(*args, "--connection-string", "noop://"),
                            "noop:// keeps no traces")
        assert "NotImplementedError" not in line


@pytest.mark.parametrize("url", ["elasticsearch://127.0.0.1:9200",
                                 "loginsight://u:secret@li.example",
                                 "jaeger://127.0.0.1:6831"])
def test_unserved_osprofiler_store_names_the_collector_way(url, caplog):
    notifier.clear_notifier_cache()
    try:
        with caplog.at_level(logging.DEBUG, logger="stacktrail"):
            made = notifier.create(url, project="p", service="api")
            notifier.set(made)
            profiler.init("key")

            @profiler.trace("answer")
            def answer():
                return 42

            assert answer() == 42   # the service runs, untraced
    finally:
        profiler.clean()
        notifier.set(sinks.NoopSink())
        notifier.clear_notifier_cache()
    assert isinstance(made, sinks.NoopSink)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "otlp://" in lines[0] and "OpenTelemetry Collector" in lines[0]
    assert "Elasticsearch/OpenSearch and Jaeger" in lines[0]
    assert "secret" not in lines[0]


# stores that stop answering

class _Silent:
    """A TCP server that accepts, reads, and answers ``reply`` one byte
    every ``pace`` seconds (nothing at all when ``reply`` is empty)."""

    def __init__(self, reply=b"", pace=0.3):
        self.reply, self.pace = reply, pace
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,),
                             daemon=True).start()

    def _drip(self, conn):
        with conn:
            conn.settimeout(0.2)
            try:
                conn.recv(65536)
            except OSError:
                pass
            for byte in self.reply:
                if self.stopped.wait(self.pace):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
            self.stopped.wait(30)

    def close(self):
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def silent():
    servers = []

    def make(**kwargs):
        servers.append(_Silent(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_otlp_export_is_bounded_as_a_whole(silent):
    # Each byte comes within any per-read timeout; the export still ends.
    server = silent(reply=b"HTTP/1.1 200 OK\r\n" + b"X-Slow: y\r\n" * 100)
    driver = base.get_driver("otlp://127.0.0.1:%d" % server.port,
                             service="api", otlp_timeout=1.0)
    span = ids.new_id()
    batch = [("wsgi", points.START, span, span, span, time.time_ns(), None),
             ("wsgi", points.STOP, span, span, span, time.time_ns(), None)]
    began = time.monotonic()
    with pytest.raises(base.StoreTimeout, match="within 1.0 s"):
        driver.write_points(batch)
    assert time.monotonic() - began < 3


def test_messaging_read_follows_store_timeout(silent):
    pytest.importorskip("oslo_messaging")
    server = silent()
    transport = "rabbit://guest:guest@127.0.0.1:%d/" % server.port
    url = "messaging://?transport_url=" + urllib.parse.quote(transport,
                                                             safe="")
    driver = base.get_driver(url, store_timeout=1.0)
    began = time.monotonic()
    with pytest.raises(base.DriverError, match="cannot reach RabbitMQ"):
        driver.list_traces()
    assert time.monotonic() - began < 3.5, sys.exc_info()


def test_mongodb_read_follows_store_timeout(silent):
    server = silent()
    driver = base.get_driver("mongodb://127.0.0.1:%d/x" % server.port,
                             store_timeout=1.0)
    began = time.monotonic()
    with pytest.raises(base.DriverError, match="mongodb store"):
        driver.list_traces()
    assert time.monotonic() - began < 3
