"""SQL tracing on the local PostgreSQL and MariaDB."""

import pytest
import sqlalchemy
from sqlalchemy import event
from sqlalchemy import text
from sqlalchemy.engine import Engine

from stacktrail import sqlalchemy as compat
from stacktrail.integrations import sqlalchemy as sql


@pytest.fixture(params=["postgres_url", "mysql_url"])
def engine(request):
    url = request.getfixturevalue(request.param)
    eng = sqlalchemy.create_engine(url, pool_pre_ping=True)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE items (id INT PRIMARY KEY, "
                          "secret VARCHAR(40))"))
    yield eng
    sql.uninstrument_engine(eng)
    eng.dispose()


def _insert(engine, ident=1, secret="hunter2"):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO items (id, secret) VALUES (:i, :s)"),
                     {"i": ident, "s": secret})


def test_statement_recorded_parameters_hidden(engine, trace, recorder):
    sql.instrument_engine(engine)
    _insert(engine)
    spans = recorder.spans("db")
    inserts = [s for s in spans if "INSERT" in s[0]["info"]["db"]["statement"]]
    assert len(inserts) == 1
    start, stop = inserts[0]
    assert "hunter2" not in repr(start) + repr(stop)
    assert "params" not in start["info"]["db"]
    assert start["parent_id"] == trace.get_id()
    assert not recorder.unclosed()


def test_show_params_option(engine, trace, recorder):
    sql.instrument_engine(engine, show_params=True)
    _insert(engine)
    assert any("hunter2" in s["info"]["db"].get("params", "")
               for s, _ in recorder.spans("db"))


def test_setting_shows_params(engine, trace, recorder, live):
    live.show_sql_parameters = True
    sql.instrument_engine(engine)
    _insert(engine)
    assert any("hunter2" in s["info"]["db"].get("params", "")
               for s, _ in recorder.spans("db"))


def test_ping_left_out(engine, trace, recorder):
    sql.instrument_engine(engine)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("select 1 "))
        conn.execute(text("SELECT 2"))
    statements = [s["info"]["db"]["statement"]
                  for s, _ in recorder.spans("db")]
    assert statements == ["SELECT 2"]


def test_error_recorded_and_span_closed(engine, trace, recorder):
    sql.instrument_engine(engine)
    _insert(engine, 1)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        _insert(engine, 1)
    failed = [stop for _, stop in recorder.spans("db")
              if "etype" in stop["info"]]
    assert len(failed) == 1
    assert "IntegrityError" in failed[0]["info"]["etype"] or \
        "UniqueViolation" in failed[0]["info"]["etype"]
    assert not recorder.unclosed()


def test_no_trace_nothing_recorded(engine, recorder):
    sql.instrument_engine(engine)
    _insert(engine)
    assert recorder == []


def test_all_engines_switch_and_reversible(engine, trace, recorder):
    sql.enable()
    listener = sql._all.listener
    assert event.contains(Engine, "do_execute", listener.execute)
    sql.instrument_engine(engine)        # both apply: recorded once
    _insert(engine)
    assert len(recorder.spans("db")) >= 1
    count = len(recorder)
    assert len({m["trace_id"] for m in recorder}) * 2 == count
    sql.disable()
    sql.uninstrument_engine(engine)
    _insert(engine, 2)
    assert len(recorder) == count
    for name, fn in zip(sql._EVENTS, listener.handlers()):
        assert not event.contains(Engine, name, fn)


def test_osprofiler_compatible_add_tracing_and_wrap_session(engine, trace,
                                                            recorder):
    from sqlalchemy import orm

    compat.add_tracing(sqlalchemy, engine, "sql", hide_result=False)
    with engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    (start, stop), = recorder.spans("sql")
    assert "db" in stop["info"]
    sql.uninstrument_engine(engine)
    with compat.wrap_session(sqlalchemy, orm.Session(engine)) as session:
        session.execute(text("SELECT 3"))
    assert [s["info"]["db"]["statement"] for s, _ in recorder.spans("db")] \
        == ["SELECT 3"]


def test_compat_disable_blocks_add_tracing(engine, trace, recorder):
    compat.disable()
    try:
        compat.add_tracing(sqlalchemy, engine, "db")
        assert not sql.is_engine_instrumented(engine)
    finally:
        compat.enable()


def test_oslo_db_enginefacade_hook(postgres_url, trace, recorder):
    from oslo_db.sqlalchemy import enginefacade

    manager = enginefacade.transaction_context()
    manager.configure(connection=postgres_url)
    sql.oslo_db_hook(manager)
    with manager.writer.using(_Ctx()) as session:
        session.execute(text("SELECT 5"))
    assert [s["info"]["db"]["statement"] for s, _ in recorder.spans("db")] \
        == ["SELECT 5"]
    sql.uninstrument_engine(manager.writer.get_engine())


class _Ctx:
    pass


# --- secrets in failing statements ------------------------------------------

SECRET = "S3cr3t-pw"
EMAIL = "bob.secret@example.com"


@pytest.fixture
def users(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (email VARCHAR(80) UNIQUE, "
                          "pw VARCHAR(40))"))
    return engine


