"""Driver calls as ``driver`` spans (``trace_drivers``).

``wrap(driver)`` traces every public method of one driver object (the
private ones too with ``private=True``) by setting instance attributes, so
the object keeps its class: ``isinstance`` checks, ``type()`` and identity
are unchanged.  ``unwrap(driver)`` removes them again.  The flag is read at
each call, so switching it on SIGHUP takes effect at once.

Recorded: the qualified method name; arguments only with ``show_args``
(they often hold credentials).
"""

import functools
import inspect

from stacktrail.integrations import _base

NAME = "driver"
_ATTR = "_stacktrail_driver_methods"
_switch = _base.Switch()
enable, disable, is_enabled = _base.module_functions(_switch)


def _methods(cls, private):
    """Names of the plain methods a class has (public, or all but dunder)."""
    names = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, attr in vars(klass).items():
            if name.startswith("__") or name in names:
                continue
            if name.startswith("_") and not private:
                continue
            if inspect.isfunction(attr):
                names.append(name)
    return names


def _traced(bound, qualname, name, show_args):
    @functools.wraps(bound)
    def wrapper(*args, **kwargs):
        if not _switch.enabled or not _base.active():
            return bound(*args, **kwargs)
        function = {"name": qualname}
        if show_args:
            function["args"] = str(args)
            function["kwargs"] = str(kwargs)
        with _base.Span("driver", name, {"function": function}):
            return bound(*args, **kwargs)
    return wrapper


def wrap(driver, name=NAME, private=False, show_args=False):
    """Trace the methods of one driver object; returns the same object."""
    if not hasattr(driver, "__dict__"):
        _base.LOG.warning("stacktrail: %r has no __dict__ (slots), its "
                          "calls are not traced", type(driver))
        return driver
    if _ATTR in vars(driver):
        return driver
    cls = type(driver)
    prefix = "%s.%s" % (cls.__module__, cls.__qualname__)
    done = []
    for method in _methods(cls, private):
        bound = getattr(driver, method)
        qualname = "%s.%s" % (prefix, method)
        setattr(driver, method, _traced(bound, qualname, name, show_args))
        done.append(method)
    vars(driver)[_ATTR] = done
    return driver


def unwrap(driver):
    for method in vars(driver).pop(_ATTR, []):
        vars(driver).pop(method, None)
    return driver


def is_wrapped(driver):
    return _ATTR in getattr(driver, "__dict__", {})
