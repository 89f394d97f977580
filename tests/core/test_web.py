"""The WSGI filter, driven through real WSGI: a wsgiref server in a thread,
webob, and paste.deploy loading the ``stacktrail`` filter entry point."""

import base64
import contextlib
import http.client
import json
import logging
import threading
import wsgiref.simple_server
import wsgiref.util

import pytest
import webob

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import settings
from stacktrail.common import signing

from tests.core.keys import K1, K2, OTHER, REAL

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"


def signed(key=K1, data=None):
    packed, mac = signing.pack(
        data or {"base_id": BASE, "parent_id": PARENT}, key)
    return {web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac}


class App:
    """Records the trace each request ran in; behaviour set per test."""

    def __init__(self, status="200 OK", body=(b"ok",), error=None):
        self.status = status
        self.body = body
        self.error = error
        self.seen = []

    def __call__(self, environ, start_response):
        prof = profiler.get()
        self.seen.append(prof and prof.get_base_id())
        if self.error:
            raise self.error
        with profiler.Trace("handler"):
            pass
        start_response(self.status, [("Content-Type", "text/plain")])
        return list(self.body)


def get(app, headers=None, path="/"):
    response = webob.Request.blank(path, headers=headers or {}).get_response(
        app)
    response.body  # consume and close the body, as a server does
    return response


def mw(app, **kwargs):
    kwargs.setdefault("hmac_keys", K1)
    kwargs.setdefault("enabled", True)
    return web.WsgiMiddleware(app, **kwargs)


def one(messages, name):
    found = [m for m in messages if m["name"] == name]
    assert len(found) == 1, [m["name"] for m in messages]
    return found[0]


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(app):
    """A real single-threaded WSGI server; yields a request function."""
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app,
                                               handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def call(path="/", headers=None, method="GET"):
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port,
                                          timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
    try:
        yield call
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- what a traced request records -------------------------------------------

def test_records_the_request_over_a_real_server(messages):
    app = App(status="201 Created")
    with serving(mw(app)) as call:
        status, body = call("/v2/queues/q1/messages?limit=5&token=abc"
                            "&X-Auth-Token=t0k&password=pw&secret=s3&"
                            "marker=m", headers=dict(signed(),
                                                     Host="api.example:8888"),
                            method="POST")
    assert (status, body) == (201, b"ok")
    assert app.seen == [BASE]
    start = one(messages, "wsgi-start")
    assert start["base_id"] == BASE and start["parent_id"] == PARENT
    request = start["info"]["request"]
    assert request["method"] == "POST"
    assert request["path"] == "/v2/queues/q1/messages"
    assert request["scheme"] == "http"
    assert request["host"] == "api.example:8888"
    query = request["query"]
    for secret in ("abc", "t0k", "pw", "s3"):
        assert secret not in query
    assert "limit=5" in query and "marker=m" in query
    assert "token=" in query and "password=" in query
    stop = one(messages, "wsgi-stop")
    assert stop["trace_id"] == start["trace_id"]
    assert stop["info"]["response"]["status"] == 201
    assert "etype" not in stop["info"]
    handler = one(messages, "handler-start")
    assert handler["parent_id"] == start["trace_id"]


def test_untraced_request_passes_through_untouched(messages):
    app = App()
    response = get(mw(app), {})
    assert response.status_int == 200 and response.body == b"ok"
    assert app.seen == [None]
    assert messages == []


def test_server_error_status_marked(messages):
    app = App(status="503 Service Unavailable")
    response = get(mw(app), signed())
    assert response.status_int == 503
    stop = one(messages, "wsgi-stop")
    assert stop["info"]["response"]["status"] == 503
    assert stop["info"]["etype"]


def test_client_error_status_not_an_error(messages):
    app = App(status="404 Not Found")
    assert get(mw(app), signed()).status_int == 404
    stop = one(messages, "wsgi-stop")
    assert stop["info"]["response"]["status"] == 404
    assert "etype" not in stop["info"]


def _environ(headers=None, path="/"):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def test_raising_app_marked_and_exception_propagates(messages):
    app = App(error=ZeroDivisionError("divide"))
    with pytest.raises(ZeroDivisionError):
        mw(app)(_environ(signed()), lambda *a: None)
    stop = one(messages, "wsgi-stop")
    assert stop["info"]["etype"] == "ZeroDivisionError"
    assert stop["info"]["message"] == "divide"
    assert profiler.get() is None
    # the next untraced request on this thread sees no trace
    plain = App()
    get(mw(plain), {})
    assert plain.seen == [None]


