"""Start a trace in a client program and get its id.

    from stacktrail import client

    with client.trace(HMAC_KEY, "redis://127.0.0.1:6379") as trace:
        zaqar.queue("q1").post({"body": {"event": "backup.start"}})
    print(trace.id)        # stacktrail trace show <id>

Inside the block, every call made with ``requests`` (python-zaqarclient,
keystoneauth1 sessions, most OpenStack clients) is an ``http`` span and
carries the trace in its headers, signed with ``HMAC_KEY`` (one of the
services' ``[profiler] hmac_keys``), so each service traced by stacktrail
or osprofiler records its spans under the call that reached it.  The
block itself is one span (``name``).  Other transports take the headers
by hand: ``trace.headers()`` (a websocket message's ``headers``).

The client's own spans go to ``connection_string`` (use the services'
store, so that the whole tree is in one place), or, when it is None, to
the process's notifier (``stacktrail.notifier.set``); they are flushed
when the block ends.  Entering a trace switches the ``requests``
integration on for the process (``stacktrail.requests.enable()``); outside
a trace it costs one context lookup per call.  Threads started inside the
block join the trace only when handed over (``stacktrail.common.context``).
"""

import contextlib

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import requests
from stacktrail.common import context
from stacktrail.common import propagation


class Trace:
    """The trace of a ``trace()`` block."""

    def __init__(self, prof, sink):
        self.profiler = prof
        self.sink = sink

    @property
    def id(self):
        """The base id: what ``stacktrail trace show`` takes."""
        return self.profiler.get_base_id()

    def headers(self):
        """The trace headers for a call made here by hand (osprofiler's
        ``X-Trace-Info``/``X-Trace-HMAC`` and W3C ``traceparent``)."""
        return propagation.outgoing_headers()

    def flush(self, timeout=5.0):
        """Deliver the client's buffered points; True when none are left."""
        flush = getattr(self.sink or notifier.get(), "flush", None)
        return flush(timeout) if flush is not None else True


@contextlib.contextmanager
def trace(hmac_key, connection_string=None, name="client", info=None,
          service="client", flush_timeout=5.0):
    """``with trace(key[, store]) as t:`` a new trace around the block.

    ``service`` names the client in the stored points; ``info`` is
    recorded with the block's span; ``flush_timeout``: seconds the end of
    the block waits for the client's points to be written (0: leave them
    to the background flusher).  The trace that was current before the
    block (if any) is current again after it.
    """
    if not requests.is_enabled():   # keep a service's own options
        requests.enable()
    sink = notifier.create(connection_string, service=service) \
        if connection_string else None
    previous = context.current.get()
    writing = context.writer.set(sink.put if sink is not None else None)
    try:
        prof = profiler.init(hmac_key)
    finally:
        context.writer.reset(writing)
    current = Trace(prof, sink)
    profiler.start(name, info)
    span = context.current.get()
    error = None
    try:
        yield current
    except BaseException as exc:
        error = profiler.error_info(exc)
        raise
    finally:
        context.current.set(span)
        profiler.stop(error)
        context.current.set(previous)
        if flush_timeout:
            current.flush(flush_timeout)
