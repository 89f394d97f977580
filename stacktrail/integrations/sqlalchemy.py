"""SQL statements as ``db`` spans, through SQLAlchemy engine events.

``before_cursor_execute`` opens a span and keeps its handle on the
statement's execution context; ``after_cursor_execute`` or ``handle_error``
closes it from there.  Nothing is pushed on the trace's span stack, so a
statement can never close somebody else's span.

Scope: ``enable()`` listens on the ``Engine`` class (every engine, also
the ones created later); ``instrument_engine(engine)`` one engine;
``oslo_db_hook(context_manager)`` every engine an oslo.db enginefacade
creates.  When several apply to one statement only the first records it.

Recorded: the statement text (and the dialect).  Parameters only with
``show_params`` (or ``[profiler] show_sql_parameters``); they carry user
data and secrets.  Connection pings (``SELECT 1``) are left out.  A failing
statement records its error class (``etype``), the SQLSTATE when the
driver gives one (``db.sqlstate``; MySQL's error number, SQLite's error
name) and its message with the values the server echoes masked
(``common.redact.database_error``), unmasked only with ``show_params``.
"""

import re
import weakref

from sqlalchemy import event
from sqlalchemy.engine import Engine

from stacktrail import profiler
from stacktrail.common import context as _context
from stacktrail.common import kinds
from stacktrail.common import redact
from stacktrail.common import settings
from stacktrail.integrations import _base

NAME = "db"
_ATTR = "_stacktrail_span"
_PING = re.compile(r"\s*select\s+1\s*(from\s+dual\s*)?;?\s*\Z", re.I)
_PING_MAX = 32   # longer statements are never pings
_current = _context.current
_emitting = _context.emitting.get
_open_leaf = profiler.open_leaf
_close_leaf = profiler.close_leaf
_EVENTS = ("before_cursor_execute", "after_cursor_execute", "handle_error")


class Listener:
    """The three engine event handlers, with their options."""

    def __init__(self, name=NAME, show_params=None, hide_result=True):
        self.name = name
        self.show_params = show_params
        self.hide_result = hide_result

    def handlers(self):
        return (self.before, self.after, self.error)

    # before/after run for every statement of the service: their checks
    # are inlined and the span is made straight from the frame they read.

    def before(self, conn, cursor, statement, params, context, executemany):
        # Listened to with retval=True, so SQLAlchemy calls it without a
        # wrapper of its own: it hands back what it was given.
        frame = _current.get()
        if frame is not None and context is not None and not _emitting() \
                and (len(statement) >= _PING_MAX or
                     _PING.match(statement) is None):
            try:
                state = vars(context)
                if _ATTR not in state:
                    state[_ATTR] = _open_leaf(frame, self.name, self._info(
                        conn, statement, params, executemany))
            except Exception:
                _base.swallowed("sqlalchemy")
        return statement, params

    def _show(self):
        show = self.show_params
        if show is None:
            show = settings.current.show_sql_parameters
        return show

    def _info(self, conn, statement, params, executemany):
        db = {"statement": statement, "system": conn.dialect.name}
        if self._show():
            db["params"] = str(params)
        if executemany:
            db["executemany"] = True
        return kinds.DB.start_info(db)

    def after(self, conn, cursor, statement, params, context, executemany):
        handle = _take(context)
        if handle is not None:
            try:
                _close_leaf(handle, None if self.hide_result else
                            kinds.DB.stop_info(_result(cursor)))
            except Exception:
                _base.swallowed("sqlalchemy")

    def error(self, exception_context):
        handle = _take(exception_context.execution_context)
        if handle is None:
            return
        try:
            _base.leaf_stop(handle, self._error_info(exception_context))
        except Exception:
            _base.swallowed("sqlalchemy")

    def _error_info(self, exception_context):
        """The error class, the SQLSTATE when the driver gives one, and the
        message with the values it echoes masked (as osprofiler's keys:
        ``etype``, ``message``, ``db.original_exception`` and
        ``db.chained_exception``); parameters only with ``show_params``."""
        exc = exception_context.original_exception
        cause = exc.__cause__
        show = self._show()

        def text(error):
            try:
                message = str(error)
            except Exception:
                return "<unprintable %s>" % type(error).__name__
            return message if show else redact.database_error(message)

        message = text(exc)
        db = {"original_exception": message,
              "chained_exception": text(cause) if cause else ""}
        state = redact.sqlstate(exc)
        if state:
            db["sqlstate"] = state
        info = kinds.DB.stop_info(db)
        info.update(etype=profiler._class_name(type(exc)), message=message)
        return info


def _take(context):
    """Pop the span handle left on an execution context (or None).  Read
    from its ``__dict__``: a getattr that misses costs an exception."""
    try:
        return vars(context).pop(_ATTR, None)
    except TypeError:   # None, or no __dict__: never traced
        return None


def _result(cursor):
    rows = getattr(cursor, "_rows", None)
    if rows is not None:
        return {"result": str(rows)}
    return {"rowcount": getattr(cursor, "rowcount", -1)}


def _listen(target, listener):
    for name, fn in zip(_EVENTS, listener.handlers()):
        event.listen(target, name, fn, retval=name == "before_cursor_execute")


def _remove(target, listener):
    for name, fn in zip(_EVENTS, listener.handlers()):
        if event.contains(target, name, fn):
            event.remove(target, name, fn)


# --- one engine --------------------------------------------------------------

_engines = weakref.WeakKeyDictionary()


def instrument_engine(engine, name=NAME, show_params=None, hide_result=True):
    """Trace one engine (idempotent: a second call changes nothing)."""
    if engine in _engines:
        return False
    listener = Listener(name, show_params, hide_result)
    _listen(engine, listener)
    _engines[engine] = listener
    return True


def uninstrument_engine(engine):
    listener = _engines.pop(engine, None)
    if listener is None:
        return False
    _remove(engine, listener)
    return True


def is_engine_instrumented(engine):
    return engine in _engines


# --- every engine ------------------------------------------------------------

class _AllEngines(_base.Instrumentor):
    """Every engine; ``enable(name=..., show_params=..., hide_result=...)``."""

    name = "sqlalchemy"

    def _enable(self, patcher, name=NAME, show_params=None,
                hide_result=True):
        self.listener = Listener(name, show_params, hide_result)
        _listen(Engine, self.listener)

    def _disable(self):
        _remove(Engine, self.listener)


_all = _AllEngines()
enable, disable, is_enabled = _base.module_functions(_all)


# --- oslo.db -----------------------------------------------------------------

def oslo_db_hook(context_manager=None, name=NAME, **options):
    """Trace the engines an oslo.db enginefacade creates.

    ``context_manager`` defaults to oslo.db's global one.  oslo.db keeps
    the hook for good; ``uninstrument_engine`` undoes it for one engine.
    """
    from oslo_db.sqlalchemy import enginefacade

    manager = context_manager or enginefacade._context_manager

    def on_engine_create(engine):
        _base.guard("sqlalchemy", instrument_engine, engine, name,
                    options.get("show_params"),
                    options.get("hide_result", True))

    manager.append_on_engine_create(on_engine_create)
    return on_engine_create


__all__ = ["Listener", "instrument_engine",
           "uninstrument_engine", "enable", "disable", "is_enabled",
           "oslo_db_hook"]
