"""Generic integrations, each switched by its own ``[profiler]`` flag.

Which module a flag switches is declared once, in ``common.flags`` (third
parties add theirs through entry points).  Every integration module has
``enable(**options)`` and ``disable()``, both idempotent; ``disable``
restores exactly what ``enable`` replaced.  An integration of a client
library (its flag's ``library``) is switched on when the service imports
that library, not before: a service never imports a client library for
tracing's sake (an armed Zaqar on Redis would otherwise carry pymongo's
hundred-odd modules).
"""

import importlib
import logging
import sys

from stacktrail.common import flags as _flags
from stacktrail.common import logtext

LOG = logging.getLogger(__name__)


def modules():
    """{flag name: integration module path} of every flag with a module."""
    return {flag.name: flag.module for flag in _flags.every() if flag.module}


# flag -> (its integration module, its library): switched on once the
# service imports the library (which it had not when the flag was applied).
_waiting = {}
_hooked = set()   # libraries with an import hook
# Lazy flags (``Flag.lazy``) turned on while held: switched on by
# ``release`` (the runtime's: at the process's first trace).
_held = set()
# Why a flag cannot be switched on, said once a process, not again on
# every reload (SIGHUP) or for every service sharing the process.
_said = logtext.Problems()


def when_imported(module_name, hook):
    """``hook(module)`` once ``module_name`` is imported (now if it is)."""
    if module_name in sys.modules:
        hook(sys.modules[module_name])
        return
    import wrapt
    wrapt.register_post_import_hook(hook, module_name)


def _asked_for(flag):
    """True unless the flag is on only by default (Zaqar has no
    oslo.messaging: a default-on trace_rpc must not warn there)."""
    return not _flags.DEFAULTS.get(flag, False)


def module(flag):
    """The integration module of a flag (imported on first use)."""
    return importlib.import_module(modules()[flag])


def apply(flags, hold=False):
    """Enable or disable each integration named in ``flags``.

    Flags that are absent are left as they are; flags without a module
    (trace_wsgi belongs to the WSGI middleware) are ignored.  Never raises:
    a library that is not installed or an integration that fails is logged
    and the others still apply.  Returns {flag: enabled} for the flags
    handled; a flag whose library the service has not imported yet is on
    (it applies when the library is imported), and so is a lazy flag
    turned on with ``hold`` (it applies at ``release``).
    """
    known = modules()
    every = _flags.every()
    libraries = {flag.name: flag.library for flag in every}
    lazy = {flag.name for flag in every if flag.lazy} if hold else ()
    result = {}
    for flag, wanted in (flags or {}).items():
        if flag not in known:
            continue
        library = libraries.get(flag)
        if wanted and flag in lazy:
            _held.add(flag)
            result[flag] = True
            continue
        _held.discard(flag)
        if wanted and library and library not in sys.modules:
            result[flag] = _wait_for(flag, known[flag], library)
        else:
            _waiting.pop(flag, None)
            result[flag] = _apply_one(flag, known[flag], bool(wanted))
    return result


def release():
    """Switch on the lazy flags ``apply`` held."""
    held = dict.fromkeys(_held, True)
    _held.clear()
    return apply(held)


def _wait_for(flag, path, library):
    """Switch ``flag`` on when ``library`` is imported; False when it
    cannot be (not installed, said as a missing library is)."""
    import importlib.util
    try:
        found = importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        # The service cannot use a library it does not have: nothing to
        # trace (the shipped fragments turn trace_mongodb on for every
        # Zaqar, most of which keep no data in MongoDB).
        _say_once(flag, LOG.info if _asked_for(flag) else LOG.debug,
                  "stacktrail: %s has nothing to trace here: %s is not "
                  "installed", flag, library)
        return False
    _waiting[flag] = (path, library)
    if library not in _hooked:
        _hooked.add(library)
        when_imported(library, _library_imported)
    return True


def _library_imported(module):
    """The import hook: the flags waiting for this library, switched on
    (a flag turned off meanwhile is no longer waiting)."""
    for flag, (path, library) in list(_waiting.items()):
        if library == module.__name__ and \
                _waiting.pop(flag, None) is not None:
            _apply_one(flag, path, True)


def _apply_one(flag, path, wanted):
    if not wanted and path not in sys.modules:
        return False  # never switched on: nothing to undo, nothing to import
    try:
        mod = importlib.import_module(path)
    except ImportError as exc:
        if wanted:
            _say_once(flag, LOG.warning if _asked_for(flag) else LOG.debug,
                      "stacktrail: %s is on but its library is missing: %s",
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


def _say_once(flag, log, text, *args):
    if _said.new(flag, text):
        log(text, *args)


def status():
    """{flag: enabled} for the integrations imported so far (or waiting
    for the service to import their library, or held)."""
    return {flag: flag in _waiting or flag in _held or bool(
        path in sys.modules and sys.modules[path].is_enabled())
        for flag, path in modules().items()}
