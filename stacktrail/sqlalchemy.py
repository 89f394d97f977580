"""osprofiler's ``osprofiler.sqlalchemy`` API, on stacktrail's SQL tracing.

A thin re-export: the implementation is ``stacktrail.integrations
.sqlalchemy``.  As in osprofiler, ``disable()`` makes later ``add_tracing``
calls do nothing and ``enable()`` allows them again; the all-engines switch
is the ``trace_sqlalchemy`` flag (``integrations.sqlalchemy.enable``).
"""

import contextlib

from stacktrail.integrations import sqlalchemy as _sql

_allowed = True


def disable():
    """Make later ``add_tracing`` calls do nothing (osprofiler)."""
    global _allowed
    _allowed = False


def enable():
    """Let ``add_tracing`` attach listeners again (osprofiler)."""
    global _allowed
    _allowed = True


def add_tracing(sqlalchemy, engine, name, hide_result=True):
    """Trace every statement of ``engine`` as a span called ``name``.

    ``sqlalchemy`` is accepted for osprofiler's signature only.
    """
    if _allowed:
        _sql.instrument_engine(engine, name=name, hide_result=hide_result)


@contextlib.contextmanager
def wrap_session(sqlalchemy, sess):
    """``with wrap_session(sqlalchemy, session) as s``: trace its engine."""
    with sess as session:
        bind = getattr(session, "bind", None)
        if bind is not None:
            add_tracing(sqlalchemy, bind, "db")
        yield session


instrument_engine = _sql.instrument_engine
uninstrument_engine = _sql.uninstrument_engine
oslo_db_hook = _sql.oslo_db_hook
