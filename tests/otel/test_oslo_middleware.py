"""oslo.middleware's TracingMiddleware and stacktrail's WSGI filter in one
paste pipeline, in either order: each request has one ``wsgi`` span."""

import pytest
import webob
from oslo_config import cfg
from paste import deploy

from stacktrail import otel
from stacktrail import profiler
from stacktrail import web
from tests.integrations.conftest import KEY
from tests.otel.conftest import low64
from tests.otel.conftest import span_of
from tests.otlp_receiver import OTLPReceiver
from tests.otlp_receiver import attributes

tracing = pytest.importorskip("oslo_middleware.tracing")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

PASTE = """
[pipeline:ours_first]
pipeline = stacktrail tracing app

[pipeline:theirs_first]
pipeline = tracing stacktrail app

[filter:stacktrail]
paste.filter_factory = stacktrail.web:WsgiMiddleware.factory
hmac_keys = {key}

[filter:tracing]
paste.filter_factory = oslo_middleware:TracingMiddleware.factory

[app:app]
paste.app_factory = tests.otel.test_oslo_middleware:app_factory
"""
ORDERS = ("ours_first", "theirs_first")
SEEN = []


def app_factory(global_conf, **local_conf):
    def app(environ, start_response):
        prof = profiler.get()
        SEEN.append(prof and prof.get_id())
        with profiler.Trace("handler"):
            pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]
    return app


@pytest.fixture
def receiver():
    with OTLPReceiver() as r:
        yield r


@pytest.fixture
def oslo_tracing(receiver):
    """[oslo_middleware_tracing] enabled, exporting to a local receiver
    (used only when its SDK provider is the global one)."""
    conf = cfg.CONF
    tracing._register_opts(conf)
    group = "oslo_middleware_tracing"
    overrides = {"enabled": True, "service_name": "test-api",
                 "otlp_endpoint": receiver.endpoint.rsplit("/v1/traces", 1)[0]}
    for name, value in overrides.items():
        conf.set_override(name, value, group=group)
    SEEN.clear()
    yield
    tracing.shutdown_tracing()
    for name in overrides:
        conf.clear_override(name, group=group)


@pytest.fixture
def load(tmp_path, live):
    web.enable([KEY])
    path = tmp_path / "api-paste.ini"
    path.write_text(PASTE.format(key=KEY))

    def loaded(name):
        return deploy.loadapp("config:%s" % path, name=name)
    return loaded


def traced_headers():
    """What a stacktrail client sends: both formats, one trace."""
    prof = profiler.init(KEY)
    headers = web.get_trace_id_headers()
    profiler.clean()
    return prof, headers


def get(app, headers=None):
    request = webob.Request.blank("/v2/servers?limit=1&token=s3cret",
                                  headers=headers or {})
    response = request.get_response(app)
    assert response.body == b"served"
    return response


@pytest.mark.parametrize("order", ORDERS)
def test_one_wsgi_span_per_request(bridged, oslo_tracing, load, recorder,
                                   order):
    app = load(order)
    prof, headers = traced_headers()
    response = get(app, headers)
    assert sorted(set(recorder.names())) == [
        "handler-start", "handler-stop", "wsgi-start", "wsgi-stop"]
    start, stop = span_of(recorder, "wsgi")
    handler, _ = span_of(recorder, "handler")
    assert start["base_id"] == prof.get_base_id()
    assert handler["parent_id"] == start["trace_id"]
    assert start["info"]["request"]["path"] == "/v2/servers"
    assert stop["info"]["response"] == {"status": 200}
    # TracingMiddleware's span is this span: its attributes are here...
    theirs = stop["info"]["otel"]
    assert theirs["kind"] == "SERVER"
    assert theirs["scope"] == "oslo_middleware.tracing"
    assert theirs["attributes"]["http.route"] == "/v2/servers"
    assert theirs["attributes"]["http.response.status_code"] == 200
    assert theirs["attributes"]["url.full"] == \
        "http://localhost/v2/servers?limit=1&token=***"
    assert "s3cret" not in repr(recorder)
    # ...and the traceparent it answers with names it.
    trace_hex, span_hex = response.headers["traceparent"].split("-")[1:3]
    assert trace_hex == prof.get_base_id().replace("-", "")
    assert span_hex == low64(start["trace_id"])


@pytest.mark.parametrize("order", ORDERS)
def test_without_our_span_theirs_is_the_wsgi_span(bridged, live,
                                                  oslo_tracing, load,
                                                  recorder, order):
    live.flags["trace_wsgi"] = False
    app = load(order)
    prof, headers = traced_headers()
    get(app, headers)
    start, stop = span_of(recorder, "wsgi")
    handler, _ = span_of(recorder, "handler")
    assert start["base_id"] == handler["base_id"] == prof.get_base_id()
    assert handler["parent_id"] == start["trace_id"]
    assert start["info"]["request"] == {"method": "GET",
                                        "url": start["info"]["request"]["url"],
                                        "path": "/v2/servers"}
    assert start["info"]["otel"]["scope"] == "oslo_middleware.tracing"
    assert stop["info"]["response"] == {"status": 200}
    assert len(recorder) == 4


@pytest.mark.parametrize("order", ORDERS)
def test_a_request_not_traced_records_nothing(bridged, oslo_tracing, load,
                                              recorder, order):
    response = get(load(order))
    assert list(recorder) == [] and SEEN == [None]
    assert "traceparent" not in response.headers or \
        response.headers["traceparent"].endswith("-00")


def test_beside_their_sdk_one_trace(live, oslo_tracing, load, receiver,
                                    recorder, caplog):
    """oslo.middleware set up its SDK before stacktrail: its spans go to
    its collector, in the trace stacktrail records."""
    app = load("ours_first")  # TracingMiddleware's init_tracing runs here
    otel.apply(True)
    assert otel.status() == "beside"
    prof, headers = traced_headers()
    get(app, headers)
    tracing._TRACER_PROVIDER.force_flush()
    theirs, = receiver.wait_for_spans(1)
    assert theirs.trace_id.hex() == prof.get_base_id().replace("-", "")
    assert attributes(theirs.attributes)["http.route"] == "/v2/servers"
    span_of(recorder, "wsgi")
