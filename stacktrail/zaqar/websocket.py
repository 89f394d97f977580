"""Zaqar's websocket transport: a trace per request that asks for one.

The websocket transport (``[drivers] transport = websocket``, autobahn on
asyncio) carries each request as one message, ``{"action", "headers",
"body"}``, and runs it synchronously on the event loop's thread through
``zaqar.api.handler.Handler.process_request``.  A request is traced when
its ``headers`` carry what starts a trace over HTTP (a signed
``X-Trace-Info``/``X-Trace-HMAC``, a trusted ``traceparent``, or local
sampling: ``propagation.start_from_headers``), header names matched
case-insensitively.  It then runs in a copy of the loop's context, so its
trace ends with it and never reaches the next message, and gets a
``websocket`` span (action, project, queue; the response status at stop)
with the storage spans under it.  Requests refused before they reach the
handler (bad JSON, schema, authentication) are not traced.
"""

import contextvars
import logging

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import propagation
from stacktrail.common import settings

LOG = logging.getLogger(__name__)

NAME = "websocket"
FLAG = "trace_websocket_transport"
_MAX_HEADERS = 64


def process_request(original):
    """``Handler.process_request``, traced when the request's headers say."""
    def process_request(self, req, protocol):
        if not settings.current.enabled:
            return original(self, req, protocol)
        ctx = contextvars.copy_context()
        span = ctx.run(_begin, req)
        if span is None:
            return original(self, req, protocol)
        resp = error = None
        try:
            resp = ctx.run(original, self, req, protocol)
            return resp
        except BaseException as exc:
            error = profiler.error_info(exc)
            raise
        finally:
            ctx.run(_finish, span, resp, error)
    return process_request


def _headers(req):
    """The request's headers, lower-cased names, text values only."""
    headers = getattr(req, "_headers", None)
    if not isinstance(headers, dict) or len(headers) > _MAX_HEADERS:
        return {}
    return {name.lower(): value for name, value in headers.items()
            if isinstance(name, str) and isinstance(value, str)}


def _begin(req):
    """The trace position of this request if it is traced, else None."""
    try:
        headers = _headers(req)
        if propagation.start_from_headers(
                lambda name: headers.get(name.lower())) is None:
            return None
        if settings.current.flags.get(FLAG, False):
            profiler.start(NAME, _request_info(req, headers))
        return context.capture()
    except Exception:
        LOG.debug("stacktrail: websocket trace headers ignored",
                  exc_info=True)
        profiler.clean()
        return None


def _request_info(req, headers):
    request = {"action": str(getattr(req, "_action", ""))[:64]}
    project = headers.get("x-project-id")
    if project:
        request["project"] = project[:64]
    body = getattr(req, "_body", None)
    queue = body.get("queue_name") if isinstance(body, dict) else None
    if isinstance(queue, str):
        request["queue"] = queue[:64]
    return {"request": request}


def _finish(span, resp, error):
    """Stop the websocket span (whatever the handler left open)."""
    try:
        info = dict(error or {})
        status = getattr(resp, "_headers", {}).get("status") \
            if resp is not None else None
        if isinstance(status, int):
            info["response"] = {"status": status}
            if status >= 500 and "etype" not in info:
                info.update(etype="WebsocketServerError",
                            message=str(status))
        context.current.set(span)
        profiler.stop(info)
    except Exception:
        LOG.debug("stacktrail: websocket span not closed", exc_info=True)
    finally:
        profiler.clean()
