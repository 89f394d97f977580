"""A WSGI service traced by stacktrail alone, for the W3C Trace Context
conformance harness (https://github.com/w3c/trace-context, ``test/``).

The harness POSTs a JSON list ``[{"url": ..., "arguments": [...]}, ...]``;
for each item this service POSTs ``arguments`` to ``url`` with ``requests``
and answers 200 once all calls returned.  Nothing here handles a trace
header: ``stacktrail.web.WsgiMiddleware`` reads the incoming
``traceparent``/``tracestate`` and the ``requests`` integration
(``stacktrail.requests.enable()``, i.e. ``[profiler] trace_requests``)
writes the outgoing ones, with ``trust_traceparent`` on and
``sampling_rate`` as given (1.0: every request traced; 0.0: none traced,
the W3C context is passed on untraced).  Trace points go nowhere
(``noop://``) unless ``--store`` names a connection string.

Run the harness against it (Python 3.11+, aiohttp for the harness only;
the harness listens on 127.0.0.1:7777)::

    git clone https://github.com/w3c/trace-context /tmp/trace-context
    python3 -m venv /tmp/w3cvenv && /tmp/w3cvenv/bin/pip install aiohttp

    .venv/bin/python tools/w3c_service.py --port 5000 --sampling-rate 1.0 &
    cd /tmp/trace-context/test && SPEC_LEVEL=2 STRICT_LEVEL=2 \\
        /tmp/w3cvenv/bin/python test.py http://127.0.0.1:5000/test
    kill %1

and again with ``--sampling-rate 0.0``.  ``--check`` runs a few requests
against the service in-process (no harness) and prints what it forwarded.
"""

import argparse
import json
import socketserver
import sys
import wsgiref.simple_server

import requests

from stacktrail import notifier
from stacktrail import requests as traced_requests
from stacktrail import web
from stacktrail.common import settings


def forward(environ, start_response):
    """POST each ``arguments`` to its ``url``; 200 when all were sent."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b"[]"
        actions = json.loads(body or b"[]")
    except (ValueError, OSError):
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"expected a JSON list"]
    if not isinstance(actions, list):
        actions = [actions]
    with requests.Session() as session:
        for action in actions:
            if isinstance(action, dict) and action.get("url"):
                session.post(action["url"], json=action.get("arguments", []),
                             timeout=10)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "2")])
    return [b"ok"]


def configure(sampling_rate, store="noop://"):
    """The live [profiler] settings the harness run needs."""
    live = settings.Settings(max_triggered=0, max_sampled=0)
    live.enabled = True
    live.trust_traceparent = True
    live.sampling_rate = sampling_rate
    live.propagation = ("osprofiler", "w3c")
    settings.current = live
    notifier.set(notifier.create(store, project="w3c", service="service",
                                 host="localhost"))
    traced_requests.enable()
    web.enable()


def application(sampling_rate=1.0, store="noop://"):
    configure(sampling_rate, store)
    return web.WsgiMiddleware(forward, enabled=True)


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _check(app):
    """Serve a few requests in-process and print what went out."""
    import threading

    seen = []

    def echo(environ, start_response):
        seen.append({k: environ.get("HTTP_" + k.upper())
                     for k in ("traceparent", "tracestate")})
        start_response("200 OK", [("Content-Length", "2")])
        return [b"{}"]

    sink = wsgiref.simple_server.make_server("127.0.0.1", 0, echo,
                                             server_class=_Server,
                                             handler_class=_Quiet)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/" % sink.server_port
    for headers in ({}, {"traceparent":
                         "00-12345678901234567890123456789012-"
                         "1234567890123456-02",
                         "tracestate": "foo=1,bar=2"}):
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/test",
                   "wsgi.input": __import__("io").BytesIO(
                       json.dumps([{"url": url, "arguments": []}]).encode()),
                   "CONTENT_LENGTH": str(len(json.dumps(
                       [{"url": url, "arguments": []}])))}
        for name, value in headers.items():
            environ["HTTP_" + name.upper()] = value
        body = app(environ, lambda *a: None)
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()
        print("in: %s\nout: %s" % (headers, seen[-1]))
    sink.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--sampling-rate", type=float, default=1.0)
    parser.add_argument("--store", default="noop://",
                        help="[profiler] connection_string for the points")
    parser.add_argument("--check", action="store_true",
                        help="run two requests in-process and exit")
    args = parser.parse_args(argv)
    app = application(args.sampling_rate, args.store)
    if args.check:
        _check(app)
        return 0
    server = wsgiref.simple_server.make_server(
        args.host, args.port, app, server_class=_Server,
        handler_class=_Quiet)
    print("w3c service on http://%s:%d/test (sampling_rate %s)"
          % (args.host, args.port, args.sampling_rate), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
