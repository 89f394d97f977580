"""OpenTelemetry's API, recording into stacktrail traces.

Three pieces, installed together by ``install()``:

``TracerProvider`` / ``Tracer``
    ``start_span`` inside a stacktrail trace makes a span of that trace:
    same base id, its parent the current stacktrail span (or the span the
    given context holds).  The span keeps what the API gives it
    (attributes, events, links, status, exceptions) and writes its start
    and stop points when it ends, through the sink of the trace it belongs
    to, as info the kinds registry reads (``mapping``).  Like an
    OpenTelemetry SDK, a span that never ends is never recorded.
    Outside any stacktrail trace, stacktrail decides
    (``propagation.start_from_headers``: a remote parent is a caller's
    ``traceparent``, trusted or sampled as for a request; a root span is
    sampled at ``sampling_rate``); a span it does not trace is a
    ``NonRecordingSpan`` carrying the parent's context.  Inside a request
    that stacktrail decided not to trace, OpenTelemetry spans are not
    recorded either: the decision was made once.

``RuntimeContext``
    Put in front of OpenTelemetry's own (``opentelemetry.context``), so the
    two contexts are one: ``get_current()`` inside a stacktrail span holds
    a non-recording view of that span (trace id and span id of its W3C
    form), and ``attach`` of a context makes its span current for
    stacktrail too: a span of the bridge, a span of the same trace (an
    SDK's, beside), or a remote context, which is a caller's context as for
    a request (joined when trusted or sampled, otherwise passed on to
    stacktrail's outgoing calls).  Whichever was made current last is the
    current span of both.

``owners`` hooks
    oslo.messaging's and oslo.middleware's spans of operations stacktrail's
    integrations already record are absorbed into those spans.

When OpenTelemetry already has a real provider (an SDK set up by the
service or by oslo.middleware's ``init_tracing`` before stacktrail was
activated), the bridge does not replace it: OpenTelemetry allows one global
provider per process.  It logs one warning and works *beside* it: the
runtime context is shared all the same, so the SDK's spans inside a
stacktrail span carry its trace id and parent span id, and stacktrail spans
inside an SDK span of the same trace nest under it; the SDK keeps exporting
its own spans (nothing is absorbed or deduplicated then).

Everything here is guarded: a failure inside the bridge is counted and
logged once (``integrations._base.failures()["otel"]``) and the
instrumented code gets a non-recording span.
"""

import contextvars
import logging
import threading

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.context.context import _RuntimeContext
from opentelemetry.context.contextvars_context import \
    ContextVarsRuntimeContext
from opentelemetry.trace import NonRecordingSpan
from opentelemetry.trace import SpanContext
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode
from opentelemetry.trace import TraceFlags
from opentelemetry.trace import TraceState

from stacktrail import notifier as _notifier
from stacktrail import profiler
from stacktrail.common import context as st_context
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.common import propagation
from stacktrail.common.clock import now_ns
from stacktrail.integrations import _base
from stacktrail.otel import kind as _kind
from stacktrail.otel import mapping
from stacktrail.otel import owners

try:  # works for generator functions and coroutines alike (the API's own)
    from opentelemetry.util._decorator import _agnosticcontextmanager
except ImportError:  # pragma: no cover - older API releases
    import contextlib
    _agnosticcontextmanager = contextlib.contextmanager

LOG = logging.getLogger(__name__)
WHERE = "otel"

_current = st_context.current
_untraced = propagation.untraced
_emitting = st_context.emitting
_Frame = st_context.Frame
_INVALID_SPAN = trace_api.INVALID_SPAN
_SAMPLED = TraceFlags.SAMPLED
_RANDOM = TraceFlags.RANDOM_TRACE_ID

# (context attached last through the bridge, the stacktrail frame current
# after it, the remote span that attach decided about): tells whether
# OpenTelemetry's context or stacktrail's was made current last.
_attached = contextvars.ContextVar("stacktrail_otel_attached", default=None)


class _State:
    active = False   # installed and tracing on
    mode = "off"     # "global" or "beside" once installed


_state = _State()
_lock = threading.RLock()
_warned_beside = False