def _add_user(engine):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email, pw) VALUES (:e, :p)"),
                     {"e": EMAIL, "p": SECRET})


def test_failing_statement_records_class_sqlstate_no_values(users, trace,
                                                            recorder):
    """A duplicate row: the server echoes the email, SQLAlchemy the
    parameters; neither reaches the db span or the spans around it."""
    from stacktrail import profiler

    sql.instrument_engine(users)
    _add_user(users)

    @profiler.trace("api")
    def create():
        _add_user(users)

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with profiler.Trace("block"):
            create()
    recorded = repr(list(recorder))
    assert SECRET not in recorded and EMAIL not in recorded
    failed = [stop for _, stop in recorder.spans("db")
              if "etype" in stop["info"]]
    assert len(failed) == 1
    info = failed[0]["info"]
    mysql = users.dialect.name == "mysql"
    assert info["etype"] == "pymysql.err.IntegrityError" if mysql else \
        info["etype"].endswith(".errors.UniqueViolation")   # psycopg(2)
    assert info["db"]["sqlstate"] == ("23000" if mysql else "23505")
    assert ("Duplicate entry '***' for key" if mysql else
            "Key (email)=(***) already exists") in info["message"]
    assert info["db"]["original_exception"] == info["message"]
    for name in ("api", "block"):
        (_, stop), = recorder.spans(name)
        assert stop["info"]["etype"] == "sqlalchemy.exc.IntegrityError"
        assert "[parameters: ***]" in stop["info"]["message"]
        assert "INSERT INTO users" in stop["info"]["message"]


def test_failing_statement_values_shown_with_show_sql_parameters(
        users, trace, recorder, live):
    live.show_sql_parameters = True
    sql.instrument_engine(users)
    _add_user(users)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with profiler_trace("block"):
            _add_user(users)
    failed = [stop for _, stop in recorder.spans("db")
              if "etype" in stop["info"]]
    assert EMAIL in failed[0]["info"]["message"]
    (_, stop), = recorder.spans("block")
    assert SECRET in stop["info"]["message"]   # SQLAlchemy's [parameters:]


def profiler_trace(name):
    from stacktrail import profiler
    return profiler.Trace(name)


def test_sqlite_error_keeps_parameters_out(trace, recorder):
    """No server needed: SQLite's error names no value, but SQLAlchemy's
    message lists the parameters."""
    from stacktrail import profiler

    eng = sqlalchemy.create_engine("sqlite://")
    sql.instrument_engine(eng)
    try:
        with eng.begin() as conn:
            conn.execute(text("CREATE TABLE users (email TEXT UNIQUE, "
                              "pw TEXT)"))
        _add_user(eng)
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            with profiler.Trace("block"):
                _add_user(eng)
    finally:
        sql.uninstrument_engine(eng)
        eng.dispose()
    assert SECRET not in repr(list(recorder))
    failed = [stop for _, stop in recorder.spans("db")
              if "etype" in stop["info"]]
    assert failed[0]["info"]["etype"] == "sqlite3.IntegrityError"
    assert failed[0]["info"]["message"] == \
        "UNIQUE constraint failed: users.email"
    assert failed[0]["info"]["db"]["sqlstate"] == "SQLITE_CONSTRAINT_UNIQUE"
    (_, stop), = recorder.spans("block")
    assert "[parameters: ***]" in stop["info"]["message"]


def test_untraced_statements_cost_one_listener_call(recorder, monkeypatch):
    """Traced everywhere, an engine still runs untraced statements without
    SQLAlchemy's connection events, and each asks the listener once."""
    calls = []
    original = sql.Listener.execute

    def counted(self, *args):
        calls.append(args[1])
        return original(self, *args)
    monkeypatch.setattr(sql.Listener, "execute", counted)
    sql.enable()
    try:
        eng = sqlalchemy.create_engine("sqlite://")
        with eng.connect() as conn:
            for n in range(3):
                conn.execute(text("SELECT :n"), {"n": n})
            assert not conn._has_events and not eng._has_events
        assert len(calls) == 3 and recorder == []
    finally:
        sql.disable()


@pytest.mark.parametrize("runs_it", [False, True])
def test_applications_own_execute_listener_keeps_its_say(trace, recorder,
                                                         runs_it):
    """An application's ``do_execute`` listener still sees each traced
    statement, inside its span, and may run it itself (returning True) as
    without tracing; the statement runs once and is recorded once, also
    when several of our listeners apply."""
    seen, ran = [], []
    eng = sqlalchemy.create_engine("sqlite://")

    @event.listens_for(eng, "do_execute")
    def own(cursor, statement, parameters, context):
        seen.append(statement)
        if runs_it:
            ran.append(statement)
            cursor.execute(statement, parameters)
        return runs_it

    sql.enable()
    sql.instrument_engine(eng)
    try:
        with eng.connect() as conn:
            value = conn.execute(text("SELECT :n + 1"), {"n": 41}).scalar()
    finally:
        sql.disable()
        sql.uninstrument_engine(eng)
        eng.dispose()
    assert value == 42
    assert seen == ["SELECT ? + 1"]
    assert ran == (seen if runs_it else [])
    assert len(recorder.spans("db")) == 1
