"""A small local OTLP/HTTP receiver for tests.

It accepts ``POST /v1/traces`` with protobuf (optionally gzip) bodies and
keeps each decoded ``ExportTraceServiceRequest``::

    with OTLPReceiver() as r:
        driver = get_driver(r.connection_string)
        ...
        r.wait_for_spans(2)
        span = r.spans()[0]

Failures to test against: ``status=503`` answers every request with that
code, ``hang=True`` accepts the request and never answers (until
``release()`` or exit).  Both can be changed while running.  ``tls=(cert,
key)`` serves HTTPS, for ``otlps://``.
"""

import gzip
import http.server
import ssl
import threading
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def attributes(key_values):
    """A plain dict of an OTLP attribute list (KeyValue messages)."""
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(any_value):
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, which) if which else None


class OTLPReceiver:
    """An http.server on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, status=200, hang=False, path="/v1/traces", tls=None):
        self.status = status
        self.hang = hang
        self.path = path
        self._requests = []  # (headers dict, ExportTraceServiceRequest)
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.tls = tls
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket,
                                                      server_side=True)
        self._thread = None

    # lifecycle

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def release(self):
        """Let hung requests finish (with ``status``)."""
        self._release.set()

    # addresses

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def endpoint(self):
        """The OTLP traces URL, e.g. ``http://127.0.0.1:4318/v1/traces``."""
        scheme = "https" if self.tls else "http"
        return "%s://127.0.0.1:%d%s" % (scheme, self.port, self.path)

    @property
    def connection_string(self):
        """The stacktrail driver connection string for this receiver."""
        return "%s://127.0.0.1:%d" % ("otlps" if self.tls else "otlp",
                                      self.port)

    # what was received

    def requests(self):
        """Decoded ExportTraceServiceRequest objects, in arrival order."""
        with self._cond:
            return [request for _, request in self._requests]

    def headers(self):
        """The HTTP headers of each request (lower-case names)."""
        with self._cond:
            return [dict(headers) for headers, _ in self._requests]

    def resource_spans(self):
        """(resource attribute dict, span) for every span received."""
        found = []
        for request in self.requests():
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    found.extend((resource, span) for span in ss.spans)
        return found

    def spans(self):
        """Every span received (opentelemetry.proto Span messages)."""
        return [span for _, span in self.resource_spans()]

    def wait_for_spans(self, count, timeout=10):
        """Wait until at least ``count`` spans arrived; return all spans."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._count() < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.spans()

    def clear(self):
        with self._cond:
            self._requests.clear()

    def _count(self):
        return sum(len(ss.spans) for _, request in self._requests
                   for rs in request.resource_spans for ss in rs.scope_spans)

    def _store(self, headers, body):
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self._cond:
            self._requests.append((headers, request))
            self._cond.notify_all()

    def _handler_class(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length",
                                                            0)))
                if receiver.hang:
                    receiver._release.wait()
                if self.path != receiver.path:
                    return self._answer(404)
                if receiver.status != 200:
                    return self._answer(receiver.status)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._store(headers, body)
                reply = trace_service_pb2.ExportTraceServiceResponse()
                self._answer(200, reply.SerializeToString())

            def _answer(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # keep test output quiet

        return Handler