# --- ids ---------------------------------------------------------------------

_states = {}  # tracestate text -> TraceState


def _trace_state(text):
    if not text:
        return trace_api.DEFAULT_TRACE_STATE
    state = _states.get(text)
    if state is None:
        if len(_states) > 256:
            _states.clear()
        state = _states[text] = TraceState.from_header([text])
    return state


def _trace_int(prof):
    return ids.w3c_trace_int(prof.base_id)


def span_context(frame):
    """The OpenTelemetry SpanContext of a stacktrail span: the ids its
    ``traceparent`` carries."""
    prof = frame.profiler
    random = getattr(prof, "w3c_random", None)
    if random is None:
        random = ids.is_random_id(prof.base_id)
    return SpanContext(_trace_int(prof), ids.w3c_span_int(frame.span_id),
                       False, TraceFlags(_SAMPLED | (_RANDOM if random
                                                     else 0)),
                       _trace_state(prof.tracestate))


def _frame_for(sc, frame):
    """The frame standing for span ``sc`` of ``frame``'s trace."""
    if sc.span_id == ids.w3c_span_int(frame.span_id):
        return frame
    return _Frame(frame.profiler, ids.from_w3c_span(
        "%032x" % sc.trace_id, "%016x" % sc.span_id), frame, None)


# --- spans -------------------------------------------------------------------

class FrameView(NonRecordingSpan):
    """A stacktrail span as OpenTelemetry's current span (non-recording:
    its start was written already)."""

    def __init__(self, frame):
        super().__init__(span_context(frame))
        self.frame = frame


