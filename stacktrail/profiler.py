"""The osprofiler-compatible tracing API.

Same names, signatures and meaning as ``osprofiler.profiler`` 4.x; code
switches by changing its import.  What differs is underneath: the current
trace lives in a ContextVar (``common.context``), so asyncio tasks and
threads never see each other's trace, and a trace point costs a clock read,
an integer id and a hand-off to the notifier's sink.  Formatting happens
later, off the request thread.

When no trace is active every entry point returns after one context lookup.
"""

from stacktrail import notifier as _notifier
from stacktrail.common import context as _context
from stacktrail.common import ids as _ids
from stacktrail.common import points as _points
from stacktrail.common import settings as _settings
from stacktrail.common import wrappers as _wrappers
from stacktrail.common.clock import now_ns as _now_ns

_current = _context.current
_Frame = _context.Frame
_new_id = _ids.new_id
# ids.new_span_id, inlined where every span gets its id: one Python call
# less per span on the request path, where the code runs cold.
_getrandbits = _ids.getrandbits
_SPAN_LOW_BITS = _ids.SPAN_LOW_BITS
START = _points.START
STOP = _points.STOP


class _Profiler:
    """One trace: its base id, signing key and W3C tracestate.

    The span stack is not kept here but in the context, so the same trace
    can be open in several tasks at once.  ``put`` is the sink of the
    service recording this part of the trace when the code that started it
    named one (``common.context.writer``: several services in one process);
    None means the process's notifier.
    """

    def __init__(self, hmac_key, base_id=None, parent_id=None,
                 tracestate=None):
        self.hmac_key = hmac_key
        self.put = _context.writer.get()
        self.base_id = _internal_id(base_id) if base_id else _new_id()
        self.root = _Frame(self, self.base_id, None, None)
        self.tracestate = tracestate
        self._base_text = None
        if parent_id:
            self.root = _Frame(self, _internal_id(parent_id), self.root, None)

    def get_base_id(self):
        if self._base_text is None:
            self._base_text = _ids.to_uuid(self.base_id)
        return self._base_text

    def _frame(self):
        frame = _current.get()
        return frame if frame is not None and frame.profiler is self \
            else self.root

    def get_parent_id(self):
        frame = self._frame()
        return _ids.to_uuid((frame.parent or frame).span_id)

    def get_id(self):
        return _ids.to_uuid(self._frame().span_id)

    def get_shorten_id(self, uuid_id):
        """The 64-bit id OpenTracing-era drivers used: the W3C span id."""
        return _ids.span_id_hex(uuid_id).lstrip("0") or "0"

    def start(self, name, info=None):
        start(name, info)

    def stop(self, info=None):
        stop(info)


def _own(info):
    """A private copy of the caller's info (never kept, never changed).

    Anything that is not a mapping is kept as text rather than raised:
    tracing never fails the call it traces.
    """
    if type(info) is dict:
        return info.copy()
    try:
        return dict(info)
    except (TypeError, ValueError):
        return {"info": repr(info)}


def _internal_id(value):
    """Ints for canonical UUID text; other text is kept as the peer sent it."""
    if type(value) is int:
        return value
    number = _ids.canonical_int(value)
    return value if number is None else number


def init(hmac_key, base_id=None, parent_id=None):
    """Start a trace in the current context and return its profiler.

    Unlike osprofiler, a second ``init`` always starts afresh: a worker
    reused for another request never continues the previous one's trace.
    With ``[profiler] enabled = false`` the profiler is returned but not
    made current: a service switched off records nothing, whoever calls.
    """
    profiler = _Profiler(hmac_key, base_id=base_id, parent_id=parent_id)
    if not _settings.current.enabled:
        _current.set(None)
        return profiler
    if _context.first_trace is not None:
        _context.first_trace()
    _current.set(profiler.root)
    return profiler


def get():
    """The active trace's profiler, or None."""
    frame = _current.get()
    return frame.profiler if frame is not None else None


def clean():
    """Forget the trace of the current context."""
    _current.set(None)


def start(name, info=None):
    """Open a span named ``name``; ``info`` is copied, never kept or changed.

    ``open_span`` and the usual ``_own`` inlined: the most called entry
    point of code traced by hand (about a tenth of a start + stop pair).
    """
    frame = _current.get()
    if frame is None:
        return
    # _own, its common case inlined; an empty info records None
    info = (info.copy() if info.__class__ is dict else _own(info)) \
        if info else None
    prof = frame.profiler
    span = _Frame(prof, _ids.SPAN_HIGH + _getrandbits(_SPAN_LOW_BITS), frame,
                  name)
    _current.set(span)
    (prof.put or _notifier._put)((name, START, prof.base_id, frame.span_id,
                                  span.span_id, _now_ns(), info))


