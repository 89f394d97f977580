"""The OpenTelemetry bridge with the real opentelemetry-api: one trace,
one context, stacktrail's sampling, one vocabulary."""

import logging

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from stacktrail import otel
from stacktrail import profiler
from stacktrail import web
from stacktrail.common import ids
from stacktrail.common import kinds
from stacktrail.common import propagation
from stacktrail.integrations import _base
from tests import fresh_process
from tests.integrations.conftest import KEY
from tests.otel.conftest import low64
from tests.otel.conftest import span_of

REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"


def remote_context(sampled=True):
    header = "00-%s-%s-%s" % (REMOTE_TRACE, REMOTE_SPAN,
                              "01" if sampled else "00")
    return propagate.extract({"traceparent": header})


def test_importing_the_profiler_imports_no_opentelemetry():
    code = ("import sys, stacktrail.profiler, stacktrail.runtime, "
            "stacktrail.web, stacktrail.otel, stacktrail.otel.owners; "
            "print(sorted(m for m in sys.modules "
            "if m.startswith('opentelemetry')))")
    assert fresh_process.output(code).strip() == "[]"


def test_the_bridge_is_the_global_provider(bridged):
    assert isinstance(trace.get_tracer_provider(), trace.TracerProvider)
    assert trace.get_tracer_provider() is otel.tracer_provider()
    assert otel.tracer_provider().force_flush() is True


def test_span_in_a_trace_is_a_span_of_that_trace(bridged, recorder):
    prof = profiler.init(KEY)
    with profiler.Trace("outer"):
        outer_id = prof.get_id()
        with bridged.start_as_current_span(
                "fetch", kind=SpanKind.CLIENT,
                attributes={"http.request.method": "GET",
                            "url.full": "https://api:8774/v2?token=s3cret",
                            "server.address": "api",
                            "server.port": 8774}) as span:
            assert span.is_recording()
            span.set_attribute("http.response.status_code", 200)
            span.set_attribute("app.items", 3)
            span.add_event("retry", {"attempt": 2})
    start, stop = span_of(recorder, "fetch")
    assert start["base_id"] == prof.get_base_id()
    assert start["parent_id"] == outer_id
    assert start["info"]["requests"] == {
        "method": "GET", "url": "https://api:8774/v2?token=***",
        "hostname": "api", "port": 8774}
    assert start["info"]["otel"] == {"kind": "CLIENT", "scope": "tests.otel",
                                     "attributes": {"app.items": 3}}
    assert stop["info"]["requests"] == {"status_code": 200}
    event, = stop["info"]["otel"]["events"]
    assert event["name"] == "retry" and event["attributes"] == {"attempt": 2}
    assert "s3cret" not in repr(recorder)
    # What the report says of it: the http kind's line.
    assert kinds.line(start["info"], stop["info"]) == \
        "GET api:8774 -> 200"


def test_status_and_exceptions(bridged, recorder):
    profiler.init(KEY)
    with pytest.raises(ValueError):
        with bridged.start_as_current_span("fails"):
            raise ValueError("bad input")
    with bridged.start_as_current_span("handled") as span:
        span.record_exception(KeyError("gone"))  # status stays unset
    with bridged.start_as_current_span("declared") as span:
        span.set_status(StatusCode.ERROR, "quota exceeded")
    with bridged.start_as_current_span("ok") as span:
        span.set_status(StatusCode.OK)
        span.set_status(StatusCode.ERROR, "ignored: OK is final")
    _, stop = span_of(recorder, "fails")
    assert stop["info"]["etype"] == "ValueError"
    assert stop["info"]["message"] == "bad input"
    _, stop = span_of(recorder, "handled")
    assert "etype" not in stop["info"]
    assert stop["info"]["otel"]["events"][0]["attributes"][
        "exception.type"] == "KeyError"
    _, stop = span_of(recorder, "declared")
    assert (stop["info"]["etype"], stop["info"]["message"]) == \
        ("_OTHER", "quota exceeded")
    _, stop = span_of(recorder, "ok")
    assert "etype" not in stop["info"]


