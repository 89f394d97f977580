"""Wrappers that keep the wrapped function's own parameter list.

A ``def wrapper(*args, **kwargs)`` allocates a tuple and a dict on every
call, traced or not.  Generating the wrapper with the function's exact
parameters passes arguments straight through, so when no trace is active a
traced call costs one context lookup, a branch and the call itself.
"""

import functools
import keyword
import types

# Code object flags, as in the inspect module (not imported: it costs
# milliseconds at start).
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08

# Set on every wrapper stacktrail's method tracing makes: whoever meets a
# marked function (a second adapter rule, osprofiler's trace_cls called by
# the service) leaves it alone instead of tracing it twice.
TRACED = "__stacktrail_traced__"


def mark(wrapper):
    try:
        setattr(wrapper, TRACED, True)
    except AttributeError:
        pass
    return wrapper


# Set on the wrappers ``profiler.trace`` (the osprofiler-compatible
# decorator) makes, also when osprofiler's names lead there.
DECORATOR = "__stacktrail_decorator__"


def mark_decorator(wrapper):
    try:
        setattr(wrapper, DECORATOR, True)
    except AttributeError:
        pass
    return wrapper


def is_traced(fn):
    """True for a marked wrapper, or a method bound to one."""
    return bool(getattr(getattr(fn, "__func__", fn), TRACED, False))


_TEMPLATE = """\
def {name}({params}):
    if _st_current() is None:
        return _st_fn({call})
    return _st_traced({call})
"""

_ASYNC_TEMPLATE = """\
async def {name}({params}):
    if _st_current() is None:
        return await _st_fn({call})
    return await _st_traced({call})
"""


def passthrough(fn, current, traced, is_async=False):
    """``fn`` when ``current()`` is None, else ``traced`` with the same
    arguments; None when ``fn`` is not a plain Python function (or a
    method bound to one), whose parameters its code object tells exactly.

    The wrapper takes exactly the parameters ``fn`` itself takes, read from
    its code, never from ``inspect.signature``: a decorator may have set
    ``__wrapped__`` (``functools.wraps``) or ``__signature__`` while taking
    other arguments than what it wraps (it injects a ``context`` argument,
    it consumes a ``timeout=`` keyword), and a call must reach ``fn``
    exactly as written, or fail exactly as ``fn`` would.  Any other
    callable (a partial, a builtin, an object with ``__call__``) gets
    ``generic``.
    """
    try:
        params, call, defaults = _parameters(fn)
        name = getattr(fn, "__name__", None)
        if not (isinstance(name, str) and name.isidentifier()
                and not keyword.iskeyword(name)
                and not name.startswith("_st_")):
            name = "traced"
        template = _ASYNC_TEMPLATE if is_async else _TEMPLATE
        namespace = dict(defaults, _st_current=current, _st_fn=fn,
                         _st_traced=traced)
        exec(template.format(name=name, params=", ".join(params),
                             call=", ".join(call)), namespace)
        wrapper = namespace[name]
    except Exception:  # anything unexpected: the *args/**kwargs wrapper
        return None
    return functools.wraps(fn)(wrapper)


def generic(fn, current, traced):
    """The same switch with ``*args, **kwargs`` (any callable)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if current() is None:
            return fn(*args, **kwargs)
        return traced(*args, **kwargs)
    return wrapper


def generic_async(fn, current, traced):
    """``generic`` for a coroutine function that ``passthrough`` refused."""
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        if current() is None:
            return await fn(*args, **kwargs)
        return await traced(*args, **kwargs)
    return wrapper


def _parameters(fn):
    """(parameter texts, call texts, defaults namespace) of ``fn``, read
    from its code object; TypeError for anything but a plain function or
    a method bound to one."""
    func, skip = fn, 0
    if type(fn) is types.MethodType:
        func, skip = fn.__func__, 1
    if type(func) is not types.FunctionType:
        raise TypeError("not a plain function")
    code = func.__code__
    names = code.co_varnames
    positional = list(names[:code.co_argcount])
    posonly = code.co_posonlyargcount
    keyword_only = names[code.co_argcount:
                         code.co_argcount + code.co_kwonlyargcount]
    rest = code.co_argcount + code.co_kwonlyargcount
    varargs = varkw = None
    if code.co_flags & _CO_VARARGS:
        varargs = names[rest]
        rest += 1
    if code.co_flags & _CO_VARKEYWORDS:
        varkw = names[rest]
    missing = object()
    pos_defaults = list(func.__defaults__ or ())
    pos_defaults = [missing] * (len(positional) - len(pos_defaults)) + \
        pos_defaults
    kw_defaults = func.__kwdefaults__ or {}
    if skip:  # the bound first argument (self or cls) is not ours to pass
        if not positional:
            raise TypeError("bound method without a positional parameter")
        del positional[0], pos_defaults[0]
        posonly = max(posonly - 1, 0)
    every = positional + list(keyword_only) + [varargs, varkw]
    if any(n and n.startswith("_st_") for n in every):
        raise ValueError("parameter name reserved for the wrapper")

    params, call, defaults = [], [], {}
    for index, (name, default) in enumerate(zip(positional, pos_defaults)):
        text = name
        if default is not missing:
            defaults["_st_d%d" % index] = default
            text += "=_st_d%d" % index
        params.append(text)
        call.append(name)
        if index + 1 == posonly:
            params.append("/")
    if varargs:
        params.append("*" + varargs)
        call.append("*" + varargs)
    elif keyword_only:
        params.append("*")
    for index, name in enumerate(keyword_only):
        text = name
        if name in kw_defaults:
            defaults["_st_k%d" % index] = kw_defaults[name]
            text += "=_st_k%d" % index
        params.append(text)
        call.append("%s=%s" % (name, name))
    if varkw:
        params.append("**" + varkw)
        call.append("**" + varkw)
    return params, call, defaults
