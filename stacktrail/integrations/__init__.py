"""Generic integrations, each switched by its own ``[profiler]`` flag.

Which module a flag switches is declared once, in ``common.flags`` (third
parties add theirs through entry points).  Every integration module has
``enable(**options)`` and ``disable()``, both idempotent; ``disable``
restores exactly what ``enable`` replaced.  Modules are imported only when
their flag is applied, so a service never imports a client library it does
not use.
"""

import importlib
import logging
import sys

from stacktrail.common import flags as _flags

LOG = logging.getLogger(__name__)


def modules():
    """{flag name: integration module path} of every flag with a module."""
    return {flag.name: flag.module for flag in _flags.every() if flag.module}


def _asked_for(flag):
    """True unless the flag is on only by default (Zaqar has no
    oslo.messaging: a default-on trace_rpc must not warn there)."""
    return not _flags.DEFAULTS.get(flag, False)


def module(flag):
    """The integration module of a flag (imported on first use)."""
    return importlib.import_module(modules()[flag])


def apply(flags):
    """Enable or disable each integration named in ``flags``.

    Flags that are absent are left as they are; flags without a module
    (trace_wsgi belongs to the WSGI middleware) are ignored.  Never raises:
    a library that is not installed or an integration that fails is logged
    and the others still apply.  Returns {flag: enabled} for the flags
    handled.
    """
    known = modules()
    result = {}
    for flag, wanted in (flags or {}).items():
        if flag in known:
            result[flag] = _apply_one(flag, known[flag], bool(wanted))
    return result


def _apply_one(flag, path, wanted):
    if not wanted and path not in sys.modules:
        return False  # never switched on: nothing to undo, nothing to import
    try:
        mod = importlib.import_module(path)
    except ImportError as exc:
        if wanted:
            log = LOG.warning if _asked_for(flag) else LOG.debug
            log("stacktrail: %s is on but its library is missing: %s",
                flag, exc)
        return False
    try:
        if wanted:
            mod.enable()
        else:
            mod.disable()
    except Exception:
        LOG.exception("stacktrail: could not switch %s %s", flag,
                      "on" if wanted else "off")
    return bool(getattr(mod, "is_enabled", lambda: False)())


def status():
    """{flag: enabled} for the integrations imported so far."""
    return {flag: bool(path in sys.modules and
                       sys.modules[path].is_enabled())
            for flag, path in modules().items()}
