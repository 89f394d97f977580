"""HTTP client tracing: requests and keystoneauth1 against a local server."""

import socket

import pytest
import requests

from stacktrail import requests as compat
from stacktrail.common import ids
from stacktrail.common import propagation
from stacktrail.integrations import http as tracing

from tests.integrations.conftest import KEY


def _check_parent(headers, span):
    """The callee would hang under our http span, in both formats."""
    found = propagation.unpack_trace_info(
        headers["x-trace-info"], headers["x-trace-hmac"], [KEY])
    assert found[0] == span["base_id"] and found[1] == span["trace_id"]
    trace_id, span_id, sampled = propagation.parse_traceparent(
        headers["traceparent"])
    assert "%032x" % trace_id == ids.trace_id_hex(span["base_id"])
    assert ids.span_id_hex(span_id) == ids.span_id_hex(span["trace_id"])


def test_span_and_headers(echo, live, trace, recorder):
    compat.enable()
    response = requests.get(echo + "/v2/items?token=query-secret")
    (start, stop), = recorder.spans("http")
    info = start["info"]["requests"]
    assert info == {"method": "GET", "scheme": "http",
                    "hostname": "127.0.0.1",
                    "port": int(echo.rsplit(":", 1)[1]),
                    "path": "/v2/items"}
    assert "query-secret" not in repr(recorder)
    assert stop["info"]["requests"]["status_code"] == 200
    assert start["parent_id"] == trace.get_id()
    _check_parent(response.json(), start)


def test_error_status_recorded(echo, live, trace, recorder):
    tracing.enable()
    requests.get(echo + "/fail")
    (_, stop), = recorder.spans("http")
    assert stop["info"]["requests"]["status_code"] == 500


def test_connection_error_closes_span(live, trace, recorder):
    tracing.enable()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:%d/" % port, timeout=1)
    (_, stop), = recorder.spans("http")
    assert "ConnectionError" in stop["info"]["etype"]
    assert not recorder.unclosed()


def test_no_trace_no_headers(echo, live, recorder):
    tracing.enable()
    headers = requests.get(echo + "/").json()
    assert "x-trace-info" not in headers and "traceparent" not in headers
    assert recorder == []


def test_disable_restores(echo, live, trace, recorder):
    original = requests.adapters.HTTPAdapter.send
    tracing.enable()
    tracing.disable()
    assert requests.adapters.HTTPAdapter.send is original
    requests.get(echo + "/")
    assert recorder == []


def test_one_session_only_and_counted_once(echo, live, trace, recorder):
    session = requests.Session()
    tracing.instrument_session(session)
    session.get(echo + "/")
    requests.get(echo + "/")            # another session: untraced
    assert len(recorder.spans("http")) == 1
    tracing.enable()
    session.get(echo + "/")
    assert len(recorder.spans("http")) == 2
    tracing.uninstrument_session(session)
    tracing.disable()
    session.get(echo + "/")
    assert len(recorder.spans("http")) == 2


def test_keystoneauth1_session(echo, live, trace, recorder):
    from keystoneauth1 import session as ksa_session

    tracing.enable()
    sess = ksa_session.Session()
    response = sess.get(echo + "/ksa", authenticated=False)
    (start, _), = recorder.spans("http")
    assert start["info"]["requests"]["path"] == "/ksa"
    _check_parent(response.json(), start)


def test_keystoneauth1_per_session(echo, live, trace, recorder):
    from keystoneauth1 import session as ksa_session

    sess = ksa_session.Session()
    tracing.instrument_session(sess)
    sess.get(echo + "/one", authenticated=False)
    assert len(recorder.spans("http")) == 1