def test_current_span_is_the_stacktrail_span(bridged, recorder):
    prof = profiler.init(KEY)
    with profiler.Trace("db-call"):
        context = trace.get_current_span().get_span_context()
        assert context.is_valid and not trace.get_current_span().is_recording()
        assert "%032x" % context.trace_id == ids.trace_id_hex(
            prof.get_base_id())
        assert "%016x" % context.span_id == low64(prof.get_id())
        carrier = {}
        propagate.inject(carrier)
        assert carrier == propagation.w3c_headers()
    assert trace.get_current_span().get_span_context().span_id == \
        ids.w3c_span_int(prof.get_base_id())  # the trace's root again
    profiler.clean()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_stacktrail_spans_nest_under_an_otel_span(bridged, recorder):
    profiler.init(KEY)
    with bridged.start_as_current_span("outer") as outer:
        with profiler.Trace("inner"):
            assert trace.get_current_span().get_span_context().span_id != \
                outer.get_span_context().span_id
        inner_parent = low64(recorder.spans("inner")[0][0]["parent_id"])
        with bridged.start_as_current_span("sibling") as sibling:
            pass
    assert inner_parent == "%016x" % outer.get_span_context().span_id
    start, _ = span_of(recorder, "sibling")
    assert low64(start["parent_id"]) == \
        "%016x" % outer.get_span_context().span_id
    assert "%016x" % sibling.get_span_context().span_id == \
        low64(start["trace_id"])


def test_an_extracted_context_joins_when_trusted(bridged, live, recorder):
    live.trust_traceparent = True
    token = otel_context.attach(remote_context())
    try:
        prof = profiler.get()
        assert ids.trace_id_hex(prof.get_base_id()) == REMOTE_TRACE
        assert low64(prof.get_id()) == REMOTE_SPAN
        with profiler.Trace("work"):
            pass
        with bridged.start_as_current_span("step"):
            pass
    finally:
        otel_context.detach(token)
    assert profiler.get() is None
    work, _ = span_of(recorder, "work")
    step, _ = span_of(recorder, "step")
    assert low64(work["parent_id"]) == low64(step["parent_id"]) == \
        REMOTE_SPAN


def test_an_extracted_context_untrusted_is_passed_on(bridged, live,
                                                     recorder):
    token = otel_context.attach(remote_context())
    try:
        assert profiler.get() is None
        headers = propagation.outgoing_headers()
        assert headers["traceparent"].split("-")[1] == REMOTE_TRACE
        assert headers["traceparent"].endswith("-00")  # not sampled here
        with bridged.start_as_current_span("step") as span:
            assert not span.is_recording()
            assert "%032x" % span.get_span_context().trace_id == \
                REMOTE_TRACE
    finally:
        otel_context.detach(token)
    assert propagation.untraced.get() is None
    assert list(recorder) == []


def test_outside_a_trace_stacktrail_samples(bridged, live, recorder):
    # Not sampled: nothing recorded, the parent's context carried on.
    span = bridged.start_span("job", context=remote_context())
    assert not span.is_recording()
    assert "%016x" % span.get_span_context().span_id == REMOTE_SPAN
    span.end()
    root = bridged.start_span("job")
    assert root is trace.INVALID_SPAN  # nothing is made outside a request
    assert list(recorder) == []
    # Sampled: the span is the root span of a new trace.
    live.sampling_rate = 1.0
    with bridged.start_as_current_span("job") as span:
        assert span.is_recording()
        with profiler.Trace("inside"):
            pass
    start, _ = span_of(recorder, "job")
    inside, _ = span_of(recorder, "inside")
    assert start["parent_id"] == start["base_id"]
    assert inside["parent_id"] == start["trace_id"]
    assert profiler.get() is None


def test_a_request_not_traced_records_no_otel_span(bridged, live, recorder):
    """The WSGI filter decided: not traced.  OpenTelemetry spans in it are
    not recorded, and carry the request's W3C trace id."""
    live.sampling_rate = 0.0
    seen = []

    def app(environ, start_response):
        live.sampling_rate = 1.0  # a second decision would trace it
        with bridged.start_as_current_span("handler") as span:
            seen.append((span.is_recording(), span.get_span_context()))
        start_response("200 OK", [])
        return [b"ok"]

    web.enable([KEY])
    header = "00-%s-%s-00" % (REMOTE_TRACE, REMOTE_SPAN)
    body = web.WsgiMiddleware(app)({"REQUEST_METHOD": "GET",
                                    "HTTP_TRACEPARENT": header},
                                   lambda *a: None)
    assert list(body) == [b"ok"]
    (recording, context), = seen
    assert not recording
    assert "%032x" % context.trace_id == REMOTE_TRACE
    assert list(recorder) == []


