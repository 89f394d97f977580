"""What every integration shares: patching, guarded hooks and spans.

Two kinds of span are made here:

* ``Span`` wraps a call the service makes (an RPC, an HTTP request, a
  driver method).  It is pushed on the trace's span stack so that whatever
  runs inside it, including the trace info sent to a callee, is its child.
* ``leaf_start``/``leaf_stop`` make a span that is never pushed: a SQL
  statement, a MongoDB or Redis command.  The caller keeps the handle on the
  library's own per-call object, so interleaved calls (asyncio, pipelines,
  pymongo events) can never close each other's span.

Every hook body runs through ``guard``: a failure inside tracing is logged
(once per integration, then at debug level) and swallowed.
"""

import logging
import threading

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import propagation

LOG = logging.getLogger("stacktrail.integrations")

_current = context.current
_failures = {}
_MISSING = object()

# Set by a synchronous notifier while it writes (common.sink): its own Redis
# or SQL writes must not be traced (endless recursion).  A buffered sink
# writes from its flusher thread, where no trace is open.
_emitting = context.emitting


def active():
    """True when a trace is open here and no notifier is writing."""
    return _current.get() is not None and not _emitting.get()


def carries_untraced():
    """True when a request not traced here has a W3C context to pass on
    (``propagation.untraced``) and no notifier is writing."""
    return propagation.untraced.get() is not None and not _emitting.get()


def carrying():
    """``active() or carries_untraced()`` in one call, for the checks made
    on every message a service sends: a trace or an untraced request's W3C
    context to write, and no notifier writing."""
    return (_current.get() is not None or
            propagation.untraced.get() is not None) and not _emitting.get()


# Several services in one process (functional tests, all-in-one nodes):
# an adapter marks the objects that serve a service (an RPC server's
# endpoints) with (service, host).
SERVES = "_stacktrail_serves"


def serving_writer(objects):
    """The ``put`` of the service the first marked object serves, or None
    (the process's notifier records)."""
    for obj in objects:
        serves = getattr(obj, SERVES, None)
        if serves:
            return context.writer_of(*serves)
    return None


def failures():
    """Count of swallowed tracing failures per integration."""
    return dict(_failures)


def swallowed(where):
    """Record and log a tracing failure; call it from an ``except``."""
    count = _failures.get(where, 0) + 1
    _failures[where] = count
    log = LOG.warning if count == 1 else LOG.debug
    log("stacktrail: tracing failure in %s ignored (%d so far)", where,
        count, exc_info=True)


def guard(where, fn, *args):
    """``fn(*args)``; a failure is swallowed and gives None."""
    try:
        return fn(*args)
    except Exception:
        swallowed(where)
        return None


# --- spans -----------------------------------------------------------------

def error_info(exc, info=None):
    """Stop info for an exception: ``etype``/``message`` as osprofiler."""
    merged = dict(info) if info else {}
    merged.update(profiler.error_info(exc))
    return merged


class Span:
    """``with Span(where, name, info) as span:`` a pushed span.

    Open only when a trace is active; ``span.stop_info`` is recorded at
    stop, plus ``etype``/``message`` when the block raises.  The span is
    closed however the block ends.
    """

    __slots__ = ("where", "name", "info", "stop_info", "frame")

    def __init__(self, where, name, info=None):
        self.where = where
        self.name = name
        self.info = info
        self.stop_info = None
        self.frame = None

    @property
    def opened(self):
        return self.frame is not None

    def __enter__(self):
        frame = _current.get()
        if frame is not None and not _emitting.get():
            try:
                self.frame = profiler.open_span(frame, self.name, self.info)
            except Exception:
                swallowed(self.where)
        return self

    def __exit__(self, etype, exc, tb):
        frame, self.frame = self.frame, None
        if frame is not None:
            info = self.stop_info
            if exc is not None:
                info = guard(self.where, error_info, exc, info)
            # Exactly our span: a callee that left spans open (or closed
            # too many) must not make us pop the wrong one.
            guard(self.where, profiler.close_span, frame, info)
        return False


def leaf_start(name, info):
    """Emit the start of an unpushed span; returns its handle (or None).

    ``info`` is the integration's own dict for this span, recorded as it
    is (never changed afterwards)."""
    frame = _current.get()
    if frame is None or _emitting.get():
        return None
    return profiler.open_leaf(frame, name, info)


def leaf_stop(handle, info=None):
    """Emit the stop of a span made by ``leaf_start`` (None is ignored)."""
    if handle is not None:
        profiler.close_leaf(handle, info)


# --- patching --------------------------------------------------------------

class Patcher:
    """Replaces attributes and puts back exactly what was there.

    An attribute the owner only inherited is deleted again on restore, so
    the class (or instance) ends up with the same ``__dict__`` as before.
    """

    def __init__(self):
        self._saved = []

    def patch(self, owner, attr, replacement):
        original = vars(owner).get(attr, _MISSING) \
            if hasattr(owner, "__dict__") else _MISSING
        self._saved.append((owner, attr, original))
        setattr(owner, attr, replacement)

    def restore(self):
        while self._saved:
            owner, attr, original = self._saved.pop()
            try:
                if original is _MISSING:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, original)
            except Exception:
                swallowed("restore %r.%s" % (owner, attr))

    def __bool__(self):
        return bool(self._saved)


class Switch:
    """On/off for wrappers that stay installed and read the flag per call."""

    def __init__(self):
        self.enabled = False

    def enable(self):
        changed, self.enabled = not self.enabled, True
        return changed

    def disable(self):
        changed, self.enabled = self.enabled, False
        return changed


def module_functions(switch):
    """An integration module's ``enable``, ``disable`` and ``is_enabled``.

    ``stacktrail.integrations.apply`` and services call these module-level
    names; the state lives in one Switch or Instrumentor.
    """
    def is_enabled():
        return switch.enabled
    return switch.enable, switch.disable, is_enabled


class Instrumentor:
    """Idempotent, reversible switch of one integration.

    Subclasses implement ``_enable(patcher, **options)`` (patch through the
    patcher so that ``disable`` restores the originals) and optionally
    ``_disable()`` for state that is not an attribute.
    """

    name = "integration"

    def __init__(self):
        self._lock = threading.RLock()
        self._patcher = Patcher()
        self.enabled = False
        self.options = {}

    def enable(self, **options):
        """Switch on; True if this call changed the state."""
        with self._lock:
            if self.enabled and options == self.options:
                return False
            if self.enabled:
                self.disable()
            try:
                self._enable(self._patcher, **options)
            except BaseException:
                self._patcher.restore()
                raise
            self.options = options
            self.enabled = True
            LOG.debug("stacktrail: %s tracing enabled", self.name)
            return True

    def disable(self):
        """Switch off and restore the originals; True if it changed."""
        with self._lock:
            if not self.enabled:
                return False
            try:
                self._disable()
            finally:
                self._patcher.restore()
                self.enabled = False
            LOG.debug("stacktrail: %s tracing disabled", self.name)
            return True

    def _enable(self, patcher, **options):
        raise NotImplementedError

    def _disable(self):
        pass
