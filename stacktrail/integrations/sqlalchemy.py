"""SQL statements as ``db`` spans, through SQLAlchemy's dialect events.

The ``do_execute``, ``do_executemany`` and ``do_execute_no_params``
events are where SQLAlchemy hands a statement to the DBAPI cursor.  With a
trace open, the listener runs inside a ``db`` span what SQLAlchemy would
have run (the application's own listeners of the event that come after
ours, then, unless one of them ran the statement, the dialect's method)
and tells SQLAlchemy it was done; otherwise it returns at once and
SQLAlchemy runs the statement as usual.  So an untraced statement costs one
call and a context lookup (listening to ``before_cursor_execute`` and
``after_cursor_execute`` instead cost two calls and switched on
SQLAlchemy's connection events for every statement), a failing statement
goes through SQLAlchemy's error handling exactly as before (its
``handle_error`` listeners, oslo.db's, see it after the span closed), and
nothing is pushed on the trace's span stack.

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
_PING = re.compile(r"\s*select\s+1\s*(from\s+dual\s*)?;?\s*\Z", re.I)
_PING_MAX = 32   # longer statements are never pings
_current = _context.current
_emitting = _context.emitting.get
_open_leaf = profiler.open_leaf
_close_leaf = profiler.close_leaf
_EVENTS = ("do_execute", "do_executemany", "do_execute_no_params")


class Listener:
    """The three dialect event handlers, with their options."""

    def __init__(self, name=NAME, show_params=None, hide_result=True):
        self.name = name
        self.show_params = show_params
        self.hide_result = hide_result

    def handlers(self):
        return (self.execute, self.executemany, self.execute_no_params)

    # Called for every statement of the service: the untraced case is one
    # context lookup and a return.  A false return lets SQLAlchemy (or the
    # next listener) run the statement.

    def execute(self, cursor, statement, parameters, context):
        frame = _current.get()
        if frame is None or context is None:
            return False
        return self._traced(frame, statement, parameters, context,
                            "do_execute",
                            (cursor, statement, parameters, context))

    def executemany(self, cursor, statement, parameters, context):
        frame = _current.get()
        if frame is None or context is None:
            return False
        return self._traced(frame, statement, parameters, context,
                            "do_executemany",
                            (cursor, statement, parameters, context), True)

    def execute_no_params(self, cursor, statement, context):
        frame = _current.get()
        if frame is None or context is None:
            return False
        return self._traced(frame, statement, None, context,
                            "do_execute_no_params",
                            (cursor, statement, context))

    def _traced(self, frame, statement, params, context, event_name, args,
                executemany=None):
        """Run the statement inside a span, as SQLAlchemy would have: the
        event's listeners after ours first (one returning True ran it),
        else the dialect's method.  True when it ran here.  Nothing of
        ours may fail the statement: a failure before it runs leaves it to
        SQLAlchemy, untraced."""
        if _emitting() or (len(statement) < _PING_MAX and
                           _PING.match(statement) is not None):
            return False
        try:
            if executemany is None:
                executemany = context.executemany
            dialect = context.dialect
            others = _after_ours(getattr(dialect.dispatch, event_name))
            run = getattr(dialect, event_name)
            handle = _open_leaf(frame, self.name, self._info(
                dialect, statement, params, executemany))
        except Exception:
            _base.swallowed("sqlalchemy")
            return False
        try:
            for listener in others:
                if listener(*args):
                    break
            else:
                run(*args)
        except BaseException as exc:
            _base.guard("sqlalchemy", _base.leaf_stop, handle,
                        _base.guard("sqlalchemy", self._error_info, exc))
            raise
        stop = None
        if not self.hide_result:
            stop = _base.guard("sqlalchemy", _result, args[0])
            stop = stop and kinds.DB.stop_info(stop)
        _close_leaf(handle, stop)   # enqueues a tuple: cannot fail
        return True

    def _show(self):
        show = self.show_params
        if show is None:
            show = settings.current.show_sql_parameters
        return show

    def _info(self, dialect, statement, params, executemany):
        db = {"statement": statement, "system": dialect.name}
        if self._show():
            db["params"] = str(params)
        if executemany:
            db["executemany"] = True
        return kinds.DB.start_info(db)

    def _error_info(self, exc):
        """The error class, the SQLSTATE when the driver gives one, and the
        message with the values it echoes masked (as osprofiler's keys:
        ``etype``, ``message``, ``db.original_exception`` and
        ``db.chained_exception``); parameters only with ``show_params``."""
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


def _after_ours(listeners):
    """The listeners SQLAlchemy calls after the first of ours, ours left
    out (only the first records a statement): run inside the span, an
    application's own ``do_execute`` listener keeps its say."""
    rest, found = [], False
    for listener in listeners:
        if isinstance(getattr(listener, "__self__", None), Listener):
            found = True
        elif found:
            rest.append(listener)
    return rest


def _result(cursor):
    rows = getattr(cursor, "_rows", None)
    if rows is not None:
        return {"result": str(rows)}
    return {"rowcount": getattr(cursor, "rowcount", -1)}


def _listen(target, listener):
    for name, fn in zip(_EVENTS, listener.handlers()):
        event.listen(target, name, fn)


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
