"""osprofiler's call sites feed stacktrail's trace.

Zaqar, Cinder and Nova import osprofiler and call it themselves:
``initializer.init_from_conf`` at start, ``profiler.trace_cls`` on their
managers, drivers and storage controllers, ``web.WsgiMiddleware`` as a
paste filter or in code, ``profiler.get()``/``profiler.init(**trace_info)``
in their RPC serializers.  Once an adapter takes over, each of those names
in osprofiler's modules is stacktrail's, so the same call sites record into
one stacktrail trace: nothing traced twice (a method an adapter already
traces is left alone), nothing written to a store from the request thread,
and ``enabled = false`` means no span at all.

Classes osprofiler wrapped before the takeover (decorators evaluated at
import, before the configuration was read) call the module functions
``start`` and ``stop`` by name, so they record into stacktrail too; an
adapter that lists such classes replaces those wrappers with stacktrail's,
which cost nothing while no trace is active.

The SQL hook is the ``trace_sqlalchemy`` flag, which covers every engine:
osprofiler's per-engine ``add_tracing`` becomes a no-op, so a statement is
recorded once and only when that flag says so.
"""

import contextlib

from stacktrail.adapters import toolkit

# (osprofiler module, the stacktrail module serving it, the names taken).
NAMES = (
    ("osprofiler.profiler", "stacktrail.profiler",
     ("get", "clean", "start", "stop", "trace")),
    ("osprofiler.profiler", __name__, ("init", "trace_cls")),
    ("osprofiler.web", "stacktrail.web",
     ("get_trace_id_headers", "enable", "disable", "WsgiMiddleware")),
    ("osprofiler.notifier", "stacktrail.notifier",
     ("set", "get", "notify", "create", "clear_notifier_cache")),
    ("osprofiler.initializer", "stacktrail.initializer", ("init_from_conf",)),
    ("osprofiler.opts", "stacktrail.opts",
     ("set_defaults", "is_trace_enabled", "is_db_trace_enabled",
      "enable_web_trace", "disable_web_trace")),
    ("osprofiler.sqlalchemy", __name__,
     ("add_tracing", "wrap_session", "enable", "disable")),
    ("osprofiler.requests", __name__, ("enable",)),
)

_installed = []


def install(patcher=None):
    """Take osprofiler's names over (now, or when osprofiler is imported).

    Idempotent.  ``patcher`` records the changes for ``uninstall``.
    """
    if _installed:
        return
    from stacktrail.integrations import _base
    patcher = patcher or _base.Patcher()
    _installed.append(patcher)
    for module_name, ours, names in NAMES:
        toolkit.when_imported(module_name, _taker(ours, names, patcher))


def _taker(ours, names, patcher):
    def take(module):
        if patcher not in _installed:
            return  # uninstalled before osprofiler was imported
        import importlib
        source = importlib.import_module(ours)
        for name in names:
            if hasattr(module, name):
                patcher.patch(module, name, getattr(source, name))
    return take


def uninstall():
    """Give osprofiler its names back (tests)."""
    while _installed:
        _installed.pop().restore()


def installed():
    return bool(_installed)


# --- osprofiler.profiler.init and trace_cls ----------------------------------

def init(hmac_key, base_id=None, parent_id=None):
    """osprofiler's ``init`` at a project's call site (its RPC serializer,
    its thread pools).

    When the message was already joined to this very trace (the
    ``trace_rpc`` integration does that before the service deserializes),
    the current position stays: the server-side span keeps its children.
    In a service with ``hmac_keys``, a trace is joined only with one of
    them, as the ``trace_rpc`` integration does: whoever can put
    ``trace_info`` in a message must not start traces here without the
    key.  A client (no keys configured) starts its own trace as before.
    """
    from stacktrail import profiler
    from stacktrail.common import settings
    from stacktrail.common import signing
    current = profiler.get()
    if current is not None and base_id and \
            current.get_base_id() == str(base_id):
        return current
    keys = settings.current.validation_keys
    if keys and signing.matching_key(hmac_key, keys) is None:
        profiler.clean()
        return profiler._Profiler(None, base_id=base_id, parent_id=parent_id)
    return profiler.init(hmac_key, base_id=base_id, parent_id=parent_id)


def trace_cls(name, info=None, hide_args=False, hide_result=True,
              trace_private=False, allow_multiple_trace=True,
              trace_class_methods=False, trace_static_methods=False):
    """osprofiler's ``trace_cls`` at a project's call site.

    The adapter names the flag that gates spans called ``name`` (Cinder's
    ``"rpc"`` managers: ``trace_rpc``); names it does not list are code its
    own wiring traces, so the call changes nothing.  Arguments are not
    recorded (they carry request contexts and credentials).
    """
    from stacktrail import adapters
    from stacktrail.integrations import methods
    flag = adapters.trace_cls_flag(name)

    def decorator(target):
        if flag is None:
            return target
        if isinstance(target, type):
            methods.trace_class(target, name, flag, private=trace_private,
                                inherited=True)
        else:
            methods.trace_object(target, name, flag, private=trace_private)
        return target
    return decorator


# --- osprofiler.sqlalchemy and osprofiler.requests ---------------------------
# The trace_sqlalchemy and trace_requests flags cover every engine and every
# session: the per-object calls have nothing left to add.

def add_tracing(sqlalchemy, engine, name, hide_result=True):
    """Statements are traced by the trace_sqlalchemy flag (every engine)."""


@contextlib.contextmanager
def wrap_session(sqlalchemy, sess):
    with sess as session:
        yield session


def enable():
    """No-op: the trace_* flags decide."""


def disable():
    """No-op: the trace_* flags decide."""
