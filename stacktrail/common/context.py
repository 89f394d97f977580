"""The current trace, kept in a ContextVar, and helpers to carry it.

The variable holds an immutable frame (profiler, span id, parent frame), so a
task or thread that inherits or receives it can open its own child spans
without disturbing the frame of the code it came from.  asyncio tasks copy
the context when they are created; plain threads, executors and eventlet
greenthreads start clean, and the helpers below carry the trace on purpose.
"""

import contextvars
import functools

current = contextvars.ContextVar("stacktrail_frame", default=None)

# The sink ``put`` of the service doing the work here, when several services
# share a process (functional tests, all-in-one nodes): a trace started or
# joined in this context records that service and host.  None: the
# process's notifier (the last service initialised).
writer = contextvars.ContextVar("stacktrail_writer", default=None)

# True while a synchronous notifier writes a point (common.sink): the
# integrations leave its own store calls untraced.
emitting = contextvars.ContextVar("stacktrail_emitting", default=False)

# Set by the runtime: (service, host) -> the sink ``put`` recording as that
# service (None while tracing is off).  Where work for one of several
# services starts (an RPC dispatch, a WSGI app), the code sets ``writer``.
writer_for = None

# Set by the runtime while the integrations that only record (SQL, drivers,
# Redis ...) wait for the process's first trace: ``profiler.init`` calls it
# before that trace becomes current, and it unsets itself.
first_trace = None


def writer_of(service, host=None):
    """The ``put`` recording as ``service`` on ``host`` (None: the
    process's notifier)."""
    hook = writer_for
    return hook(service, host) if hook is not None else None


class Frame:
    """One open span: ``span_id`` under ``parent``, within ``profiler``."""

    __slots__ = ("profiler", "span_id", "parent", "name")

    def __init__(self, profiler, span_id, parent, name):
        self.profiler = profiler
        self.span_id = span_id
        self.parent = parent
        self.name = name


def capture():
    """A token for the current trace position (None when not tracing)."""
    return current.get()


class restored:
    """``with restored(token):`` runs a block at the captured position."""

    def __init__(self, token):
        self.token = token
        self.reset = None

    def __enter__(self):
        self.reset = current.set(self.token)

    def __exit__(self, *exc):
        current.reset(self.reset)


def wrap(fn):
    """``fn`` bound to the trace position of the caller of ``wrap``."""
    token = capture()

    @functools.wraps(fn)
    def carried(*args, **kwargs):
        with restored(token):
            return fn(*args, **kwargs)
    return carried


def submit(executor, fn, *args, **kwargs):
    """``executor.submit`` that runs ``fn`` inside the current trace."""
    return executor.submit(wrap(fn), *args, **kwargs)


def carried_submit(submit):
    """An executor class's ``submit`` that runs each callable inside the
    trace current where it was submitted (for a service's own pools, by
    replacing the method on the executor class)."""
    @functools.wraps(submit)
    def carrying(self, fn, *args, **kwargs):
        if current.get() is None:
            return submit(self, fn, *args, **kwargs)
        return submit(self, wrap(fn), *args, **kwargs)
    return carrying


def spawn_thread(target, *args, **kwargs):
    """Start a daemon thread running ``target`` inside the current trace."""
    import threading
    thread = threading.Thread(target=wrap(target), args=args, kwargs=kwargs,
                              daemon=True)
    thread.start()
    return thread


def green_spawn(fn, *args, **kwargs):
    """``eventlet.spawn`` that runs ``fn`` inside the current trace."""
    import eventlet
    return eventlet.spawn(wrap(fn), *args, **kwargs)
