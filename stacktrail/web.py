"""The WSGI filter and the trace headers (osprofiler's ``web`` API).

A request is traced only when ``propagation.start_from_headers`` says so.
The traced request runs in a copy of the caller's context, body iteration
included, so its trace can never leak into the next request the worker
serves, and the ``wsgi`` span closes only after the body was sent.  A
request that is not traced still takes part in W3C Trace Context (when
``propagation`` names w3c): it runs in such a copy too, holding the
caller's ``traceparent`` or a new one, so the calls it makes pass it on.
With the OpenTelemetry bridge on, the server span of oslo.middleware's
``TracingMiddleware`` in the same pipeline (before or after this filter)
is this filter's ``wsgi`` span (``stacktrail.otel.owners``).
"""

import contextvars
import logging
import types

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import kinds
from stacktrail.common import propagation
from stacktrail.common import redact
from stacktrail.common import settings
from stacktrail.common import signing
from stacktrail.otel import owners

LOG = logging.getLogger(__name__)

X_TRACE_INFO = propagation.X_TRACE_INFO
X_TRACE_HMAC = propagation.X_TRACE_HMAC

_ENABLED = None
_HMAC_KEYS = None
_TRUE = ("1", "true", "yes", "on")
_untraced = propagation.untraced
# The headers a request may start a trace with, and their environ keys.
_HEADERS = (propagation.TRACEPARENT, propagation.TRACESTATE, X_TRACE_INFO,
            X_TRACE_HMAC)
_HEADER_KEYS = tuple("HTTP_" + name.upper().replace("-", "_")
                     for name in _HEADERS)
_GeneratorType = types.GeneratorType


def get_trace_id_headers():
    """Headers that carry the current trace ({} when not tracing)."""
    return propagation.outgoing_headers()


def enable(hmac_keys=None):
    """Switch every WsgiMiddleware on, validating with ``hmac_keys``."""
    global _ENABLED, _HMAC_KEYS
    _ENABLED = True
    _HMAC_KEYS = signing.usable_keys(
        hmac_keys, settings.current.allow_insecure_hmac_keys)


def disable():
    """Switch every WsgiMiddleware off (oslo.config's ``enabled = false``)."""
    global _ENABLED
    _ENABLED = False


def _as_bool(value):
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def redact_query(query):
    """The query string with the values of secret parameters hidden
    (``common.redact``: the documented list, ``[profiler] redact_names``);
    the rest is kept as the client wrote it."""
    return redact.query(query)


