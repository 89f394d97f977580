"""W3C Trace Context through a real WSGI service and real ``requests``
calls: what the conformance harness sees, plus the header values that
used to make the service's own outgoing call raise."""

import contextlib
import threading
import wsgiref.simple_server

import pytest
import requests

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import propagation
from stacktrail.common import settings
from stacktrail.integrations import http as tracing
from stacktrail.integrations import rpc

from tests.integrations.conftest import KEY

TRACE_HEX = "12345678901234567890123456789012"
W3C = "00-%s-1234567890123456-%s"


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def service(calls, echo_url):
    """A WSGI service behind the filter that makes ``calls`` GETs."""
    seen = []

    def app(environ, start_response):
        for _ in range(calls):
            seen.append(requests.get(echo_url, timeout=5).json())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, web.WsgiMiddleware(app, enabled=True),
        handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/" % server.server_port, seen
    finally:
        server.shutdown()
        server.server_close()


def _fields(headers):
    version, trace, span, flags = headers["traceparent"].split("-")
    return trace, span, flags


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_caller_context_forwarded_traced_or_not(echo, live, recorder, rate):
    live.sampling_rate = rate
    tracing.enable()
    with service(3, echo) as (url, seen):
        requests.get(url, headers={"traceparent": W3C % (TRACE_HEX, "02"),
                                   "tracestate": "foo=1"}, timeout=5)
    assert [_fields(h)[0] for h in seen] == [TRACE_HEX] * 3
    assert len({_fields(h)[1] for h in seen}) == 3   # a parent-id per call
    assert {_fields(h)[2] for h in seen} == {"03" if rate else "02"}
    assert {h["tracestate"] for h in seen} == {"foo=1"}
    assert bool(recorder) is bool(rate)


def test_context_created_when_none_arrives(echo, live):
    tracing.enable()
    with service(2, echo) as (url, seen):
        requests.get(url, timeout=5)
    assert len({_fields(h)[0] for h in seen}) == 1
    assert {_fields(h)[2] for h in seen} == {"02"}


@pytest.mark.parametrize("state", [
    "foo=1\r\nX-Injected: yes", "foo=1\nbar=2", "foo=caf\u00e9",
    "foo=\u2028", "foo=1\x00"])
@pytest.mark.parametrize("traced", [False, True])
def test_rpc_context_tracestate_never_breaks_an_outgoing_call(
        echo, live, state, traced):
    """An RPC context is not filtered by any HTTP server: its tracestate
    must not reach a header (once ValueError/UnicodeEncodeError)."""
    live.trust_traceparent = traced
    tracing.enable()
    rpc.extract({"traceparent": W3C % (TRACE_HEX, "01"),
                 "tracestate": state})
    assert (profiler.get() is not None) is traced
    got = requests.get(echo, timeout=5).json()
    assert _fields(got)[0] == TRACE_HEX
    assert "tracestate" not in got and "x-injected" not in got


def test_garbage_on_the_profiler_never_reaches_a_request(echo, live):
    tracing.enable()
    prof = profiler.init(KEY)
    prof.tracestate = "a=1\r\nX-Injected: yes"
    got = requests.get(echo, timeout=5).json()
    assert "tracestate" not in got and "x-injected" not in got
    assert got["traceparent"].split("-")[1] == \
        prof.get_base_id().replace("-", "")


def test_callers_own_traceparent_kept_when_untraced(echo, live):
    tracing.enable()
    propagation.untraced.set(propagation.W3CContext.incoming(
        W3C % (TRACE_HEX, "01")))
    own = "00-%s-%s-01" % ("a" * 32, "b" * 16)
    got = requests.get(echo, headers={"traceparent": own}, timeout=5).json()
    assert got["traceparent"] == own
    assert requests.get(echo, timeout=5).json()["traceparent"].split(
        "-")[1] == TRACE_HEX
    propagation.untraced.set(None)


def test_no_w3c_propagation_no_header(echo, live):
    live.propagation = ("osprofiler",)
    tracing.enable()
    with service(1, echo) as (url, seen):
        requests.get(url, headers={"traceparent": W3C % (TRACE_HEX, "01")},
                     timeout=5)
    assert "traceparent" not in seen[0]
    assert settings.current.propagation == ("osprofiler",)
