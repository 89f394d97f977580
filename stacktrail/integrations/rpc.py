"""oslo.messaging: RPC calls as ``rpc`` spans, the trace carried in the \
context.

On the wire the trace travels in the request context dict, under the key
OpenStack services use with osprofiler::

    "trace_info": {"hmac_key": ..., "base_id": ..., "parent_id": ...}

so a caller or callee still on osprofiler joins the same trace.  A
receiver joins it only when that ``hmac_key`` is one of its own
``[profiler] hmac_keys`` (and ``rpc_accept_plaintext_key`` is on).  With
``signed=True`` (for receivers that are all stacktrail) the plaintext key
is replaced by ``"trace_token": {"packed": ..., "hmac": ...}``, osprofiler's
signed pack of base and parent id plus an expiry (``exp``, unix seconds,
``[profiler] signed_token_ttl`` after sending), which receivers check
against their ``hmac_keys`` and their clock.  The W3C ``traceparent`` and
``tracestate`` keys travel too (oslo.messaging's own OpenTelemetry tracing
writes the same keys; one already there is kept): a receiver reads them
when neither of ours is accepted, and keeps the random flag and tracestate
from them when they name the trace it joined.  A message that carries
both joins one trace once.  A message sent while a request is not traced
carries that request's W3C context alone.

Two ways to use it:

* ``TraceSerializer(base)``, a serializer a service passes to
  ``get_rpc_client``/``get_rpc_server``/``Notifier`` itself (osprofiler's
  pattern): it writes the trace into each context it serializes and joins
  the trace of each context it deserializes.
* ``enable()`` (the ``trace_rpc`` flag): every ``call``/``cast`` is an
  ``rpc`` span on the client side, every RPC and notification sent carries
  the trace, and every RPC dispatched (an ``rpc`` span of type ``server``)
  and notification delivered runs inside the caller's trace, in a context
  of its own that is discarded afterwards (also when the handler raises).
  The trace is written into the context after the caller's serializer
  made it, and taken out again before the receiver's serializer reads it:
  a service's serializer never sees a ``trace_info`` or ``trace_token`` it
  did not write (the W3C keys stay, for oslo.messaging's own tracing).

With the OpenTelemetry bridge on (``[profiler] otel_bridge``), the producer
and consumer spans of oslo.messaging's own tracing
(``[oslo_messaging_tracing]``) are these ``rpc`` spans, not spans of their
own (``stacktrail.otel.owners``): each RPC is recorded once.
"""

import contextvars
import functools

import oslo_messaging
from oslo_messaging import serializer as om_serializer
from oslo_messaging import transport as om_transport
from oslo_messaging.notify import dispatcher as notify_dispatcher
from oslo_messaging.rpc import client as rpc_client
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import kinds
from stacktrail.common import propagation
from stacktrail.common import settings
from stacktrail.integrations import _base
from stacktrail.otel import owners

NAME = "rpc"
TRACE_INFO = "trace_info"
TRACE_TOKEN = "trace_token"
TRACEPARENT = propagation.TRACEPARENT
TRACESTATE = propagation.TRACESTATE
_untraced = propagation.untraced
# True inside a dispatch ``run_in_trace`` manages: the message's trace is
# already joined, a TraceSerializer must not decide again (a second
# sampling decision could start a second trace).
_managed = contextvars.ContextVar("stacktrail_rpc_managed", default=False)


# --- the context dict --------------------------------------------------------

def _signed_default():
    return bool(settings.current.rpc_signed_trace_info)


def inject(ctxt, signed=None):
    """Write the current trace into a serialized context dict (in place).

    Traced: osprofiler's ``trace_info`` (or our expiring ``trace_token``)
    plus W3C ``traceparent``/``tracestate``.  Not traced, the W3C context
    of the request being served (``propagation.untraced``), if any.  A
    ``traceparent`` already there (oslo.messaging's own tracing) is kept.
    """
    info = propagation.rpc_trace_info()
    if info is not None:
        signed = _signed_default() if signed is None else signed
        if signed and info["hmac_key"]:
            packed, mac = propagation.signed_token(
                info["base_id"], info["parent_id"], info["hmac_key"])
            ctxt[TRACE_TOKEN] = {"packed": packed, "hmac": mac}
            ctxt.pop(TRACE_INFO, None)
        else:
            ctxt[TRACE_INFO] = info
    if TRACEPARENT not in ctxt:
        ctxt.update(propagation.w3c_headers())
    return ctxt


def carries_trace(ctxt):
    # Asked for every message: no generator, three lookups.
    return isinstance(ctxt, dict) and (
        TRACE_INFO in ctxt or TRACE_TOKEN in ctxt or TRACEPARENT in ctxt)


