"""Outgoing HTTP calls as ``http`` spans: ``requests`` and keystoneauth1.

The span wraps the transport adapter's ``send``, where every attempt (each
redirect hop, each keystoneauth1 retry) really goes on the wire.  The trace
headers of ``propagation.outgoing_headers()`` (osprofiler's signed
X-Trace-Info/X-Trace-HMAC and W3C traceparent, as ``[profiler]
propagation`` says) are written while the span is open, so the callee's
spans hang under it.  The span is closed when the call raises.  A call
made while a request is not traced here carries that request's W3C context
(``traceparent``/``tracestate``, see ``propagation``) without a span.

Scope: ``enable()`` patches ``requests.adapters.HTTPAdapter`` (every
requests session, and so every keystoneauth1 session);
``instrument_session(session)`` one ``requests.Session`` or keystoneauth1
``Session``.  A request seen by both is recorded once.

Recorded: method, scheme, host, port, path, status code.  The query string
only with ``show_query`` (it may hold tokens).
"""

import functools
from urllib import parse

from requests import adapters

from stacktrail.common import kinds
from stacktrail.common import propagation
from stacktrail.integrations import _base

NAME = "http"
_MARK = "_stacktrail_traced"
_PORTS = {"http": 80, "https": 443}


def request_info(request, show_query=False):
    url = parse.urlsplit(request.url)
    info = {"method": request.method, "scheme": url.scheme,
            "hostname": url.hostname,
            "port": url.port or _PORTS.get(url.scheme, ""),
            "path": url.path}
    if show_query and url.query:
        info["query"] = url.query
    return kinds.HTTP.start_info(info)


def _traced_send(original, show_query=False):
    @functools.wraps(original)
    def send(self, request, *args, **kwargs):
        if getattr(request, _MARK, False):
            return original(self, request, *args, **kwargs)
        if not _base.active():
            if _base.carries_untraced():
                # A request not traced here: pass its W3C context on.
                _base.guard("http", _carry, request)
            return original(self, request, *args, **kwargs)
        info = _base.guard("http", request_info, request, show_query)
        with _base.Span("http", NAME, info) as span:
            if span.opened:
                _base.guard("http", _prepare, request)
            response = original(self, request, *args, **kwargs)
            span.stop_info = kinds.HTTP.stop_info({
                "status_code": getattr(response, "status_code", None)})
            return response
    return send


def _prepare(request):
    # Marked so that a second layer (global + per-session) passes it on.
    setattr(request, _MARK, True)
    request.headers.update(propagation.outgoing_headers())


def _carry(request):
    """The untraced request's W3C context, unless the caller already set
    one (its own OpenTelemetry instrumentation knows better)."""
    setattr(request, _MARK, True)
    if propagation.TRACEPARENT not in request.headers:
        request.headers.update(propagation.w3c_headers())


def _class_send(self, request, *args, **kwargs):
    # Looked up at call time: the class method may be patched or restored
    # after a session was instrumented.
    return type(self).send(self, request, *args, **kwargs)


class _Global(_base.Instrumentor):
    """Every requests/keystoneauth1 call; ``enable(show_query=True)``
    records the query string too."""

    name = "requests"

    def _enable(self, patcher, show_query=False):
        cls = adapters.HTTPAdapter
        patcher.patch(cls, "send", _traced_send(cls.send, show_query))


_global = _Global()
enable, disable, is_enabled = _base.module_functions(_global)


# --- one session -------------------------------------------------------------

def _requests_session(session):
    """The requests.Session behind a requests or keystoneauth1 session."""
    inner = getattr(session, "session", None)
    return inner if hasattr(inner, "adapters") else session


def instrument_session(session, show_query=False):
    """Trace one session's adapters (mounted now)."""
    target = _requests_session(session)
    changed = False
    for adapter in target.adapters.values():
        if "send" not in vars(adapter):
            send = _traced_send(_class_send, show_query)
            adapter.send = send.__get__(adapter, type(adapter))
            changed = True
    return changed


def uninstrument_session(session):
    target = _requests_session(session)
    changed = False
    for adapter in target.adapters.values():
        if "send" in vars(adapter):
            del adapter.send
            changed = True
    return changed
