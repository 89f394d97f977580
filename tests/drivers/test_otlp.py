"""otlp:// and otlps:// against a local OTLP/HTTP receiver."""

import logging
import subprocess
import threading
import time

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from tests.otlp_receiver import OTLPReceiver
from tests.otlp_receiver import attributes

pytest.importorskip("opentelemetry.proto")

from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

KIND = trace_pb2.Span.SpanKind
CODE = trace_pb2.Status.StatusCode


@pytest.fixture
def receiver():
    with OTLPReceiver() as r:
        yield r


def driver_for(receiver, **kwargs):
    kwargs.setdefault("timeout", 2)
    return base.get_driver(receiver.connection_string, project="zaqar",
                           service="api", host="node-1", **kwargs)


class Trace:
    """Raw points of one trace, as the profiler would make them."""

    def __init__(self):
        self.base = ids.new_id()
        self.points = []
        self.stack = [self.base]
        self.t = time.time_ns()

    def start(self, name, info=None):
        span = ids.new_id()
        self.t += 1000
        self.points.append((name, points.START, self.base, self.stack[-1],
                            span, self.t, info))
        self.stack.append(span)
        return span

    def stop(self, info=None, name=None):
        span = self.stack.pop()
        start = next(p for p in self.points if p[4] == span)
        self.t += 1000
        self.points.append((start[0], points.STOP, self.base, self.stack[-1],
                            span, self.t, info))
        return span


def by_name(spans):
    return {s.name: s for s in spans}


def sample():
    t = Trace()
    wsgi = t.start("wsgi", {"request": {"method": "GET",
                                        "path": "/v2/queues",
                                        "query": "limit=2",
                                        "scheme": "http"}})
    db = t.start("db-query", {"db": {"statement": "SELECT * FROM q",
                                     "params": {"password": "s3cret"},
                                     "system": "mysql"}})
    t.stop()
    t.start("rpc", {"function": {"name": "zaqar.x.y"}})
    t.stop({"etype": "ValueError", "message": "bad queue"})
    t.start("custom-step", {"queue": {"name": "q1", "size": 3}})
    t.stop()
    t.stop({"response": {"status": "200 OK"}})
    return t, wsgi, db


def test_ids_parentage_names_and_kinds(receiver):
    t, wsgi, db = sample()
    driver_for(receiver).write_points(t.points)
    spans = by_name(receiver.wait_for_spans(4))
    assert set(spans) == {"GET /v2/queues", "db-query", "rpc", "custom-step"}
    root = spans["GET /v2/queues"]
    assert root.trace_id.hex() == ids.trace_id_hex(t.base)
    assert root.span_id.hex() == ids.span_id_hex(wsgi)
    assert root.parent_span_id == b""  # its parent is the base id
    query = spans["db-query"]
    assert query.span_id.hex() == ids.span_id_hex(db)
    assert query.parent_span_id == root.span_id
    for span in spans.values():
        assert span.trace_id == root.trace_id
        assert span.end_time_unix_nano > span.start_time_unix_nano
    assert root.kind == KIND.SPAN_KIND_SERVER
    assert query.kind == KIND.SPAN_KIND_CLIENT
    assert spans["rpc"].kind == KIND.SPAN_KIND_CLIENT
    assert spans["custom-step"].kind == KIND.SPAN_KIND_INTERNAL


def test_semantic_attributes_and_resource(receiver):
    t, _, _ = sample()
    driver_for(receiver, service_name_prefix="prod").write_points(t.points)
    receiver.wait_for_spans(4)
    (resource, _), *_ = receiver.resource_spans()
    assert resource["service.name"] == "prod-zaqar-api"
    assert resource["host.name"] == "node-1"
    spans = {s.name: attributes(s.attributes) for s in receiver.spans()}
    wsgi = spans["GET /v2/queues"]
    assert wsgi["http.request.method"] == "GET"
    assert wsgi["url.path"] == "/v2/queues"
    assert wsgi["url.query"] == "limit=2"
    assert wsgi["http.response.status_code"] == 200
    db = spans["db-query"]
    assert db["db.system"] == "mysql"
    assert db["db.query.text"] == db["db.statement"] == "SELECT * FROM q"
    assert not [k for k in db if "param" in k or "password" in k]
    assert "s3cret" not in str(db)
    assert spans["rpc"]["code.function.name"] == "zaqar.x.y"
    assert spans["rpc"]["rpc.system"] == "oslo_messaging"
    custom = spans["custom-step"]
    assert custom["stacktrail.queue.name"] == "q1"
    assert custom["stacktrail.queue.size"] == 3


