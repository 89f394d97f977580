"""Wrappers that keep the wrapped function's own parameter list.

A ``def wrapper(*args, **kwargs)`` allocates a tuple and a dict on every
call, traced or not.  Generating the wrapper with the function's exact
parameters passes arguments straight through, so when no trace is active a
traced call costs one context lookup, a branch and the call itself.
"""

import functools

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


def passthrough(fn, current, traced):
    """``fn`` when ``current()`` is None, else ``traced`` with the same
    arguments; None when ``fn``'s signature cannot be reproduced."""
    try:
        params, call, defaults = _parameters(fn)
    except (TypeError, ValueError):
        return None
    namespace = dict(defaults, _st_current=current, _st_fn=fn,
                     _st_traced=traced)
    name = getattr(fn, "__name__", "traced")
    if not name.isidentifier():
        name = "traced"
    exec(_TEMPLATE.format(name=name, params=", ".join(params),
                          call=", ".join(call)), namespace)
    return functools.wraps(fn)(namespace[name])


def generic(fn, current, traced):
    """The same switch with ``*args, **kwargs`` (any callable)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if current() is None:
            return fn(*args, **kwargs)
        return traced(*args, **kwargs)
    return wrapper


def _parameters(fn):
    """(parameter texts, call texts, defaults namespace) of ``fn``."""
    import inspect
    kind = inspect.Parameter
    params, call, defaults = [], [], {}
    previous = None
    # The function's own parameters, not those of what it wraps: a decorator
    # may inject or consume arguments (functools.wraps sets __wrapped__).
    signature = inspect.signature(fn, follow_wrapped=False)
    for index, param in enumerate(signature.parameters.values()):
        if param.name.startswith("_st_"):
            raise ValueError("parameter name reserved for the wrapper")
        if previous is kind.POSITIONAL_ONLY and \
                param.kind is not kind.POSITIONAL_ONLY:
            params.append("/")
        if param.kind is kind.KEYWORD_ONLY and previous not in (
                kind.KEYWORD_ONLY, kind.VAR_POSITIONAL):
            params.append("*")
        text = param.name
        if param.default is not param.empty:
            defaults["_st_d%d" % index] = param.default
            text += "=_st_d%d" % index
        if param.kind is kind.VAR_POSITIONAL:
            params.append("*" + text)
            call.append("*" + param.name)
        elif param.kind is kind.VAR_KEYWORD:
            params.append("**" + text)
            call.append("**" + param.name)
        elif param.kind is kind.KEYWORD_ONLY:
            params.append(text)
            call.append("%s=%s" % (param.name, param.name))
        else:
            params.append(text)
            call.append(param.name)
        previous = param.kind
    if previous is kind.POSITIONAL_ONLY:
        params.append("/")
    return params, call, defaults
