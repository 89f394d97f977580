"""One span per operation: integrations that own what OpenTelemetry
instrumentation of the same library would record.

oslo.messaging (``[oslo_messaging_tracing]``) and oslo.middleware's
``TracingMiddleware`` start OpenTelemetry spans for the very operations
stacktrail's ``trace_rpc`` and WSGI filter already record.  With the bridge
installed those spans would become spans of the stacktrail trace, so each
RPC and request would appear twice.  Instead the integration *owns* them:

* ``claim(scope, frame)``: the integration opened ``frame`` (its span) and
  the library's instrumentation ``scope`` is about to start its span for
  the same operation inside it (oslo.messaging's producer span in an RPC
  call, the ``TracingMiddleware`` inside our WSGI filter).  That span is
  *absorbed*: its context is ``frame``'s, and what it records (attributes,
  events, errors) ends up in ``frame``'s stop info through ``release``.
* ``defer(scope, kind)``: spans of that scope and kind start *before* the
  integration knows whether the operation is traced (oslo.messaging's
  consumer span wraps the dispatch, a ``TracingMiddleware`` placed before
  our filter).  The bridge makes them *pending*: recorded by nobody until
  the integration ``take``s (adopts) them into its span, or ``promote``s
  one into a span of the trace it joined when it records no span of its
  own (``trace_rpc``/``trace_wsgi`` off), or leaves them (not traced).

Pure Python: nothing here imports OpenTelemetry; the bridge sets ``active``
and the hooks when it is installed as the global provider.  Integrations
call these functions only when ``active`` is true.  None of them raises:
a failure is counted and logged like any integration's
(``integrations._base.failures()["otel"]``).
"""

import contextvars
import functools

from stacktrail.integrations import _base

# Set by the bridge: true while it is the process's active TracerProvider.
active = False

# Instrumentation scopes of the libraries whose spans integrations own.
OSLO_MESSAGING = "oslo.messaging"
OSLO_MIDDLEWARE = "oslo_middleware.tracing"

_claimed = contextvars.ContextVar("stacktrail_otel_claim", default=None)
_deferred = {}  # (scope, OpenTelemetry span kind name) -> number of owners


class Hooks:
    """Set by the bridge: ``pending(scope)`` -> the pending span of
    ``scope`` current in OpenTelemetry's context (or None);
    ``promote(span)`` -> True when it made that span a span of the trace
    current here."""

    pending = None
    promote = None


hooks = Hooks()


def _guarded(fn):
    @functools.wraps(fn)
    def guarded(*args):
        try:
            return fn(*args)
        except Exception:
            _base.swallowed("otel")
            return None
    return guarded


class Claim:
    """An integration's span standing for an OpenTelemetry span of
    ``scope``; ``span`` is that span once absorbed."""

    __slots__ = ("scope", "frame", "span")

    def __init__(self, scope, frame):
        self.scope = scope
        self.frame = frame
        self.span = None


def claim(scope, frame):
    """Let the next span ``scope`` starts right here be ``frame``'s.

    Returns a token for ``release`` (None when the bridge is not active or
    no span is open).
    """
    if not active or frame is None:
        return None
    found = Claim(scope, frame)
    return found, _claimed.set(found)


@_guarded
def take(scope, frame):
    """``claim``, and adopt the pending span of ``scope`` already current
    (its library's instrumentation ran before the integration)."""
    token = claim(scope, frame)
    if token is not None and hooks.pending is not None:
        span = hooks.pending(scope)
        if span is not None:
            span.adopt(token[0])
    return token


@_guarded
def release(token):
    """End a claim; returns the stop info the absorbed span recorded (None
    when nothing was absorbed)."""
    if token is None:
        return None
    found, reset = token
    try:
        _claimed.reset(reset)
    except ValueError:  # another context: leave it, it dies with it
        _claimed.set(None)
    return _info(found)


@_guarded
def finish(frame):
    """The stop info absorbed into ``frame`` in this context (for a span
    whose context is discarded afterwards, like the WSGI filter's)."""
    found = _claimed.get()
    if found is None or found.frame is not frame:
        return None
    return _info(found)


def _info(found):
    if found.span is None:
        return None
    return found.span.absorbed_info()


def claimed(scope, frame):
    """The open claim for a span of ``scope`` starting under ``frame``."""
    found = _claimed.get()
    if found is not None and found.span is None and \
            found.scope == scope and found.frame is frame:
        return found
    return None


def defer(scope, kind):
    """An integration records the operations spans of ``scope`` and
    ``kind`` ("SERVER", "CONSUMER"...) stand for."""
    key = (scope, kind)
    _deferred[key] = _deferred.get(key, 0) + 1


def undefer(scope, kind):
    key = (scope, kind)
    count = _deferred.get(key, 0) - 1
    if count > 0:
        _deferred[key] = count
    else:
        _deferred.pop(key, None)


def deferred(scope, kind):
    return (scope, kind) in _deferred


@_guarded
def promote(scope):
    """Make the pending span of ``scope`` a span of the trace current here
    (and the current span); True when one was."""
    if not active or hooks.pending is None:
        return False
    span = hooks.pending(scope)
    return bool(span is not None and hooks.promote(span))