def extract(ctxt):
    """Join the trace a context dict carries; True when joined.

    Order: our signed token (valid signature, not expired); osprofiler's
    plaintext ``trace_info`` when its ``hmac_key`` is one of ours (and
    ``[profiler] rpc_accept_plaintext_key`` is on); then a ``traceparent``
    (ours, or oslo.messaging's own tracing), with ``trust_traceparent`` or
    sampling deciding, as for an HTTP request.  A message that is not
    traced keeps its W3C context for the calls its handler makes.  Never
    raises, whatever the dict holds.
    """
    if not isinstance(ctxt, dict):
        return False
    live = settings.current
    parent, state = ctxt.get(TRACEPARENT), ctxt.get(TRACESTATE)
    token = ctxt.get(TRACE_TOKEN)
    if isinstance(token, dict):
        found = propagation.unpack_trace_info(
            token.get("packed"), token.get("hmac"), live.validation_keys,
            require_expiry=True)
        if found is not None:
            base_id, parent_id, key = found
            return propagation.start_from_trace_info(
                {"hmac_key": key, "base_id": base_id,
                 "parent_id": parent_id}, (key,), parent, state)
    if TRACE_INFO in ctxt and live.rpc_accept_plaintext_key and \
            propagation.start_from_trace_info(ctxt[TRACE_INFO], None,
                                              parent, state):
        return True
    if TRACEPARENT in ctxt:
        return propagation.start_from_headers(
            lambda name: ctxt.get(name) if name in (TRACEPARENT, TRACESTATE)
            else None, operation="rpc") is not None
    return False