def stop(info=None):
    """Close the innermost open span; harmless when none is open
    (``close_span`` inlined, as in ``start``)."""
    frame = _current.get()
    if frame is None or frame.name is None:
        return
    # _own, its common case inlined; an empty info records None
    info = (info.copy() if info.__class__ is dict else _own(info)) \
        if info else None
    parent = frame.parent
    _current.set(parent)
    prof = frame.profiler
    (prof.put or _notifier._put)((frame.name, STOP, prof.base_id,
                                  parent.span_id, frame.span_id, _now_ns(),
                                  info))


def start_detached(name, info=None):
    """Open a span that does not become current; returns its handle.

    For spans keyed on a library's own per-call object (a SQL execution
    context, a pymongo request id) that interleave with other calls and
    must not sit on the span stack.  None when no trace is active.
    """
    frame = _current.get()
    if frame is None:
        return None
    return open_leaf(frame, name, _own(info) if info else None)


def stop_detached(handle, info=None):
    """Close a span opened with ``start_detached`` (None is ignored)."""
    if handle is not None:
        close_leaf(handle, _own(info) if info else None)


# --- the span path of integrations -------------------------------------------
# The public functions above look the current frame up and copy the
# caller's info.  An integration has already read the frame (to decide
# whether to trace at all) and builds a fresh info dict for each span,
# which nothing changes afterwards: these take both as they are.  They
# only build tuples, so they cannot fail the traced call.

def open_span(frame, name, info):
    """Push a span ``name`` under ``frame`` (the current one); returns it."""
    prof = frame.profiler
    span = _Frame(prof, _ids.SPAN_HIGH + _getrandbits(_SPAN_LOW_BITS), frame,
                  name)
    _current.set(span)
    (prof.put or _notifier._put)((name, START, prof.base_id, frame.span_id,
                                  span.span_id, _now_ns(), info))
    return span


def close_span(span, info=None):
    """Stop exactly ``span``, whatever its callees left open or closed;
    the current position is then its parent."""
    parent = span.parent
    _current.set(parent)
    prof = span.profiler
    (prof.put or _notifier._put)((span.name, STOP, prof.base_id,
                                  parent.span_id, span.span_id, _now_ns(),
                                  info))


def open_leaf(frame, name, info):
    """A span under ``frame`` that is never pushed; returns its handle."""
    prof = frame.profiler
    put = prof.put or _notifier._put
    handle = (name, prof.base_id, frame.span_id,
              _ids.SPAN_HIGH + _getrandbits(_SPAN_LOW_BITS), put)
    put((name, START, handle[1], handle[2], handle[3], _now_ns(), info))
    return handle


def close_leaf(handle, info=None):
    """Stop a span made by ``open_leaf`` (or ``start_detached``)."""
    name, base_id, parent_id, span_id, put = handle
    put((name, STOP, base_id, parent_id, span_id, _now_ns(), info))


def _class_name(cls):
    module = cls.__module__
    if module in (None, "builtins", "exceptions"):
        return cls.__qualname__
    return "%s.%s" % (module, cls.__qualname__)


def error_info(exc):
    """The stop info recorded for an exception.

    Every traced exception is recorded here (``@trace``, ``Trace``, the
    WSGI span, every integration), so this is where database errors lose
    the values they carry: SQLAlchemy's ``[parameters: ...]`` and the row
    values a server echoes are masked unless ``show_sql_parameters``
    (``common.redact.error_message``).
    """
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not replace the real error
        message = "<unprintable %s>" % type(exc).__name__
    else:
        try:
            from stacktrail.common import redact
            message = redact.error_message(exc, message)
        except Exception:  # never let masking fail the traced call
            message = "<%s: message withheld>" % type(exc).__name__
    return {"etype": _class_name(type(exc)), "message": message}


def _callable_name(fn):
    owner = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "")
    return "%s.%s" % (owner, name) if owner else name


def _is_coroutine_function(fn):
    code = getattr(fn, "__code__", None)
    return bool(code and code.co_flags & 0x80)  # CO_COROUTINE


def _mark_traced(fn, allow_multiple_trace):
    times = getattr(fn, "__traced__", 0)
    if times and not allow_multiple_trace:
        raise ValueError("Function '%s' has already been traced %d times"
                         % (fn, times))
    try:
        fn.__traced__ = times + 1
    except AttributeError:
        pass