class Span(trace_api.Span):
    """A span started through the bridge.

    It is one of: a span of a stacktrail trace (``frame`` set, written when
    it ends); absorbed into an integration's span (``claim`` set: what it
    records goes into that span); or pending (``pending``: an integration
    decides later, see ``owners``), carrying its parent's context until
    then.
    """

    def __init__(self, tracer, name, kind, attributes, links, start_time,
                 parent_context=None, pending=False):
        self.scope = tracer.scope
        self.name = name
        self.kind = kind
        self.attributes = dict(attributes) if attributes else {}
        self.events = []
        self.links = []
        for link in links or ():
            self._link(getattr(link, "context", None))
        self.start_ns = start_time or now_ns()
        self.exception = None
        self.status_error = None  # None: not ERROR; else the description
        self.status_final = False
        self.ended = False
        self.frame = None
        self.claim = None
        self.pending = pending
        self.parent_context = parent_context
        self._context = None

    # what the API reads

    def get_span_context(self):
        frame = self.frame
        if frame is None:
            parent = self.parent_context
            return parent if parent is not None else \
                trace_api.INVALID_SPAN_CONTEXT
        context = self._context
        if context is None or context[0] is not frame:
            context = self._context = (frame, span_context(frame))
        return context[1]

    def is_recording(self):
        return not self.ended

    # what the API records

    def set_attribute(self, key, value):
        if not self.ended:
            self.attributes[key] = value

    def set_attributes(self, attributes):
        if not self.ended:
            self.attributes.update(attributes)

    def add_event(self, name, attributes=None, timestamp=None):
        if not self.ended and len(self.events) < mapping.MAX_EVENTS:
            self.events.append((name, timestamp or now_ns(),
                                dict(attributes) if attributes else {}))

    def add_link(self, context, attributes=None):
        if not self.ended:
            self._link(context)

    def _link(self, context):
        if isinstance(context, SpanContext) and context.is_valid:
            self.links.append((context.trace_id, context.span_id))

    def update_name(self, name):
        if not self.ended:
            self.name = name

    def set_status(self, status, description=None):
        if self.ended or self.status_final:
            return
        if isinstance(status, trace_api.Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.OK:
            self.status_error = None
            self.status_final = True
        elif code is StatusCode.ERROR:
            self.status_error = description or ""

    def record_exception(self, exception, attributes=None, timestamp=None,
                         escaped=False):
        if self.ended:
            return
        if self.exception is None:
            self.exception = profiler.error_info(exception)
        else:
            info = profiler.error_info(exception)
            self.add_event("exception", {
                "exception.type": info["etype"],
                "exception.message": info["message"]}, timestamp)

    def end(self, end_time=None):
        if self.ended:
            return
        self.ended = True
        if self.frame is not None and self.claim is None:
            _base.guard(WHERE, self._write, end_time or now_ns())

    def _write(self, end_ns):
        frame = self.frame
        prof = frame.profiler
        name, start, stop = mapping.infos(
            self.name, self.kind, self.scope, self.attributes, self.events,
            self.links, self.exception, self.status_error)
        put = prof.put or _notifier._put
        parent_id = frame.parent.span_id
        put((name, points.START, prof.base_id, parent_id, frame.span_id,
             self.start_ns, start))
        put((name, points.STOP, prof.base_id, parent_id, frame.span_id,
             end_ns, stop))

    # owners

    def adopt(self, claim):
        """Become the integration's span of ``claim``."""
        claim.span = self
        self.claim = claim
        self.frame = claim.frame
        self.pending = False

    def absorbed_info(self):
        return mapping.absorbed(self.kind, self.scope, self.attributes,
                                self.events, self.exception,
                                self.status_error)

    def __repr__(self):
        return "stacktrail.otel.Span(%r, %s)" % (self.name, self.kind)


# --- the tracer --------------------------------------------------------------

class Tracer(trace_api.Tracer):
    """Spans of one instrumentation scope (the tracer's name)."""

    def __init__(self, scope, version=None):
        self.scope = scope
        self.version = version

    def start_span(self, name, context=None, kind=SpanKind.INTERNAL,
                   attributes=None, links=None, start_time=None,
                   record_exception=True, set_status_on_exception=True):
        try:
            return _start(self, name, context, kind, attributes, links,
                          start_time)
        except Exception:
            _base.swallowed(WHERE)
            return _INVALID_SPAN

    @_agnosticcontextmanager
    def start_as_current_span(self, name, context=None,
                              kind=SpanKind.INTERNAL, attributes=None,
                              links=None, start_time=None,
                              record_exception=True,
                              set_status_on_exception=True,
                              end_on_exit=True):
        span = self.start_span(name, context, kind, attributes, links,
                               start_time, record_exception,
                               set_status_on_exception)
        with trace_api.use_span(
                span, end_on_exit=end_on_exit,
                record_exception=record_exception,
                set_status_on_exception=set_status_on_exception) as current:
            yield current


_NOT_RECORDED = object()


def _start(tracer, name, context, kind, attributes, links, start_time):
    parent = trace_api.get_current_span(context)
    if not _state.active or _emitting.get():
        return _non_recording(parent)
    kind = kind.name if isinstance(kind, SpanKind) else "INTERNAL"
    frame = _current.get()
    if frame is not None:
        claim = owners.claimed(tracer.scope, frame)
        if claim is not None:
            span = Span(tracer, name, kind, attributes, links, start_time)
            span.adopt(claim)
            return span
    elif owners.active and owners.deferred(tracer.scope, kind):
        sc = parent.get_span_context()
        return Span(tracer, name, kind, attributes, links, start_time,
                    sc if sc.is_valid else None, pending=True)
    under = _parent_frame(parent, frame, context)
    if under is _NOT_RECORDED:
        return _non_recording(parent)
    if under is None:
        under = _decide(parent)
        if under is None:
            return _non_recording(parent)
    span = Span(tracer, name, kind, attributes, links, start_time)
    span.frame = _Frame(under.profiler, ids.new_span_id(), under, None)
    return span


def _parent_frame(parent, frame, context):
    """The stacktrail frame a new span goes under, _NOT_RECORDED, or None
    (no stacktrail trace here: decide)."""
    if isinstance(parent, FrameView):
        return parent.frame
    if isinstance(parent, Span):
        return parent.frame if parent.frame is not None else _NOT_RECORDED
    sc = parent.get_span_context()
    if frame is None:
        if not sc.is_valid:
            return None
        attached = _attached.get()
        if context is None and attached is not None and \
                attached[2] is parent:
            return _NOT_RECORDED  # decided when it was attached
        if not sc.is_remote and not sc.trace_flags.sampled:
            return _NOT_RECORDED  # a local span that is not recorded
        return None
    if sc.is_valid and sc.trace_id == _trace_int(frame.profiler):
        return _frame_for(sc, frame)
    if not sc.is_valid or sc.is_remote:
        # Inside a stacktrail trace, a remote (or no) parent given
        # explicitly is the request's caller, whom stacktrail has joined.
        return frame
    return None


def _headers(sc):
    headers = {propagation.TRACEPARENT: "00-%032x-%016x-%02x" % (
        sc.trace_id, sc.span_id, sc.trace_flags & 0x03)}
    state = sc.trace_state.to_header() if sc.trace_state else ""
    if state:
        headers[propagation.TRACESTATE] = state
    return headers


def _decide(parent):
    """The root frame of a trace stacktrail starts for a span outside any
    trace, or None.  Its sampling rules decide, as for a request."""
    sc = parent.get_span_context()
    if sc.is_valid:
        headers = _headers(sc)
    elif _untraced.get() is not None:
        return None  # inside a request stacktrail decided not to trace
    else:
        headers = {}
    prof = contextvars.copy_context().run(propagation.start_from_headers,
                                          headers.get)
    return None if prof is None else prof.root


def _non_recording(parent):
    sc = parent.get_span_context()
    if sc.is_valid:
        return parent if type(parent) is NonRecordingSpan else \
            NonRecordingSpan(sc)
    view = _untraced_context()
    return _INVALID_SPAN if view is None else NonRecordingSpan(view)


def _untraced_context():
    """The W3C context of a request stacktrail does not trace, as a local
    unsampled SpanContext (None: there is none)."""
    carried = _untraced.get()
    if carried is None:
        return None
    made = getattr(carried, "_stacktrail_otel", None)
    if made is None:
        header = carried.headers().get(propagation.TRACEPARENT)
        fields = propagation.parse_traceparent_fields(header)
        if fields is None:
            return None
        made = SpanContext(fields[0], fields[1] & ids.LOW64, False,
                           TraceFlags(fields[2] & _RANDOM),
                           _trace_state(carried.tracestate))
        try:
            carried._stacktrail_otel = made
        except AttributeError:
            pass
    return made


# --- owners hooks ------------------------------------------------------------

def _pending(scope):
    runtime = _runtime()
    if runtime is None:
        return None
    span = trace_api.get_current_span(runtime.inner.get_current())
    if isinstance(span, Span) and span.pending and not span.ended and \
            span.scope == scope:
        return span
    return None


def _promote(span):
    frame = _current.get()
    if frame is None or not span.pending:
        return False
    span.pending = False
    span.frame = _Frame(frame.profiler, ids.new_span_id(), frame, None)
    _current.set(span.frame)
    return True


# --- the runtime context -----------------------------------------------------

class _Token:
    """What ``attach`` changed, for ``detach``."""

    __slots__ = ("inner", "frame", "untraced", "attached")

    def __init__(self, inner, frame, untraced, attached):
        self.inner = inner
        self.frame = frame
        self.untraced = untraced
        self.attached = attached


class RuntimeContext(_RuntimeContext):
    """OpenTelemetry's context and stacktrail's, kept as one."""

    def __init__(self, inner=None):
        self.inner = inner if inner is not None else \
            ContextVarsRuntimeContext()
        self._view = (None, None, None)

    def attach(self, context):
        inner = self.inner.attach(context)
        if not _state.active:
            return inner
        token = _Token(inner, _current.get(), _untraced.get(),
                       _attached.get())
        decided = None
        try:
            decided = _on_attach(context)
        except Exception:
            _base.swallowed(WHERE)
        _attached.set((context, _current.get(), decided))
        return token

    def get_current(self):
        context = self.inner.get_current()
        if not _state.active:
            return context
        frame = _current.get()
        if frame is None:
            if _untraced.get() is None or \
                    trace_api.get_current_span(context) is not _INVALID_SPAN:
                return context
            made = _untraced_context()
            if made is None:
                return context
            return trace_api.set_span_in_context(NonRecordingSpan(made),
                                                 context)
        attached = _attached.get()
        if attached is not None and attached[0] is context and \
                attached[1] is frame:
            return context
        view = self._view
        if view[0] is context and view[1] is frame:
            return view[2]
        made = trace_api.set_span_in_context(FrameView(frame), context)
        self._view = (context, frame, made)
        return made

    def detach(self, token):
        if type(token) is _Token:
            _current.set(token.frame)
            _untraced.set(token.untraced)
            _attached.set(token.attached)
            token = token.inner
        self.inner.detach(token)


def _on_attach(context):
    """Make the span of an attached context stacktrail's current position.
    Returns the remote span it decided about, if any."""
    span = trace_api.get_current_span(context)
    if isinstance(span, (Span, FrameView)):
        if span.frame is not None:
            _current.set(span.frame)
        return None
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    frame = _current.get()
    if frame is not None and sc.trace_id == _trace_int(frame.profiler):
        _current.set(_frame_for(sc, frame))
        return None
    if not sc.is_remote:
        return None  # another provider's span of another trace: its own
    # A caller's context: joined as stacktrail joins a request's caller.
    headers = _headers(sc)
    if propagation.start_from_headers(headers.get) is None:
        _current.set(None)
    return span


_installed_runtime = None


def _runtime():
    return _installed_runtime


def _install_runtime_context():
    global _installed_runtime
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if isinstance(runtime, RuntimeContext):
        _installed_runtime = runtime
        return
    _installed_runtime = RuntimeContext(runtime)
    otel_context._RUNTIME_CONTEXT = _installed_runtime


# --- the provider ------------------------------------------------------------

class TracerProvider(trace_api.TracerProvider):
    """stacktrail as OpenTelemetry's tracer provider (``[profiler]
    otel_bridge``).  Inert (non-recording spans that carry the context)
    while the bridge is off."""

    def __init__(self):
        self._tracers = {}

    def get_tracer(self, instrumenting_module_name,
                   instrumenting_library_version=None, schema_url=None,
                   attributes=None):
        key = (instrumenting_module_name or "", instrumenting_library_version)
        tracer = self._tracers.get(key)
        if tracer is None:
            if len(self._tracers) > 1024:
                self._tracers.clear()
            tracer = self._tracers[key] = Tracer(*key)
        return tracer

    def force_flush(self, timeout_millis=30000):
        """Flush the process's trace sink (what SDK users call at exit)."""
        flush = getattr(_notifier.get(), "flush", None)
        if flush is not None:
            _base.guard(WHERE, flush, timeout_millis / 1000.0)
        return True

    def shutdown(self):
        """Nothing to do: stacktrail's runtime owns the sinks."""


PROVIDER = TracerProvider()


def install():
    """Bridge on: OpenTelemetry's global provider when none is set yet,
    beside the one that is otherwise.  Returns True."""
    global _warned_beside
    with _lock:
        _kind.register()
        _install_runtime_context()
        provider = trace_api.get_tracer_provider()
        if provider is not PROVIDER and \
                isinstance(provider, trace_api.ProxyTracerProvider):
            trace_api.set_tracer_provider(PROVIDER)
            provider = trace_api.get_tracer_provider()
        if provider is PROVIDER:
            _state.mode = "global"
        else:
            _state.mode = "beside"
            if not _warned_beside:
                _warned_beside = True
                LOG.warning(
                    "stacktrail: OpenTelemetry already has a tracer provider "
                    "(%s.%s); otel_bridge leaves it in place: its spans stay "
                    "in its own pipeline (with stacktrail's trace and span "
                    "ids) and are not deduplicated. Activate stacktrail "
                    "before it to make the bridge the provider.",
                    type(provider).__module__, type(provider).__qualname__)
        owners.hooks.pending = _pending
        owners.hooks.promote = _promote
        owners.active = _state.mode == "global"
        _state.active = True
    return True


def uninstall():
    """Bridge inert: the provider (if global) records nothing, the
    contexts are OpenTelemetry's own again."""
    with _lock:
        _state.active = False
        owners.active = False


def mode():
    return _state.mode if _state.active else "off"