def test_raising_app_over_a_real_server_then_clean(messages):
    class Flaky(App):
        def __call__(self, environ, start_response):
            if environ["PATH_INFO"] == "/boom":
                profiler.start("left-open")  # and never stopped
                raise RuntimeError("boom")
            return super().__call__(environ, start_response)

    app = Flaky()
    with serving(mw(app)) as call:
        assert call("/boom", signed())[0] == 500  # the server's own 500
        assert call("/")[0] == 200
        assert call("/", signed())[0] == 200
        assert call("/")[0] == 200
    assert app.seen == [None, BASE, None]


def test_span_stops_after_the_body_is_iterated(messages):
    events = []

    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks():
            for n in range(3):
                with profiler.Trace("chunk", info={"n": n}):
                    events.append("chunk%d" % n)
                yield b"%d" % n
            events.append("generator-done")
        return chunks()

    with serving(mw(streaming)) as call:
        status, body = call("/", signed())
    assert (status, body) == (200, b"012")
    names = [m["name"] for m in messages]
    assert names[0] == "wsgi-start" and names[-1] == "wsgi-stop"
    wsgi = one(messages, "wsgi-start")["trace_id"]
    chunks = [m for m in messages if m["name"].startswith("chunk")]
    assert len(chunks) == 6
    assert {m["parent_id"] for m in chunks} == {wsgi}
    assert events[-1] == "generator-done"


def test_span_stops_on_close_not_before(messages):
    closed = []

    class Body:
        def __iter__(self):
            with profiler.Trace("produce"):
                yield b"a"
            yield b"b"

        def close(self):
            closed.append(profiler.get() is not None)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    result = mw(app)(_environ(signed()), lambda *a: None)
    assert [m["name"] for m in messages] == ["wsgi-start"]
    assert b"".join(result) == b"ab"
    assert "wsgi-stop" not in [m["name"] for m in messages]
    result.close()
    assert closed == [True]  # the app's close ran inside the trace
    assert [m["name"] for m in messages][-1] == "wsgi-stop"
    assert profiler.get() is None


def test_error_while_iterating_marked(messages):
    def app(environ, start_response):
        start_response("200 OK", [])

        def body():
            yield b"a"
            raise OSError("disk gone")
        return body()

    result = mw(app)(_environ(signed()), lambda *a: None)
    with pytest.raises(OSError):
        list(result)
    result.close()
    stop = one(messages, "wsgi-stop")
    assert stop["info"]["etype"] == "OSError"


def test_trace_never_leaks_into_the_next_request(messages):
    app = App()
    with serving(mw(app)) as call:
        for headers in (signed(), {}, signed(), {}, {}):
            assert call("/", headers)[0] == 200
    assert app.seen == [BASE, None, BASE, None, None]
    assert profiler.get() is None


# --- bad headers: served normally, untraced, never a 500 ---------------------

def _b64(raw):
    return base64.urlsafe_b64encode(raw).decode()


def _signed_raw(packed, key=K1):
    return {web.X_TRACE_INFO: packed,
            web.X_TRACE_HMAC: signing.digest(packed, key)}


GOOD = signed()
BAD_HEADERS = {
    "forged-hmac": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO],
                    web.X_TRACE_HMAC: "0" * 40},
    "wrong-key": signed(OTHER),
    "truncated-info": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO][:20],
                       web.X_TRACE_HMAC: GOOD[web.X_TRACE_HMAC]},
    "truncated-hmac": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO],
                       web.X_TRACE_HMAC: GOOD[web.X_TRACE_HMAC][:10]},
    "info-only": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO]},
    "hmac-only": {web.X_TRACE_HMAC: GOOD[web.X_TRACE_HMAC]},
    "empty": {web.X_TRACE_INFO: "", web.X_TRACE_HMAC: ""},
    "non-base64-signed": _signed_raw("!!!not base64***"),
    "non-json-signed": _signed_raw(_b64(b"\xff\xfe not json {")),
    "json-list-signed": _signed_raw(_b64(b'["base_id", "x"]')),
    "json-string-signed": _signed_raw(_b64(b'"just text"')),
    "extra-keys-signed": signed(data={"base_id": BASE, "parent_id": PARENT,
                                      "hmac_key": K1, "evil": 1}),
    "missing-base-id-signed": signed(data={"parent_id": PARENT}),
    "non-string-ids-signed": signed(data={"base_id": 12, "parent_id": []}),
    "huge-id-signed": signed(data={"base_id": "x" * 3000}),
    "oversized": _signed_raw(_b64(json.dumps(
        {"base_id": BASE, "parent_id": "p" * 100_000}).encode())),
    "oversized-hmac": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO],
                       web.X_TRACE_HMAC: "a" * 100_000},
    "non-ascii-hmac": {web.X_TRACE_INFO: GOOD[web.X_TRACE_INFO],
                       web.X_TRACE_HMAC: "\u00e9" * 40},
    "bad-traceparent": {"traceparent": "00-zz-\u00e9-01",
                        "tracestate": "=" * 10_000},
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_bad_headers_served_untraced(name, messages):
    app = App()
    response = get(mw(app), BAD_HEADERS[name])
    assert response.status_int == 200
    assert response.body == b"ok"
    assert app.seen == [None]
    assert messages == []
    assert profiler.get() is None