def test_error_status_and_exception_event(receiver):
    t, _, _ = sample()
    driver_for(receiver).write_points(t.points)
    spans = by_name(receiver.wait_for_spans(4))
    rpc = spans["rpc"]
    assert rpc.status.code == CODE.STATUS_CODE_ERROR
    assert "ValueError" in rpc.status.message
    assert "bad queue" in rpc.status.message
    event, = rpc.events
    assert event.name == "exception"
    assert attributes(event.attributes) == {
        "exception.type": "ValueError", "exception.message": "bad queue"}
    assert attributes(rpc.attributes)["error.type"] == "ValueError"
    assert spans["db-query"].status.code == CODE.STATUS_CODE_UNSET


def test_server_error_status_from_http_code(receiver):
    t = Trace()
    t.start("wsgi", {"request": {"method": "POST", "path": "/v2/x"}})
    t.stop({"response": {"status_code": 503}})
    driver_for(receiver).write_points(t.points)
    span, = receiver.wait_for_spans(1)
    assert span.status.code == CODE.STATUS_CODE_ERROR


def test_one_request_per_batch(receiver):
    traces = [sample()[0] for _ in range(50)]
    driver = driver_for(receiver)
    batch = [p for t in traces for p in t.points]
    driver.write_points(batch[:200])
    driver.write_points(batch[200:])
    assert len(receiver.wait_for_spans(200)) == 200
    assert len(receiver.requests()) == 2


def test_start_waits_for_stop_in_a_later_batch(receiver):
    t, _, _ = sample()
    driver = driver_for(receiver)
    driver.write_points(t.points[:1])  # wsgi start only
    assert receiver.requests() == []
    driver.write_points(t.points[1:])
    spans = by_name(receiver.wait_for_spans(4))
    root = spans["GET /v2/queues"]
    assert root.start_time_unix_nano == t.points[0][5]
    assert root.end_time_unix_nano == t.points[-1][5]


def test_threads_interleaving_spans_pair_by_id(receiver):
    """Points of concurrent requests arrive interleaved in one stream."""
    driver = driver_for(receiver)
    stream, lock = [], threading.Lock()
    expected = {}

    def request(index):
        t = Trace()
        for i in range(20):
            span = t.start("op-%d-%d" % (index, i))
            with lock:
                stream.append(t.points[-1])
            time.sleep(0.0005)
            t.stop()
            with lock:
                stream.append(t.points[-1])
            expected[ids.span_id_hex(span)] = (t.points[-2][5],
                                               t.points[-1][5])

    workers = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(0, len(stream), 37):  # batches cut across spans
        driver.write_points(stream[i:i + 37])
    spans = receiver.wait_for_spans(160)
    assert len(spans) == 160
    for span in spans:
        start, stop = expected[span.span_id.hex()]
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
            start, stop)
        index, number = span.name.split("-")[1:]
        assert span.name == "op-%s-%s" % (index, number)


def test_unfinished_span_exported_after_timeout(receiver):
    driver = driver_for(receiver, span_timeout=0.05)
    t = Trace()
    t.start("never-stops")
    driver.write_points(t.points)
    time.sleep(0.1)
    other = Trace()
    other.start("quick")
    other.stop()
    driver.write_points(other.points)
    spans = by_name(receiver.wait_for_spans(2))
    assert attributes(spans["never-stops"].attributes)[
        "stacktrail.unfinished"] is True
    assert "stacktrail.unfinished" not in attributes(spans["quick"].attributes)


def test_open_starts_are_bounded(receiver):
    driver = driver_for(receiver, max_open=10)
    t = Trace()
    for i in range(25):
        t.start("deep-%d" % i)
    driver.write_points(t.points)
    assert len(receiver.wait_for_spans(15)) == 15
    assert len(driver._open) == 10


