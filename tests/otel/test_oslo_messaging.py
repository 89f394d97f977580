"""oslo.messaging's own OpenTelemetry tracing ([oslo_messaging_tracing])
and stacktrail's trace_rpc, both on, over the local RabbitMQ: each RPC is
recorded once."""

import pytest
from oslo_config import cfg

from stacktrail import otel
from stacktrail import profiler
from stacktrail.integrations import rpc
from tests.integrations.conftest import KEY
from tests.integrations.test_rpc import Endpoint
from tests.integrations.test_rpc import RecordingSerializer
from tests.integrations.test_rpc import _wait
from tests.integrations.test_rpc import serve  # noqa: F401 - fixture
from tests.integrations.test_rpc import transport  # noqa: F401 - fixture
from tests.otel.conftest import low64
from tests.otel.conftest import span_of

om_tracing = pytest.importorskip("oslo_messaging._tracing.client")


@pytest.fixture
def oslo_tracing():
    """[oslo_messaging_tracing] tracing_enabled = true (registered on the
    global CONF by oslo.messaging itself)."""
    cfg.CONF.set_override("tracing_enabled", True,
                          group="oslo_messaging_tracing")
    yield
    cfg.CONF.clear_override("tracing_enabled",
                            group="oslo_messaging_tracing")


def test_each_rpc_once(bridged, oslo_tracing, serve, recorder):  # noqa: F811
    rpc.enable()
    endpoint = Endpoint()
    raw = RecordingSerializer()
    client = serve(endpoint, serializer=raw)
    prof = profiler.init(KEY)
    assert client.call({"request_id": "req-1"}, "work") == "done"
    client.cast({}, "work")
    _wait(lambda: len(recorder.spans("rpc")) == 4)
    assert sorted(set(recorder.names())) == [
        "rpc-start", "rpc-stop", "work-start", "work-stop"]
    spans = recorder.spans("rpc")
    calls = [(s, e) for s, e in spans if s["info"]["rpc"]["type"] == "call"]
    servers = [(s, e) for s, e in spans
               if s["info"]["rpc"]["type"] == "server"]
    assert len(calls) == 1 and len(servers) == 2 and len(spans) == 4
    (call, call_stop), = calls
    server, server_stop = next(p for p in servers
                               if p[0]["parent_id"] == call["trace_id"])
    assert call["base_id"] == prof.get_base_id()
    # oslo.messaging's producer span is the rpc call span...
    producer = call_stop["info"]["otel"]
    assert producer["kind"] == "PRODUCER"
    assert producer["scope"] == "oslo.messaging"
    assert producer["attributes"]["messaging.system"] == "rabbitmq"
    assert producer["attributes"]["messaging.destination.name"] == \
        client.target.topic
    assert producer["attributes"]["openstack.request_id"] == "req-1"
    # ...its traceparent (what it injected) names that span...
    header = raw.contexts[0]["traceparent"]
    assert header.split("-")[2] == low64(call["trace_id"])
    # ...and its consumer span is the rpc server span.
    consumer = server_stop["info"]["otel"]
    assert consumer["kind"] == "CONSUMER"
    assert consumer["attributes"]["rpc.method"] == "work"
    work = [s for s, _ in recorder.spans("work")
            if s["parent_id"] == server["trace_id"]]
    assert len(work) == 1
    assert not recorder.unclosed()


def test_without_rpc_spans_oslo_messaging_spans_are_the_rpc(
        bridged, live, oslo_tracing, serve, recorder):  # noqa: F811
    """trace_rpc off (the trace still rides the messages): oslo.messaging's
    producer and consumer spans, through the bridge, are the RPC's spans."""
    live.flags["trace_rpc"] = False
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    prof = profiler.init(KEY)
    client.call({}, "work")
    _wait(lambda: len(recorder) == 6)  # the consumer ends after replying
    topic = client.target.topic
    producer, _ = span_of(recorder, topic + ".work")
    consumer, consumer_stop = span_of(recorder, "work receive")
    work, _ = span_of(recorder, "work")
    assert producer["base_id"] == consumer["base_id"] == prof.get_base_id()
    assert producer["parent_id"] == prof.get_id()
    assert consumer["parent_id"] == producer["trace_id"]
    assert work["parent_id"] == consumer["trace_id"]
    assert producer["info"]["otel"]["kind"] == "PRODUCER"
    assert consumer["info"]["otel"]["kind"] == "CONSUMER"
    assert recorder.spans("rpc") == []


def test_a_message_not_traced_records_nothing(bridged, oslo_tracing, serve,
                                              recorder):  # noqa: F811
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    assert client.call({}, "work") == "done"
    assert endpoint.seen == [None]
    assert list(recorder) == []


def test_beside_the_sdk_one_trace_two_pipelines(live, oslo_tracing, serve,
                                                recorder):  # noqa: F811
    """The service set up the SDK before stacktrail: oslo.messaging's spans
    stay in it (not deduplicated), in stacktrail's trace."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import \
        InMemorySpanExporter

    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(sdk)
    otel.apply(True)
    assert otel.status() == "beside"
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    prof = profiler.init(KEY)
    client.call({}, "work")
    _wait(lambda: len(exporter.get_finished_spans()) == 2)
    sdk_spans = {s.kind.name: s for s in exporter.get_finished_spans()}
    (call, _), = [p for p in recorder.spans("rpc")
                  if p[0]["info"]["rpc"]["type"] == "call"]
    producer, consumer = sdk_spans["PRODUCER"], sdk_spans["CONSUMER"]
    for span in (producer, consumer):
        assert "%032x" % span.context.trace_id == \
            prof.get_base_id().replace("-", "")
    assert "%016x" % producer.parent.span_id == low64(call["trace_id"])
    assert consumer.parent.span_id == producer.context.span_id