def test_bad_headers_over_a_real_server():
    app = App()
    with serving(mw(app)) as call:
        for name in ("forged-hmac", "truncated-info", "non-json-signed",
                     "json-list-signed", "extra-keys-signed"):
            assert call("/", BAD_HEADERS[name]) == (200, b"ok"), name
    assert app.seen == [None] * 5


def test_forged_header_leaves_a_debug_line(caplog):
    caplog.set_level(logging.DEBUG, logger="stacktrail")
    get(mw(App()), BAD_HEADERS["forged-hmac"])
    assert [r for r in caplog.records
            if r.name.startswith("stacktrail") and r.levelno == logging.DEBUG]


def test_good_header_after_bad_ones_still_traced():
    app = App()
    middleware = mw(app)
    for headers in BAD_HEADERS.values():
        get(middleware, headers)
    get(middleware, signed())
    assert app.seen[-1] == BASE


# --- keys, switches and paste ------------------------------------------------

def test_secret_key_refused_for_triggered_tracing(caplog):
    caplog.set_level(logging.WARNING)
    app = App()
    middleware = mw(app, hmac_keys="SECRET_KEY")
    said = [r.getMessage() for r in caplog.records]
    assert any("weak HMAC key 'SEC...'" in line for line in said), said
    assert not any("SECRET_KEY" in line for line in said)  # not logged
    get(middleware, signed("SECRET_KEY"))
    assert app.seen == [None]


def test_secret_key_refused_through_enable():
    app = App()
    web.enable("SECRET_KEY")
    get(web.WsgiMiddleware(app), signed("SECRET_KEY"))
    assert app.seen == [None]


def test_secret_key_accepted_when_explicitly_allowed():
    app = App()
    get(mw(app, hmac_keys="SECRET_KEY", allow_insecure_hmac_keys="true"),
        signed("SECRET_KEY"))
    assert app.seen == [BASE]
    settings.current.allow_insecure_hmac_keys = True
    app2 = App()
    get(mw(app2, hmac_keys="SECRET_KEY"), signed("SECRET_KEY"))
    assert app2.seen == [BASE]


def test_refused_key_does_not_block_the_others():
    app = App()
    middleware = mw(app, hmac_keys="SECRET_KEY," + REAL)
    get(middleware, signed(REAL))
    get(middleware, signed("SECRET_KEY"))
    assert app.seen == [BASE, None]


def test_disabled_by_default_and_by_switches():
    app = App()
    get(web.WsgiMiddleware(app, hmac_keys=K1), signed())
    assert app.seen == [None]  # enabled defaults to False

    web.enable(K2)
    get(web.WsgiMiddleware(app), signed(K2))
    assert app.seen[-1] == BASE

    web.disable()
    get(mw(app), signed())
    assert app.seen[-1] is None


def test_trace_wsgi_flag_off_leaves_out_the_span_not_the_trace(messages):
    settings.current.flags["trace_wsgi"] = False
    app = App()
    get(mw(app), signed())
    assert app.seen == [BASE]         # the request joined its caller's trace
    names = [m["name"] for m in messages]
    assert names and not any(n.startswith("wsgi") for n in names)


@pytest.mark.parametrize("value,traced", [
    ("false", False), ("False", False), ("0", False), ("no", False),
    ("true", True), ("True", True), ("1", True), (True, True), (False, False),
])
def test_factory_enabled_values(value, traced):
    app = App()
    middleware = web.WsgiMiddleware.factory({}, hmac_keys=K1,
                                            enabled=value)(app)
    get(middleware, signed())
    assert app.seen == [BASE if traced else None]


def app_factory(global_conf, **local_conf):
    """paste.app_factory used by the ini files below."""
    return App()


PASTE_INI = """
[pipeline:main]
pipeline = trace app

[filter:trace]
use = egg:stacktrail#stacktrail
hmac_keys = {keys}
enabled = {enabled}

[app:app]
paste.app_factory = tests.core.test_web:app_factory
"""


@pytest.mark.parametrize("enabled,traced", [("true", True), ("false", False)])
def test_paste_deploy_filter(tmp_path, enabled, traced):
    from paste.deploy import loadapp

    ini = tmp_path / "api-paste.ini"
    ini.write_text(PASTE_INI.format(enabled=enabled, keys=K1 + "," + K2))
    pipeline = loadapp("config:%s" % ini)
    assert isinstance(pipeline, web.WsgiMiddleware)
    inner = pipeline.application
    assert get(pipeline, signed(K2)).status_int == 200
    assert inner.seen == [BASE if traced else None]