def test_close_exports_open_starts(receiver):
    driver = driver_for(receiver)
    t = Trace()
    t.start("open-at-exit")
    driver.write_points(t.points)
    driver.close()
    span, = receiver.wait_for_spans(1)
    assert span.name == "open-at-exit"


def test_messages_from_other_services_keep_their_resource(receiver):
    """The agent relays osprofiler messages from several services."""
    driver = driver_for(receiver)
    t = Trace()
    t.start("wsgi")
    t.stop()
    messages = [points.to_message(p, "node-9", "nova", "compute")
                for p in t.points]
    driver.write_messages(messages)
    receiver.wait_for_spans(1)
    (resource, span), = receiver.resource_spans()
    assert resource["service.name"] == "nova-compute"
    assert resource["host.name"] == "node-9"
    assert span.span_id.hex() == ids.span_id_hex(t.points[0][4])


def test_headers_sent(receiver):
    driver = driver_for(receiver,
                        otlp_headers="x-api-key=abc%3D,tenant = t1")
    t = Trace()
    t.start("x")
    t.stop()
    driver.write_points(t.points)
    receiver.wait_for_spans(1)
    headers, = receiver.headers()
    assert headers["x-api-key"] == "abc="
    assert headers["tenant"] == "t1"
    assert headers["content-type"] == "application/x-protobuf"


def test_headers_from_conf(receiver):
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("headers"),
                        cfg.StrOpt("service_name_prefix")],
                       group="profiler_otlp")
    conf([], project="test")
    conf.set_override("headers", "a=1", group="profiler_otlp")
    conf.set_override("service_name_prefix", "pre", group="profiler_otlp")
    driver = driver_for(receiver, conf=conf)
    t = Trace()
    t.start("x")
    t.stop()
    driver.write_points(t.points)
    receiver.wait_for_spans(1)
    assert receiver.headers()[0]["a"] == "1"
    assert receiver.resource_spans()[0][0]["service.name"] == "pre-zaqar-api"


def test_503_raises_driver_error_to_the_flusher_only(caplog):
    with OTLPReceiver(status=503) as r:
        driver = driver_for(r)
        t = Trace()
        t.start("x")
        t.stop()
        with pytest.raises(base.DriverError, match="HTTP 503"):
            driver.write_points(t.points)
        sink = driver.make_sink()
        with caplog.at_level(logging.WARNING):
            for p in t.points * 20:
                sink.put(p)  # the service's door: never raises
            assert sink.flush(5) in (True, False)
        sink.close(1)


def test_receiver_down_never_raises_into_the_service():
    with OTLPReceiver() as r:
        connection_string = r.connection_string
    driver = base.get_driver(connection_string, timeout=1)
    t = Trace()
    t.start("x")
    t.stop()
    with pytest.raises(base.DriverError, match="otlp export to"):
        driver.write_points(t.points)
    sink = driver.make_sink()
    started = time.monotonic()
    for p in t.points * 50:
        sink.put(p)
    assert time.monotonic() - started < 0.5
    sink.close(2)


def test_hung_receiver_times_out():
    with OTLPReceiver(hang=True) as r:
        driver = driver_for(r, timeout=0.3)
        t = Trace()
        t.start("x")
        t.stop()
        started = time.monotonic()
        with pytest.raises((base.DriverError, base.StoreTimeout),
                           match="timed out"):
            driver.write_points(t.points)
        assert time.monotonic() - started < 2
        r.release()


def test_global_tracer_provider_untouched(receiver):
    from opentelemetry import trace
    before = trace.get_tracer_provider()
    t, _, _ = sample()
    driver = driver_for(receiver)
    driver.write_points(t.points)
    driver.close()
    assert trace.get_tracer_provider() is before


def test_read_side_is_not_supported(receiver):
    driver = driver_for(receiver)
    for call in (lambda: driver.get_report("x"), driver.list_traces,
                 driver.list_error_traces):
        with pytest.raises(base.DriverError, match="write-only"):
            call()


def test_endpoint_from_connection_string():
    driver = base.get_driver("otlp://collector:4318")
    assert driver.endpoint == "http://collector:4318/v1/traces"
    driver = base.get_driver("otlps://collector")
    assert driver.endpoint == "https://collector:4318/v1/traces"
    driver = base.get_driver("otlp://c:1/otel/v1/traces")
    assert driver.endpoint == "http://c:1/otel/v1/traces"


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1",
             "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip("openssl cannot make a test certificate: %s" % exc)
    return str(cert), str(key)