def request_info(environ):
    host = environ.get("HTTP_HOST") or "%s:%s" % (
        environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", ""))
    request = {
        "method": environ.get("REQUEST_METHOD", ""),
        "path": redact.path(environ.get("SCRIPT_NAME", "") +
                            environ.get("PATH_INFO", "")),
        "query": redact_query(environ.get("QUERY_STRING", "")),
        "scheme": environ.get("wsgi.url_scheme", ""),
        "host": host,
    }
    # The project a request is for, when the client names it (Zaqar's
    # X-Project-ID; behind keystonemiddleware the same header is set).
    project = environ.get("HTTP_X_PROJECT_ID")
    if project:
        request["project"] = project[:64]
    return kinds.WSGI.start_info(request)


class WsgiMiddleware:
    """Traces requests that carry a valid trigger; serves every request.

    ``enabled``: False (``enabled = false`` in paste) switches this filter
    off for good, whatever the process's tracing switch says; True switches
    it on when no process switch was set; None (the default) follows the
    process switch (``[profiler] enabled`` through ``init_from_conf``).
    ``service``: the name its requests record under, when several services
    share the process (default: the process's).
    """

    def __init__(self, application, hmac_keys=None, enabled=None,
                 service=None, **kwargs):
        self.application = application
        self.name = "wsgi"
        self.enabled = None if enabled is None else _as_bool(enabled)
        # The service this app is, when it shares its process with others
        # (paste ``service = ...``, or an adapter): requests record as it.
        self.service = service
        allow = _as_bool(kwargs.get("allow_insecure_hmac_keys", False)) or \
            settings.current.allow_insecure_hmac_keys
        self.hmac_keys = signing.usable_keys(hmac_keys, allow)
        if self.enabled is not False:
            # oslo.middleware's TracingMiddleware before this filter: its
            # server span waits for this filter's decision (OpenTelemetry
            # bridge), so a request has one wsgi span.
            owners.defer(owners.OSLO_MIDDLEWARE, "SERVER")

    @classmethod
    def factory(cls, global_conf, **local_conf):
        def filter_(app):
            return cls(app, **local_conf)
        return filter_

    def _active(self):
        if self.enabled is False:
            return False
        return bool(self.enabled) if _ENABLED is None else _ENABLED

    def __call__(self, environ, start_response=None):
        if start_response is None:
            return self._call_with_request(environ)
        if not self._active():
            return self.application(environ, start_response)
        ctx = contextvars.copy_context()
        span = ctx.run(self._begin, environ)
        if span is None:
            if ctx.get(_untraced) is None:
                return self.application(environ, start_response)
            # Not traced here, but its W3C context goes on to the calls
            # the application makes (propagation.W3CContext).
            body = ctx.run(self.application, environ, start_response)
            if type(body) is _GeneratorType:
                return _CarriedBody(ctx, body)
            return body
        return _TracedResponse(ctx, span, self.application, environ,
                               start_response)

    def _call_with_request(self, request):
        """osprofiler's other form, ``middleware(webob_request)`` (its
        filter is a ``webob.dec.wsgify``): ``request.get_response(app)``,
        the ``wsgi`` span around that call as osprofiler has it."""
        if isinstance(request, dict):
            raise TypeError("Calling %r as a WSGI app with the wrong "
                            "signature" % self)
        if not self._active():
            return request.get_response(self.application)
        ctx = contextvars.copy_context()
        span = ctx.run(self._begin, request.environ)
        if span is None:
            if ctx.get(_untraced) is None:
                return request.get_response(self.application)
            return ctx.run(request.get_response, self.application)
        try:
            response = ctx.run(request.get_response, self.application)
        except BaseException as exc:
            ctx.run(_stop_span, span, None, profiler.error_info(exc))
            raise
        ctx.run(_stop_span, span, getattr(response, "status", None), None)
        return response

    def _begin(self, environ):
        """The trace position of this request if it is traced, else None.

        ``trace_wsgi = false`` leaves the wsgi span out, not the trace: the
        request still joins its caller's trace, so its other spans (storage,
        RPC) hang under the caller's span.
        """
        if self.service:
            context.writer.set(context.writer_of(self.service))
        live = settings.current
        # Nothing can start a trace for most requests of an armed service:
        # no trigger header, no head sampling.  They skip the header parsing
        # of propagation.start_from_headers (whose outcome for them is the
        # same: not traced, a new W3C context to pass on).
        if "HTTP_X_TRACE_INFO" not in environ \
                and "HTTP_X_TRACE_HMAC" not in environ \
                and "HTTP_TRACEPARENT" not in environ \
                and not propagation.samples(live):
            propagation.carry_untraced(None, create=True)
            return None
        keys = _HMAC_KEYS or self.hmac_keys
        headers = dict(zip(_HEADERS, map(environ.get, _HEADER_KEYS)))
        try:
            if propagation.start_from_headers(
                    headers.get, keys, participate=True, operation="wsgi",
                    path=environ.get("PATH_INFO")) is None:
                return None
        except Exception:
            LOG.debug("stacktrail: trace headers ignored", exc_info=True)
            profiler.clean()
            return None
        frame = context.current.get()
        if frame is None:   # [profiler] enabled = false: nothing recorded
            return None
        if live.flags["trace_wsgi"]:
            frame = profiler.open_span(frame, self.name,
                                       request_info(environ))
            if owners.active:  # oslo.middleware's server span is this one
                owners.take(owners.OSLO_MIDDLEWARE, frame)
        elif owners.active:  # or, without ours, the request's span
            owners.promote(owners.OSLO_MIDDLEWARE)
        return frame


class _CarriedBody:
    """A generator body of an untraced request, run in the request's
    context so that calls it makes carry the request's W3C context.  Other
    bodies (lists, file wrappers) are returned as they are."""

    __slots__ = ("ctx", "body")

    def __init__(self, ctx, body):
        self.ctx = ctx
        self.body = body

    def __iter__(self):
        return self

    def __next__(self):
        return self.ctx.run(next, self.body)

    def close(self):
        self.ctx.run(self.body.close)


class _TracedResponse:
    """The app's response, iterated inside the trace's context.

    The span stops when the server closes the body (or the app raised), with
    the status recorded and 5xx marked as an error.
    """

    def __init__(self, ctx, span, app, environ, start_response):
        self.ctx = ctx
        self.span = span
        self.status = None
        self.done = False

        def recording_start_response(status, headers, exc_info=None):
            self.status = status
            return start_response(status, headers, exc_info)
        try:
            self.body = ctx.run(app, environ, recording_start_response)
        except BaseException as exc:
            self._finish(profiler.error_info(exc))
            raise
        self.chunks = iter(self.body)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.ctx.run(next, self.chunks)
        except StopIteration:
            raise
        except BaseException as exc:
            self._finish(profiler.error_info(exc))
            raise

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                self.ctx.run(close)
        finally:
            self._finish(None)

    def _finish(self, error):
        if self.done:
            return
        self.done = True
        self.ctx.run(_stop_span, self.span, self.status, error)


def _stop_span(span, status, error):
    """Stop the wsgi span itself, even if the app left inner spans open."""
    info = dict(error) if error else {}
    code = _status_code(status)
    if code is not None:
        info["response"] = {"status": code}
        if code >= 500 and "etype" not in info:
            info.update(etype="HTTPServerError", message=status)
    if owners.active:
        for key, value in (owners.finish(span) or {}).items():
            info.setdefault(key, value)
    if span.name is not None:   # else the trace's root: no wsgi span
        profiler.close_span(span, info)
    context.current.set(None)


def _status_code(status):
    try:
        return int(str(status).split(None, 1)[0])
    except (TypeError, ValueError, IndexError):
        return None
