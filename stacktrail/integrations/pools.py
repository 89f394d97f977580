"""Pool checkout and selection as ``pool`` spans (``trace_pooling``).

Helpers the per-project adapters use: a pool (of connections, of storage
shards, of workers) is traced where it hands something out or picks where
a request goes.  The wrappers stay installed; the flag is read at each call,
so switching it on SIGHUP takes effect at once.

* ``with pools.checkout("redis", shard=name):`` around a checkout;
* ``@pools.traced("lookup")`` on a selection function or method;
* ``pools.instrument(obj, "lookup", "get")`` on one pool object's methods
  (instance attributes: the object keeps its type), undone by
  ``pools.uninstrument(obj)``.
"""

import functools

from stacktrail.common import kinds
from stacktrail.common import wrappers
from stacktrail.integrations import _base

NAME = "pool"
_switch = _base.Switch()
enable, disable, is_enabled = _base.module_functions(_switch)
_ATTR = "_stacktrail_pool_methods"


def _on():
    return _switch.enabled and _base.active()


class checkout:  # noqa: N801 - used like a function in a with statement
    """``with checkout(pool_name, **info) as span:`` a pool span.

    Set ``span.stop_info`` to record what was handed out.
    """

    def __init__(self, pool, operation="checkout", **info):
        self.span = None
        if _on():
            detail = dict(info, name=pool, operation=operation)
            self.span = _base.Span("pool", NAME,
                                   kinds.POOL.start_info(detail))

    def __enter__(self):
        return self.span.__enter__() if self.span else _base.Span(
            "pool", NAME)

    def __exit__(self, etype, exc, tb):
        if self.span:
            return self.span.__exit__(etype, exc, tb)
        return False


def _describe(result):
    if isinstance(result, str):
        return result[:200]
    text = getattr(result, "name", None) or type(result).__name__
    return str(text)[:200]


def traced(operation=None, pool=None):
    """Decorator: each call is a ``pool`` span recording what was chosen."""
    def decorator(fn):
        op = operation or fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not _on():
                return fn(*args, **kwargs)
            info = kinds.POOL.start_info({"name": pool or _owner(fn, args),
                                          "operation": op})
            with _base.Span("pool", NAME, info) as span:
                result = fn(*args, **kwargs)
                if span.opened:
                    span.stop_info = kinds.POOL.stop_info(
                        {"result": _describe(result)})
                return result
        return wrappers.mark(wrapper)
    return decorator


def _owner(fn, args):
    if args and hasattr(args[0], fn.__name__):
        return type(args[0]).__name__
    return fn.__module__


def instrument(obj, *methods, pool=None):
    """Trace the named methods of one pool object."""
    done = vars(obj).setdefault(_ATTR, [])
    for method in methods:
        if method in done:
            continue
        bound = getattr(obj, method)
        name = pool or type(obj).__name__
        setattr(obj, method, traced(method, name)(bound))
        done.append(method)
    return obj


def uninstrument(obj):
    for method in vars(obj).pop(_ATTR, []):
        vars(obj).pop(method, None)
    return obj