def test_otlps_with_ca_file(certificate):
    with OTLPReceiver(tls=certificate) as r:
        driver = driver_for(r, ca_file=certificate[0])
        t = Trace()
        t.start("tls")
        t.stop()
        driver.write_points(t.points)
        assert [s.name for s in r.wait_for_spans(1)] == ["tls"]
        untrusted = driver_for(r)
        with pytest.raises(base.DriverError, match="CERTIFICATE_VERIFY"):
            untrusted.write_points(t.points)
        insecure = driver_for(r, insecure=True)
        insecure.write_points(t.points)
        assert len(r.wait_for_spans(2)) == 2


def test_threads_through_the_buffered_sink(receiver):
    """The real path: request threads put points, the flusher exports."""
    driver = driver_for(receiver)
    sink = driver.make_sink()
    root = Trace()
    root.start("fan-out")

    def worker(index):
        t = Trace()
        t.base, t.stack = root.base, [root.stack[-1]]
        for i in range(25):
            t.start("w%d-%d" % (index, i))
            sink.put(t.points[-1])
            t.stop()
            sink.put(t.points[-1])

    sink.put(root.points[0])
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    root.stop()
    sink.put(root.points[-1])
    assert sink.flush(10)
    spans = receiver.wait_for_spans(201)
    assert len(spans) == 201
    parent = by_name(spans)["fan-out"].span_id
    assert sum(s.parent_span_id == parent for s in spans) == 200
    assert len(receiver.requests()) < 20
    assert not any("stacktrail.unfinished" in attributes(s.attributes)
                   for s in spans)
    sink.close(2)


def test_kinds_from_the_registry(receiver):
    """Span kind and conventions per kind (stacktrail.common.kinds): by
    what the info records, or by the point's name when it records none."""
    t = Trace()
    t.start("rpc", {"rpc": {"method": "build", "type": "call",
                            "topic": "compute", "server": "cpu-7"}})
    t.stop()
    t.start("rpc", {"rpc": {"method": "build", "type": "server"}})
    t.stop()
    t.start("rpc", {"function": {"name": "nova.compute.manager.build"}})
    t.stop()
    t.start("mongodb", {"db": {"command": "find", "collection": "q"}})
    t.stop()
    t.start("pool", {"pool": {"name": "catalogue", "operation": "lookup"}})
    t.stop({"pool": {"result": "shard-2"}})
    driver_for(receiver).write_points(t.points)
    spans = receiver.wait_for_spans(5)
    client, server, manager, mongo, pool = sorted(
        spans, key=lambda s: s.start_time_unix_nano)
    client_attrs = attributes(client.attributes)
    assert client.kind == KIND.SPAN_KIND_CLIENT
    assert client_attrs["rpc.system"] == "oslo_messaging"
    assert client_attrs["rpc.method"] == "build"
    assert client_attrs["rpc.service"] == "compute"
    assert client_attrs["server.address"] == "cpu-7"
    assert client_attrs["stacktrail.rpc.type"] == "call"
    assert not any(k.startswith("db.") for k in client_attrs)
    assert server.kind == KIND.SPAN_KIND_SERVER
    assert manager.kind == KIND.SPAN_KIND_CLIENT
    assert attributes(manager.attributes)["rpc.system"] == "oslo_messaging"
    assert attributes(manager.attributes)["code.function.name"] == \
        "nova.compute.manager.build"
    mongo_attrs = attributes(mongo.attributes)
    assert mongo.kind == KIND.SPAN_KIND_CLIENT
    assert mongo_attrs["db.system"] == "mongodb"
    assert mongo_attrs["db.operation.name"] == "find"
    assert mongo_attrs["db.collection.name"] == "q"
    pool_attrs = attributes(pool.attributes)
    assert pool.kind == KIND.SPAN_KIND_INTERNAL
    assert pool_attrs["stacktrail.pool.name"] == "catalogue"
    assert pool_attrs["stacktrail.pool.result"] == "shard-2"
    assert not any(k.startswith("db.") for k in pool_attrs)