def trace(name, info=None, hide_args=False, hide_result=True,
          allow_multiple_trace=True):
    """Decorator: every call of the function is a span named ``name``.

    The call itself never changes: the wrapper takes the parameters the
    function's own code takes (not those of a function it wraps), returns
    or raises what the function does, traced or not.  ``staticmethod``,
    ``classmethod`` and ``property`` objects stay what they are, with the
    function(s) inside traced.
    """
    base_info = dict(info) if info else {}

    def decorator(fn):
        if isinstance(fn, (staticmethod, classmethod)):
            return type(fn)(decorator(fn.__func__))
        if isinstance(fn, property):
            return type(fn)(*(decorator(f) if f is not None else None
                              for f in (fn.fget, fn.fset, fn.fdel)),
                            fn.__doc__)
        _mark_traced(fn, allow_multiple_trace)
        fn_name = _callable_name(fn)
        current_frame = _current.get  # a closure cell: the cheapest lookup

        def start_info(args, kwargs):
            function = {"name": fn_name}
            if not hide_args:
                function["args"] = str(args)
                function["kwargs"] = str(kwargs)
            return dict(base_info, function=function)

        def stop_info(result):
            return None if hide_result else {
                "function": {"result": repr(result)}}

        if _is_coroutine_function(fn):
            async def traced_async(*args, **kwargs):
                start(name, start_info(args, kwargs))
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    stop(error_info(exc))
                    raise
                stop(stop_info(result))
                return result
            return _wrappers.mark_decorator(
                _wrappers.passthrough(fn, current_frame, traced_async,
                                      is_async=True)
                or _wrappers.generic_async(fn, current_frame, traced_async))

        def traced(*args, **kwargs):
            start(name, start_info(args, kwargs))
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                stop(error_info(exc))
                raise
            stop(stop_info(result))
            return result

        return _wrappers.mark_decorator(
            _wrappers.passthrough(fn, current_frame, traced)
            or _wrappers.generic(fn, current_frame, traced))

    return decorator


def _traceable(name, attr, trace_private, trace_static, trace_class):
    """(trace it?, re-wrapper) for one class attribute, as osprofiler."""
    if name.startswith("__"):
        return False, None
    if name.startswith("_") and not trace_private:
        return False, None
    if isinstance(attr, staticmethod):
        return trace_static, staticmethod
    if isinstance(attr, classmethod):
        return trace_class, classmethod
    return True, None


def _raw_attr(cls, name):
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def trace_cls(name, info=None, hide_args=False, hide_result=True,
              trace_private=False, allow_multiple_trace=True,
              trace_class_methods=False, trace_static_methods=False):
    """Class decorator: trace every public method (see osprofiler)."""
    import inspect

    def decorator(cls):
        klass = cls if inspect.isclass(cls) else type(cls)
        chosen = []
        for attr_name, attr in inspect.getmembers(cls):
            if not (inspect.ismethod(attr) or inspect.isfunction(attr)):
                continue
            if _wrappers.is_traced(attr):
                continue  # an adapter traces it already (flag-gated)
            ok, rewrap = _traceable(attr_name, _raw_attr(klass, attr_name),
                                    trace_private, trace_static_methods,
                                    trace_class_methods)
            if ok:
                chosen.append((attr_name, attr, rewrap))
        if not allow_multiple_trace:
            for attr_name, attr, _ in chosen:
                if getattr(attr, "__traced__", 0):
                    raise ValueError("Can not apply new trace on top of "
                                     "previously traced attribute '%s'"
                                     % attr_name)
        for attr_name, attr, rewrap in chosen:
            if klass is not cls:
                # An instance: its own attribute, bound as getmembers gave
                # it (a classmethod object there would not be callable).
                rewrap = None
            elif rewrap is classmethod:
                attr = attr.__func__  # getmembers gave it bound to the class
            traced = trace(name, info=info, hide_args=hide_args,
                           hide_result=hide_result)(attr)
            setattr(cls, attr_name, rewrap(traced) if rewrap else traced)
        return cls

    return decorator


class TracedMeta(type):
    """Metaclass tracing the methods a class defines, per ``__trace_args__``.

    ``__trace_args__`` needs ``name``; it also takes ``info``, ``hide_args``,
    ``hide_result``, ``trace_private`` and ``allow_multiple_trace``.
    """

    def __init__(cls, cls_name, bases, attrs):
        super().__init__(cls_name, bases, attrs)
        trace_args = dict(getattr(cls, "__trace_args__", {}))
        trace_private = trace_args.pop("trace_private", False)
        allow_multiple = trace_args.pop("allow_multiple_trace", True)
        if "name" not in trace_args:
            raise TypeError("Please specify __trace_args__ class level "
                            "dictionary attribute with mandatory 'name' key "
                            "- e.g. __trace_args__ = {'name': 'rpc'}")
        import inspect
        for attr_name, value in attrs.items():
            if not (inspect.ismethod(value) or inspect.isfunction(value)):
                continue
            if not _traceable(attr_name, value, trace_private, False,
                              False)[0]:
                continue
            if not allow_multiple and getattr(value, "__traced__", 0):
                raise ValueError("Can not apply new trace on top of "
                                 "previously traced attribute '%s'"
                                 % attr_name)
            setattr(cls, attr_name, trace(**trace_args)(value))


class Trace:
    """``with Trace(name, info):`` is a span around the block."""

    def __init__(self, name, info=None):
        self._name = name
        self._info = info

    def __enter__(self):
        start(self._name, info=self._info)

    def __exit__(self, etype, value, traceback):
        stop(error_info(value) if value is not None else None)
