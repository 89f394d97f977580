"""The same OpenTelemetry-instrumented code, recorded by the real SDK and by
the bridge (exported by stacktrail's otlp:// driver): the same spans, with
the same names, kinds, parents, statuses and semantic-convention
attributes."""

import pytest
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from stacktrail.drivers import base
from tests.otlp_receiver import OTLPReceiver
from tests.otlp_receiver import attributes

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")

from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import \
    InMemorySpanExporter  # noqa: E402


def workload(tracer):
    """What an OpenTelemetry-instrumented service does for one request."""
    with tracer.start_as_current_span(
            "GET /v2/queues", kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET",
                        "url.path": "/v2/queues",
                        "url.scheme": "http"}) as server:
        with tracer.start_as_current_span(
                "SELECT queues", kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql",
                            "db.namespace": "zaqar",
                            "db.query.text": "SELECT * FROM queues"}):
            pass
        with tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT,
                attributes={"http.request.method": "GET",
                            "server.address": "keystone",
                            "server.port": 5000,
                            "url.full": "http://keystone:5000/v3"}) as call:
            call.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span(
                "orders publish", kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "rabbitmq",
                            "messaging.destination.name": "orders",
                            "messaging.operation.type": "publish"}):
            pass
        try:
            with tracer.start_as_current_span("validate"):
                raise ValueError("bad queue")
        except ValueError:
            pass
        server.set_attribute("http.response.status_code", 200)


def sdk_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    workload(provider.get_tracer("tests.otel"))
    return exporter.get_finished_spans()


def test_the_bridge_exports_what_the_sdk_does(bridged, live, recorder):
    expected = sdk_spans()
    live.sampling_rate = 1.0  # the root span starts a trace
    workload(bridged)
    with OTLPReceiver() as receiver:
        driver = base.get_driver(receiver.connection_string,
                                 project="zaqar", service="api",
                                 host="node-1", timeout=2)
        driver.write_messages(list(recorder))
        ours = {s.name: s for s in receiver.wait_for_spans(len(expected))}
    assert set(ours) == {s.name for s in expected}
    by_id = {s.span_id: s.name for s in ours.values()}
    sdk_by_id = {s.context.span_id: s.name for s in expected}
    for sdk in expected:
        mine = ours[sdk.name]
        assert trace_pb2.Span.SpanKind.Name(mine.kind) == \
            "SPAN_KIND_" + sdk.kind.name
        mine_parent = by_id.get(mine.parent_span_id)
        sdk_parent = sdk_by_id.get(sdk.parent.span_id) if sdk.parent \
            else None
        assert mine_parent == sdk_parent, sdk.name
        exported = attributes(mine.attributes)
        for key, value in sdk.attributes.items():
            assert exported.get(key) == value, (sdk.name, key)
        assert (mine.status.code == trace_pb2.Status.STATUS_CODE_ERROR) == \
            (sdk.status.status_code is StatusCode.ERROR), sdk.name
        sdk_errors = [(e.attributes["exception.type"],
                       e.attributes["exception.message"])
                      for e in sdk.events if e.name == "exception"]
        my_errors = [(attributes(e.attributes)["exception.type"],
                      attributes(e.attributes)["exception.message"])
                     for e in mine.events if e.name == "exception"]
        assert my_errors == sdk_errors, sdk.name
    assert len({s.trace_id for s in ours.values()}) == 1
    assert attributes(ours["orders publish"].attributes)[
        "otel.scope.name"] == "tests.otel"
