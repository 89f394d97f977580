"""Tracing the methods of a class or of one object.

The one implementation behind the ``trace_drivers`` integration, the
per-project adapters and the osprofiler takeover:

* a traced method is a wrapper with the method's own parameter list
  (``common.wrappers``): with no trace active it costs one context lookup
  and a branch;
* with a trace active, the span is made only when its ``gate`` is open:
  None (always), the name of a live ``[profiler]`` flag, or a callable,
  read at each call, so a flag changed by SIGHUP takes effect at once;
* a method that returns a generator keeps its span open until the
  generator is exhausted or closed, and the generator's own work (the
  storage commands it sends) is recorded under it;
* every wrapper is marked (``common.wrappers.TRACED``): nothing is traced
  twice, and a method osprofiler's ``trace`` wrapped at import time is
  unwrapped first, so it costs what an untraced call costs.

Recorded: the qualified method name; arguments only with ``show_args``
(they often hold credentials).
"""

import inspect
import os
import types

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import settings
from stacktrail.common import wrappers
from stacktrail.integrations import _base

_current = context.current
_emitting = context.emitting.get
_open_span = profiler.open_span
_close_span = profiler.close_span
_GeneratorType = types.GeneratorType
_OBJECT_ATTR = "_stacktrail_traced_methods"
_OSPROFILER_FILE = os.path.join("osprofiler", "profiler.py")


def is_open(gate):
    """Whether ``gate`` lets a span through now (see the module)."""
    if gate is None:
        return True
    if gate.__class__ is str:
        return settings.current.flags.get(gate, False)
    return gate()


def is_traced(fn):
    """True for a stacktrail method wrapper (or a method bound to one)."""
    return wrappers.is_traced(fn)


def _osprofilers(fn):
    return getattr(getattr(fn, "__code__", None), "co_filename",
                   "").endswith(_OSPROFILER_FILE)


def unwrap_foreign(fn, decorators=False):
    """``fn`` without osprofiler's ``trace`` wrapper around it (and with
    ``decorators``, without ``profiler.trace``'s either: what osprofiler's
    names made once stacktrail took them over)."""
    while hasattr(fn, "__wrapped__") and (_osprofilers(fn) or (
            decorators and getattr(fn, wrappers.DECORATOR, False))):
        fn = fn.__wrapped__
    return fn


def traced(fn, name, qualname=None, gate=None, info=None,
           show_args=False):
    """``fn`` wrapped: a span ``name`` per call while ``gate`` is open.

    ``info`` is merged into the start info (an adapter's kind-specific
    fields); ``qualname`` is the recorded function name.
    """
    qualname = qualname or profiler._callable_name(fn)
    flag = gate.__class__ is str
    # Built once: the profiler copies what it records, never this dict.
    fixed = dict(info or {}, function={"name": qualname})

    def start_info(args, kwargs):
        if not show_args:
            return fixed
        return dict(fixed, function={"name": qualname, "args": str(args),
                                     "kwargs": str(kwargs)})

    def slow(*args, **kwargs):
        frame = _current.get()
        if frame is None or _emitting() or not (
                settings.current.flags.get(gate, False) if flag
                else is_open(gate)):   # a flag, the usual gate: no call
            return fn(*args, **kwargs)
        info = fixed if not show_args else \
            _base.guard(name, start_info, args, kwargs)
        span = _open_span(frame, name, info)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _stop(span, _base.guard(name, profiler.error_info, exc))
            raise
        if type(result) is _GeneratorType:
            _current.set(frame)  # open until the generator ends
            return _spanned(result, span)
        _close_span(span, None)
        return result

    if inspect.iscoroutinefunction(fn):
        wrapper = _coroutine(fn, name, gate, start_info)
    else:
        wrapper = wrappers.passthrough(fn, _current.get, slow) or \
            wrappers.generic(fn, _current.get, slow)
    wrappers.mark(wrapper)
    return wrapper


def _stop(frame, info):
    """Stop exactly ``frame``'s span, whatever the callee left open; the
    current position is then ``frame``'s parent."""
    _base.guard(frame.name, _close_span, frame, info)


def _spanned(gen, frame):
    """Run ``gen`` step by step inside ``frame``; stop it at the end.

    Each step runs in the consumer's context with ``frame`` current and the
    consumer's position restored after it, so the generator's work nests
    under its span and never leaks into the code iterating it.
    """
    outcome = None
    try:
        sent, thrown = None, None
        while True:
            item = _step(gen, frame, sent, thrown)
            sent, thrown = None, None
            try:
                sent = yield item
            except GeneratorExit:
                _step(gen, frame, None, None, close=True)
                raise
            except BaseException as exc:
                thrown = exc
    except StopIteration as done:
        return done.value
    except GeneratorExit:
        raise
    except BaseException as exc:
        outcome = _base.guard(frame.name, profiler.error_info, exc)
        raise
    finally:
        reset = _current.set(frame)
        try:
            _stop(frame, outcome)
        finally:
            _current.reset(reset)


