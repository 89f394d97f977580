"""Driver calls as ``driver`` spans (``trace_drivers``).

``wrap(driver)`` traces every public method of one driver object (the
private ones too with ``private=True``) through instance attributes, so
the object keeps its class: ``isinstance`` checks, ``type()`` and identity
are unchanged.  ``unwrap(driver)`` removes them again.  The flag is read at
each call, so switching it on SIGHUP takes effect at once.

Recorded: the qualified method name; arguments only with ``show_args``
(they often hold credentials).
"""

from stacktrail.integrations import _base
from stacktrail.integrations import methods

NAME = "driver"
_switch = _base.Switch()
enable, disable, is_enabled = _base.module_functions(_switch)


def wrap(driver, name=NAME, private=False, show_args=False):
    """Trace the methods of one driver object; returns the same object."""
    if methods.is_object_traced(driver):
        return driver
    return methods.trace_object(driver, name, is_enabled, private=private,
                                show_args=show_args)


unwrap = methods.untrace_object
is_wrapped = methods.is_object_traced
