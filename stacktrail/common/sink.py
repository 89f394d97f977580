"""Where the profiler hands trace points: the contract of ``notifier``.

A sink has two doors.  ``put(point)`` is the request path: it receives the
raw tuple of ``common.points`` and must only enqueue it (never format, never
do I/O, never raise).  Calling the sink with a formatted dict is osprofiler's
notifier interface, kept for code that calls ``notifier.notify`` directly.
"""

from stacktrail.common import context
from stacktrail.common import points


class Sink:
    """Base: subclasses override ``put`` (raw points) and/or ``__call__``."""

    dropped = 0

    def put(self, point):
        self(points.to_message(point))

    def __call__(self, info, context=None):
        pass

    def flush(self, timeout=None):
        """Deliver what is buffered; True when nothing is left."""
        return True

    def close(self, timeout=None):
        return self.flush(timeout)


class NoopSink(Sink):
    """Tracing on, points discarded: ``noop://``, for measuring overhead."""

    def put(self, point):
        pass


class CallableSink(Sink):
    """osprofiler's synchronous semantics for a plain callable.

    The callable receives each formatted message at once, on the caller's
    thread, exactly as osprofiler's ``notifier.set(fn)`` does.
    """

    def __init__(self, fn):
        self.fn = fn

    def put(self, point):
        reset = context.emitting.set(True)   # its store calls: untraced
        try:
            self.fn(points.to_message(point))
        except Exception:
            # Tracing never raises into the service it traces.
            import logging  # not on the import path of the profiler
            self.dropped += 1
            logging.getLogger(__name__).debug(
                "stacktrail: notifier %r failed", self.fn, exc_info=True)
        finally:
            context.emitting.reset(reset)

    def __call__(self, info, context=None):
        self.fn(info)