def _step(gen, frame, sent, thrown, close=False):
    reset = _current.set(frame)
    try:
        if close:
            return gen.close()
        if thrown is not None:
            return gen.throw(thrown)
        return gen.send(sent)
    finally:
        _current.reset(reset)


def _coroutine(fn, name, gate, start_info):
    import functools

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        if not _base.active() or not is_open(gate):
            return await fn(*args, **kwargs)
        with _base.Span(name, name, start_info(args, kwargs)):
            return await fn(*args, **kwargs)
    return wrapper


# --- what to trace -----------------------------------------------------------

def _selected(attr_name, methods, private):
    if methods is not None:
        return attr_name in methods
    if attr_name.startswith("__"):
        return False
    return private or not attr_name.startswith("_")


def trace_class(cls, name, gate=None, methods=None, private=False,
                info=None, patcher=None, inherited=False):
    """Trace the plain methods ``cls`` defines (and, with ``inherited``,
    those it inherits, set on ``cls`` itself as osprofiler's trace_cls does).

    ``methods``: only these names; otherwise every public one (private
    ones too with ``private``).  With a ``patcher`` the change can be
    undone.  Returns the names traced.
    """
    prefix = "%s.%s" % (cls.__module__, cls.__qualname__)
    done = []
    for attr_name, attr in _class_functions(cls, inherited):
        if not _selected(attr_name, methods, private):
            continue
        fn = unwrap_foreign(attr)
        if is_traced(fn):
            continue
        _set(cls, attr_name, traced(fn, name, "%s.%s" % (prefix, attr_name),
                                    gate, info), patcher)
        done.append(attr_name)
    return done


def _class_functions(cls, inherited):
    """[(name, function)] a class defines (or resolves, with inherited)."""
    seen = {}
    for klass in cls.__mro__ if inherited else (cls,):
        if klass is object:
            continue
        for attr_name, attr in vars(klass).items():
            if attr_name not in seen:
                seen[attr_name] = attr
    return [(n, a) for n, a in seen.items() if inspect.isfunction(a)]


def untrace_class(cls, patcher=None):
    """Put back the plain methods osprofiler's ``trace`` wrapped in ``cls``
    (its decorators and ``TracedMeta``, run at import, or later through
    the names stacktrail took over): returns the names.

    For classes whose calls stacktrail records another way (an RPC
    manager's methods are the server side of the ``rpc`` span): they then
    cost what an untraced call costs, and record no arguments.
    """
    done = []
    for attr_name, attr in list(vars(cls).items()):
        plain = unwrap_foreign(attr, decorators=True) \
            if inspect.isfunction(attr) else attr
        if plain is not attr:
            _set(cls, attr_name, plain, patcher)
            done.append(attr_name)
    return done


def _set(owner, name, value, patcher):
    """``setattr``, through ``patcher`` (undone with it) when given."""
    if patcher is not None:
        patcher.patch(owner, name, value)
    else:
        setattr(owner, name, value)


def _object_methods(obj, methods, private):
    return [attr_name for attr_name, _ in _class_functions(type(obj), True)
            if _selected(attr_name, methods, private)]


def trace_object(obj, name, gate=None, methods=None, private=False,
                 info=None, show_args=False):
    """Trace the methods of one object through instance attributes, so it
    keeps its class (``isinstance``, ``type()`` and identity unchanged).
    Methods its class already has traced are left alone.  Returns ``obj``.
    """
    if not hasattr(obj, "__dict__"):
        _base.LOG.warning("stacktrail: %r has no __dict__ (slots), its calls "
                          "are not traced", type(obj))
        return obj
    done = vars(obj).setdefault(_OBJECT_ATTR, [])
    cls = type(obj)
    prefix = "%s.%s" % (cls.__module__, cls.__qualname__)
    for method in _object_methods(obj, methods, private):
        if method in done:
            continue
        bound = getattr(obj, method)
        if is_traced(bound):
            continue
        target = unwrap_foreign(getattr(bound, "__func__", bound))
        if target is not getattr(bound, "__func__", bound):
            bound = target.__get__(obj, cls)
        vars(obj)[method] = traced(bound, name, "%s.%s" % (prefix, method),
                                   gate, info, show_args)
        done.append(method)
    return obj


def untrace_object(obj):
    for method in vars(obj).pop(_OBJECT_ATTR, []):
        vars(obj).pop(method, None)
    return obj


def is_object_traced(obj):
    return _OBJECT_ATTR in getattr(obj, "__dict__", {})