def test_kinds_are_the_builtin_ones(bridged, recorder):
    profiler.init(KEY)
    with bridged.start_as_current_span(
            "SELECT users", kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.name": "nova",
                        "db.statement": "SELECT * FROM users WHERE id = %s",
                        "db.query.parameter.0": "p4ssw0rd-value"}):
        pass
    with bridged.start_as_current_span(
            "HTTP GET /v2/servers", kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "http.route": "/v2/servers",
                        "http.status_code": 503}) as span:
        span.set_status(StatusCode.ERROR, "HTTP 503")
    with bridged.start_as_current_span(
            "compute.build", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "rabbitmq",
                        "rpc.method": "build", "X-Auth-Token": "abc"}):
        pass
    db, _ = span_of(recorder, "SELECT users")
    assert db["info"]["db"] == {
        "system": "postgresql", "database": "nova",
        "statement": "SELECT * FROM users WHERE id = %s"}
    assert "p4ssw0rd-value" not in repr(db)
    # "HTTP ..." would read as an http client call: it is the wsgi span.
    start, stop = span_of(recorder, "wsgi")
    assert start["info"]["request"] == {"method": "GET"}
    assert start["info"]["otel"]["attributes"] == {
        "http.route": "/v2/servers"}
    assert stop["info"]["response"] == {"status": 503}
    assert stop["info"]["etype"] == "HTTPServerError"
    assert kinds.span_kind("wsgi", {**start["info"], **stop["info"]}) == \
        "SERVER"
    start, _ = span_of(recorder, "compute.build")
    assert start["info"]["otel"]["attributes"] == {
        "messaging.system": "rabbitmq", "rpc.method": "build",
        "X-Auth-Token": "***"}
    assert kinds.span_kind("compute.build", start["info"]) == "PRODUCER"
    assert kinds.line(start["info"]) == "producer (tests.otel)"


def test_off_the_contexts_are_separate_again(bridged, recorder):
    otel.apply(False)
    assert otel.status() == "off"
    profiler.init(KEY)
    with profiler.Trace("outer"):
        assert trace.get_current_span() is trace.INVALID_SPAN
        with bridged.start_as_current_span("inert") as span:
            assert not span.is_recording()
    assert recorder.names() == ["outer-start", "outer-stop"]
    assert otel.apply(True) and otel.status() == "global"


def test_spans_started_while_a_notifier_writes_are_not_recorded(bridged,
                                                                recorder):
    from stacktrail.common import context
    profiler.init(KEY)
    token = context.emitting.set(True)
    try:
        assert not bridged.start_span("store-call").is_recording()
    finally:
        context.emitting.reset(token)


def test_failures_never_reach_the_caller(bridged, monkeypatch):
    before = _base.failures().get("otel", 0)
    profiler.init(KEY)

    def broken(*args):
        raise RuntimeError("sink exploded")
    from stacktrail import notifier
    notifier.set(broken)
    with bridged.start_as_current_span("x", attributes={"a": object()}):
        pass
    assert _base.failures().get("otel", 0) == before  # CallableSink guards
    monkeypatch.setattr("stacktrail.otel.bridge._parent_frame", broken)
    span = bridged.start_span("y")
    assert span is trace.INVALID_SPAN
    assert _base.failures()["otel"] == before + 1


def test_beside_a_real_sdk_provider(live, recorder, caplog):
    """A service set up the SDK first: it keeps it (one warning), and both
    record one trace: the SDK's spans carry stacktrail's trace and span
    ids, stacktrail's spans nest under the SDK's."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import \
        InMemorySpanExporter

    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(sdk)
    with caplog.at_level(logging.WARNING, "stacktrail.otel.bridge"):
        assert otel.apply(True)
        otel.apply(True)
    assert otel.status() == "beside"
    assert trace.get_tracer_provider() is sdk
    assert len([r for r in caplog.records
                if "already has a tracer provider" in r.message]) == 1
    tracer = trace.get_tracer("sdk.user")
    prof = profiler.init(KEY)
    with profiler.Trace("ours"):
        ours = prof.get_id()
        with tracer.start_as_current_span("theirs"):
            with profiler.Trace("ours-inside"):
                pass
    theirs, = exporter.get_finished_spans()
    assert "%032x" % theirs.context.trace_id == \
        ids.trace_id_hex(prof.get_base_id())
    assert "%016x" % theirs.parent.span_id == low64(ours)
    inside, _ = span_of(recorder, "ours-inside")
    assert low64(inside["parent_id"]) == "%016x" % theirs.context.span_id
    assert recorder.names() == ["ours-start", "ours-inside-start",
                                "ours-inside-stop", "ours-stop"]