def run_in_trace(ctxt, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` inside the trace ``ctxt`` carries.

    Runs in a copy of the current context, so whatever trace it joins (or
    leaves open) is gone when it returns or raises.
    """
    return contextvars.copy_context().run(_joined, ctxt, None, fn, args,
                                          kwargs)


def _w3c_only(ctxt):
    """A message that can only pass its caller's W3C context on: no trace
    of ours or osprofiler's in it, and nothing here starts a trace from a
    ``traceparent`` (``propagation.samples``).  The most common message of
    an armed service: it takes ``_carried``, the short way to the outcome
    ``_joined`` would reach."""
    return TRACE_INFO not in ctxt and TRACE_TOKEN not in ctxt and \
        not propagation.samples(settings.current) and not owners.active


def _carried(ctxt, writer, fn, args):
    """``fn(*args)`` with the message's W3C context kept for the calls it
    makes (as ``propagation.start_from_headers`` keeps it), no trace."""
    _managed.set(True)
    if writer is not None:
        context.writer.set(writer)
    context.current.set(None)
    _untraced.set(None)
    propagation.carry_untraced(ctxt.get(TRACEPARENT), ctxt.get(TRACESTATE))
    return fn(*args)


def _joined(ctxt, writer, fn, args, kwargs):
    _managed.set(True)
    if writer is not None:
        context.writer.set(writer)
    profiler.clean()
    _untraced.set(None)
    if isinstance(ctxt, dict):
        _base.guard("rpc", extract, ctxt)
    try:
        return fn(*args, **kwargs)
    finally:
        profiler.clean()


# --- serializer wrapper ------------------------------------------------------

class TraceSerializer(om_serializer.Serializer):
    """Wraps a service's serializer to carry the trace in the context."""

    def __init__(self, base=None, signed=None):
        self._base = base or om_serializer.NoOpSerializer()
        self._signed = signed

    def serialize_entity(self, ctxt, entity):
        return self._base.serialize_entity(ctxt, entity)

    def deserialize_entity(self, ctxt, entity):
        return self._base.deserialize_entity(ctxt, entity)

    def serialize_context(self, ctxt):
        result = self._base.serialize_context(ctxt)
        if isinstance(result, dict) and _base.carrying():
            _base.guard("rpc", inject, result, self._signed)
        return result

    def deserialize_context(self, ctxt):
        if isinstance(ctxt, dict):
            ctxt = dict(ctxt)
            trace = {k: ctxt.pop(k) for k in (TRACE_INFO, TRACE_TOKEN)
                     if k in ctxt}
            if not _managed.get():
                self._join(dict(ctxt, **trace))
        return self._base.deserialize_context(ctxt)

    @staticmethod
    def _join(ctxt):
        # Every message starts from its own trace (or none): a worker
        # thread must not carry the previous message's trace.
        profiler.clean()
        _untraced.set(None)
        if carries_trace(ctxt):
            _base.guard("rpc", extract, ctxt)


# --- automatic instrumentation -----------------------------------------------

def _span_info(target, method, call_type):
    rpc = {"method": method, "type": call_type, "topic": target.topic}
    for field in ("server", "namespace", "version", "exchange"):
        value = getattr(target, field, None)
        if value:
            rpc[field] = value
    if target.fanout:
        rpc["fanout"] = True
    return kinds.RPC.start_info(rpc)


def _spans_on():
    """The trace is carried while tracing is on; the rpc spans only while
    ``trace_rpc`` is (off, a message still joins its caller's trace)."""
    return settings.current.flags.get("trace_rpc", False)


def _traced_client(original, call_type):
    @functools.wraps(original)
    def wrapper(self, ctxt, method, **kwargs):
        if not _base.active() or not _spans_on():
            return original(self, ctxt, method, **kwargs)
        info = _base.guard("rpc", _span_info, self.target, method, call_type)
        with _base.Span("rpc", NAME, info) as span:
            if not owners.active:
                return original(self, ctxt, method, **kwargs)
            # oslo.messaging's own producer span (its OpenTelemetry
            # tracing, through the bridge) is this span.
            claim = _base.guard("rpc", owners.claim, owners.OSLO_MESSAGING,
                                span.frame)
            try:
                return original(self, ctxt, method, **kwargs)
            finally:
                span.stop_info = _base.guard("rpc", owners.release, claim)
    return wrapper


def _with_trace(ctxt, signed):
    return inject(dict(ctxt), signed)


def _traced_send(original, signed):
    @functools.wraps(original)
    def wrapper(self, target, ctxt, message, *args, **kwargs):
        if isinstance(ctxt, dict) and _base.carrying():
            ctxt = _base.guard("rpc", _with_trace, ctxt, signed) or ctxt
        return original(self, target, ctxt, message, *args, **kwargs)
    return wrapper


def _server_info(incoming):
    message = getattr(incoming, "message", None) or {}
    rpc = {"method": message.get("method"), "type": "server"}
    for field in ("namespace", "version"):
        if message.get(field):
            rpc[field] = message[field]
    return kinds.RPC.start_info(rpc)


def _served(original, dispatcher, incoming):
    """The server side of a call or cast: an ``rpc`` span around it (with
    oslo.messaging's consumer span absorbed, when the bridge is on)."""
    info = _base.guard("rpc", _server_info, incoming)
    with _base.Span("rpc", NAME, info) as span:
        if not owners.active:
            return original(dispatcher, incoming)
        claim = _base.guard("rpc", owners.take, owners.OSLO_MESSAGING,
                            span.frame)
        try:
            return original(dispatcher, incoming)
        finally:
            span.stop_info = _base.guard("rpc", owners.release, claim)


def _unspanned(original, dispatcher, incoming):
    """The server side without an ``rpc`` span (``trace_rpc`` off): with the
    bridge on, oslo.messaging's consumer span is the RPC's span."""
    _base.guard("rpc", owners.promote, owners.OSLO_MESSAGING)
    return original(dispatcher, incoming)


def _hide_trace(incoming, ctxt):
    """The service's own serializer gets the context its caller's
    serializer made: the trace, written into it after (``_traced_send``),
    is joined from ``ctxt`` here and left out of what the dispatch reads
    (a serializer may refuse a value it did not write)."""
    incoming.ctxt = {key: value for key, value in ctxt.items()
                     if key not in (TRACE_INFO, TRACE_TOKEN)}


def _traced_dispatch(original, server_span):
    """Each message dispatched inside the trace it carries, recorded by
    the service its endpoints serve (several services in one process)."""
    @functools.wraps(original)
    def wrapper(self, incoming):
        ctxt = getattr(incoming, "ctxt", None)
        if not carries_trace(ctxt) and context.current.get() is None and \
                _untraced.get() is None:
            return original(self, incoming)
        writer = _base.guard("rpc", _base.serving_writer,
                             getattr(self, "endpoints", ()))
        if isinstance(ctxt, dict) and (TRACE_INFO in ctxt or
                                       TRACE_TOKEN in ctxt):
            _base.guard("rpc", _hide_trace, incoming, ctxt)
        if isinstance(ctxt, dict) and _w3c_only(ctxt):
            return contextvars.copy_context().run(
                _carried, ctxt, writer, original, (self, incoming))
        if server_span and _spans_on():
            return contextvars.copy_context().run(
                _joined, ctxt, writer, _served, (original, self, incoming),
                {})
        if server_span and owners.active:
            return contextvars.copy_context().run(
                _joined, ctxt, writer, _unspanned,
                (original, self, incoming), {})
        return contextvars.copy_context().run(
            _joined, ctxt, writer, original, (self, incoming), {})
    return wrapper


class _Global(_base.Instrumentor):
    """Every RPC client and server; ``enable(signed=True)`` sends a signed
    token instead of the plaintext HMAC key."""

    name = "rpc"

    def _enable(self, patcher, signed=None):
        call_cls = rpc_client._BaseCallContext
        patcher.patch(call_cls, "call", _traced_client(call_cls.call, "call"))
        patcher.patch(call_cls, "cast", _traced_client(call_cls.cast, "cast"))
        transport = om_transport.Transport
        for method in ("_send", "_send_notification"):
            patcher.patch(transport, method,
                          _traced_send(getattr(transport, method), signed))
        for cls, server_span in ((rpc_dispatcher.RPCDispatcher, True), (
                notify_dispatcher.NotificationDispatcher, False)):
            patcher.patch(cls, "dispatch",
                          _traced_dispatch(cls.dispatch, server_span))
        # oslo.messaging's consumer span starts before the dispatch joins
        # the message's trace: with the bridge, it waits for us.
        owners.defer(owners.OSLO_MESSAGING, "CONSUMER")

    def _disable(self):
        owners.undefer(owners.OSLO_MESSAGING, "CONSUMER")


_global = _Global()
enable, disable, is_enabled = _base.module_functions(_global)


__all__ = ["TraceSerializer", "enable", "disable", "is_enabled", "inject",
           "extract", "run_in_trace", "oslo_messaging"]
