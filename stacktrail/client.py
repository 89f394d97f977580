"""Start a trace in a client program, get its id, carry it into threads.

    import openstack
    from stacktrail import client

    conn = openstack.connect(cloud="prod")
    with client.trace(HMAC_KEY, "redis://10.0.0.5:6379",
                      name="nightly-backup") as trace:
        # A Large Object: its segments upload in parallel, all traced.
        conn.object_store.create_object("backups", "db.tar",
                                        filename="db.tar")
        conn.compute.wait_for_server(conn.compute.get_server(server_id))
    print(trace.id)        # stacktrail trace show <id>

Inside the block, every call made with ``requests`` (keystoneauth1
sessions, and so openstacksdk and the python-*clients, python-zaqarclient)
is an ``http`` span and carries the trace in its headers, osprofiler's
signed with ``HMAC_KEY`` (one of the services' ``[profiler] hmac_keys``)
and W3C ``traceparent``, so each service traced by stacktrail or osprofiler
records its spans under the call that reached it.  The block itself is one
span (``name``).  Other transports take the headers by hand:
``trace.headers()`` (a websocket message's ``headers``).

Threads: work submitted to a thread pool from inside the block runs in the
trace (``clients.executors``: openstacksdk's connection pool, asyncio's
``run_in_executor``, your own ``ThreadPoolExecutor``); asyncio tasks
inherit it.  A plain thread starts clean: hand it over with
``trace.wrap(fn)`` (or ``with trace.joined():`` inside it), which works
from any thread, also one that is not in the trace.

The client's own spans go to ``connection_string`` (use the services'
store, so that the whole tree is in one place), or, when it is None, to
the process's notifier (``stacktrail.notifier.set``); they are flushed
when the trace stops.  Starting a trace switches the ``requests`` and
executor integrations on for the process; outside a trace they cost one
context lookup per call.

Where a ``with`` block does not fit (a command line tool's start and end
hooks), ``t = client.trace(...).start()`` and later ``t.stop()``, in the
same thread or task.
"""

import contextlib

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import requests
from stacktrail.clients import executors
from stacktrail.common import context
from stacktrail.common import propagation


class Trace:
    """One client trace: a ``with`` block, or ``start()``/``stop()``.

    ``service`` names the client in the stored points; ``info`` is
    recorded with the trace's span; ``flush_timeout``: seconds ``stop``
    waits for the client's points to be written (0: leave them to the
    background flusher); ``carry``: thread pools carry the trace
    (``clients.executors``).  The trace that was current before ``start``
    (if any) is current again after ``stop``.
    """

    def __init__(self, hmac_key, connection_string=None, name="client",
                 info=None, service="client", flush_timeout=5.0,
                 carry=True):
        self.hmac_key = hmac_key
        self.connection_string = connection_string
        self.name = name
        self.info = info
        self.service = service
        self.flush_timeout = flush_timeout
        self.carry = carry
        self.profiler = None
        self.sink = None
        self.span = None          # the trace's own span (a context frame)
        self._previous = None
        self._stopped = False

    # -- start and stop --
    def start(self):
        """Start the trace here (this thread or task); returns self."""
        if self.profiler is not None:
            raise RuntimeError("this trace was started already")
        if not requests.is_enabled():   # keep a service's own options
            requests.enable()
        if self.carry:
            executors.enable()
        if self.connection_string:
            self.sink = notifier.create(self.connection_string,
                                        service=self.service)
        self._previous = context.current.get()
        writing = context.writer.set(
            self.sink.put if self.sink is not None else None)
        try:
            self.profiler = profiler.init(self.hmac_key)
        finally:
            context.writer.reset(writing)
        if self.carry:
            setattr(self.profiler, executors.CARRY, True)
        profiler.start(self.name, self.info)
        self.span = context.current.get()
        return self

    def stop(self, error=None, info=None):
        """Close the trace's span, make the previous trace current again
        and flush.  ``error``: the exception that ended the work (recorded
        as ``etype``/``message``); ``info``: more to record at the stop.
        Harmless when called twice."""
        if self.profiler is None or self._stopped:
            return
        self._stopped = True
        try:
            if self.span is not None:
                stop_info = dict(info or {})
                if error is not None:
                    stop_info.update(profiler.error_info(error))
                context.current.set(self.span)
                profiler.stop(stop_info or None)
        finally:
            context.current.set(self._previous)
            if self.flush_timeout:
                self.flush(self.flush_timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, etype, exc, tb):
        self.stop(exc)
        return False

    # -- what a script asks of it --
    @property
    def id(self):
        """The base id: what ``stacktrail trace show`` takes."""
        return self.profiler.get_base_id() if self.profiler else None

    def headers(self):
        """The trace headers for a call made here by hand (osprofiler's
        ``X-Trace-Info``/``X-Trace-HMAC`` and W3C ``traceparent``); from a
        thread outside the trace, those of the trace's own span."""
        with self.joined():
            return propagation.outgoing_headers()

    def _position(self):
        """Where handed-over work hangs: the caller's current span when it
        is inside this trace, else the trace's own span."""
        frame = context.current.get()
        if frame is not None and frame.profiler is self.profiler:
            return frame
        return self.span

    def joined(self):
        """``with trace.joined():`` runs a block inside this trace, from
        any thread (its own position is put back afterwards)."""
        if self.span is None:
            return contextlib.nullcontext()
        return context.restored(self._position())

    def wrap(self, fn):
        """``fn`` bound to this trace, to run in any thread:
        ``threading.Thread(target=trace.wrap(work)).start()``."""
        position = self._position()
        return fn if position is None else executors.bound(position, fn)

    def submit(self, executor, fn, *args, **kwargs):
        """``executor.submit`` of ``fn`` inside this trace (any executor,
        also one whose class the executor integration does not know)."""
        return executor.submit(self.wrap(fn), *args, **kwargs)

    def flush(self, timeout=5.0):
        """Deliver the client's buffered points; True when none are left."""
        flush = getattr(self.sink or notifier.get(), "flush", None)
        return flush(timeout) if flush is not None else True


def trace(hmac_key, connection_string=None, name="client", info=None,
          service="client", flush_timeout=5.0, carry=True):
    """A new trace: ``with trace(key[, store]) as t:`` around the work, or
    ``t = trace(key, store).start()`` ... ``t.stop()`` (see ``Trace``)."""
    return Trace(hmac_key, connection_string, name=name, info=info,
                 service=service, flush_timeout=flush_timeout, carry=carry)


def current_id():
    """The id of the trace current here (None outside a trace), e.g. for
    a log line deep in a script."""
    prof = profiler.get()
    return prof.get_base_id() if prof is not None else None
