"""Generic integrations, each switched by its own ``[profiler]`` flag.

Every integration module has ``enable(**options)`` and ``disable()``, both
idempotent; ``disable`` restores exactly what ``enable`` replaced.  Modules
are imported only when their flag is applied, so a service never imports a
client library it does not use.
"""

import importlib
import logging
import sys

LOG = logging.getLogger(__name__)

#: [profiler] flag -> integration module (stacktrail.integrations.<name>).
FLAGS = {
    "trace_rpc": "rpc",
    "trace_sqlalchemy": "sqlalchemy",
    "trace_mongodb": "pymongo",
    "trace_redis": "redis",
    "trace_requests": "http",
    "trace_pooling": "pools",
    "trace_drivers": "drivers",
}


def module(flag):
    """The integration module of a flag (imported on first use)."""
    return importlib.import_module(__name__ + "." + FLAGS[flag])


def apply(flags):
    """Enable or disable each integration named in ``flags``.

    Flags that are absent are left as they are; unknown flags (trace_wsgi
    belongs to the WSGI middleware) are ignored.  Never raises: a library
    that is not installed or an integration that fails is logged and the
    others still apply.  Returns {flag: enabled} for the flags handled.
    """
    result = {}
    for flag, wanted in (flags or {}).items():
        if flag in FLAGS:
            result[flag] = _apply_one(flag, bool(wanted))
    return result


def _apply_one(flag, wanted):
    if not wanted and _loaded(flag) is None:
        return False  # never switched on: nothing to undo, nothing to import
    try:
        mod = module(flag)
    except ImportError as exc:
        if wanted:
            LOG.warning("stacktrail: %s is on but its library is missing: "
                        "%s", flag, exc)
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


def _loaded(flag):
    return sys.modules.get(__name__ + "." + FLAGS[flag])


def status():
    """{flag: enabled} for the integrations imported so far."""
    return {flag: bool(_loaded(flag) and _loaded(flag).is_enabled())
            for flag in FLAGS}
