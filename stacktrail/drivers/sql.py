"""SQL stores through SQLAlchemy 2: ``sqlite:///PATH``, ``postgresql://``,
``mysql+pymysql://`` (any URL SQLAlchemy accepts for those schemes).

One table, ``stacktrail_points``: a row per trace point, with the columns a
query needs (ids, name, time, who wrote it, whether it failed) and the full
osprofiler message as JSON text.  The schema is created once per driver
(``checkfirst``), each batch is one committed bulk insert, and the read side
is SQLAlchemy Core.  The engine never logs SQL parameters
(``hide_parameters``), and errors are reduced to one line without them.

Every call to the store is bounded by ``store_timeout`` (default 5 s):
connecting (``connect_timeout``), waiting for a pooled connection, and
reading or writing: PyMySQL has read and write timeouts of its own; libpq
has none, so a watchdog shuts the connection's socket down when a call
outlives the deadline (a PostgreSQL server that stopped answering would
otherwise hold the flusher, or ``stacktrail trace list``, for ever), and
the call fails with ``base.StoreTimeout``.

A point whose text PostgreSQL refuses (a NUL byte) or no UTF-8 encoder
takes (a lone surrogate) fails its batch with a content error
(``content_error``); ``base.deliver`` then writes the batch again with
those characters replaced, and counts the points it changed.
"""

import contextlib
import datetime
import importlib.util
import json
import math
import os
import threading
import time
import weakref

from stacktrail.common import logtext
from stacktrail.drivers import base
from stacktrail.drivers import codec

TABLE = "stacktrail_points"
TEXT_LEN = 255
EPOCH = datetime.datetime(1970, 1, 1)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
ONE_US = datetime.timedelta(microseconds=1)
# SQLAlchemy driver name -> (its module, what to pip install for it).
DBAPIS = {"psycopg": ("psycopg", "'stacktrail[postgresql]'"),
          "pymysql": ("pymysql", "'stacktrail[mysql]'"),
          "psycopg2": ("psycopg2", "psycopg2-binary"),
          "mysqldb": ("MySQLdb", "mysqlclient")}


def _import_sqlalchemy():
    return base.require("sqlalchemy", "sql")


def make_table(sa, metadata):
    """The table; MySQL gets microsecond DATETIME and a large text type."""
    from sqlalchemy.dialects import mysql
    ident = sa.String(TEXT_LEN)
    when = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")
    body = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Table(
        TABLE, metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("base_id", ident, nullable=False),
        sa.Column("trace_id", ident),
        sa.Column("parent_id", ident),
        sa.Column("name", ident),
        sa.Column("timestamp", when, nullable=False),
        sa.Column("project", ident),
        sa.Column("service", ident),
        sa.Column("host", ident),
        sa.Column("is_error", sa.Boolean, nullable=False, default=False),
        sa.Column("message", body, nullable=False),
        # base_id first: a trace's rows and its start time from one index.
        sa.Index("ix_%s_base_id_timestamp" % TABLE, "base_id", "timestamp"),
        sa.Index("ix_%s_timestamp" % TABLE, "timestamp"),
        sa.Index("ix_%s_is_error" % TABLE, "is_error"),
        mysql_engine="InnoDB", mysql_charset="utf8mb4",
    )


def parse_url(sa, text):
    """The SQLAlchemy URL; plain ``mysql://`` means PyMySQL (what
    ``stacktrail[mysql]`` installs) unless mysqlclient is there."""
    url = sa.engine.make_url(text)
    if url.drivername == "mysql" and \
            importlib.util.find_spec("MySQLdb") is None:
        url = url.set(drivername="mysql+pymysql")
    return url


def missing_driver(url):
    """One line naming what to install for the URL's client library."""
    backend, dbapi = url.get_backend_name(), url.get_driver_name()
    module, install = DBAPIS.get(dbapi, (dbapi, dbapi))
    return "the %s store needs %s: pip install %s" % (backend, module,
                                                      install)


def _us(when):
    return (when - EPOCH) // ONE_US


def _when(us):
    return EPOCH + datetime.timedelta(microseconds=us)


def _clip(value):
    """Column copies are clipped; the message keeps the full text."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:TEXT_LEN]


class SQLDriver(base.Driver):

    def __init__(self, connection_str, *args, **kwargs):
        super().__init__(connection_str, *args, **kwargs)
        self.sa = sa = _import_sqlalchemy()
        self.table = make_table(sa, sa.MetaData())
        self._schema_ready = False
        self._raw = weakref.WeakSet()   # DBAPI connections, for the watchdog
        self._raw_fds = set()           # ... those that cannot be weakref-ed
        self._calls = threading.local()  # deadline of this thread's call
        self.engine = self._engine()

    @classmethod
    def get_name(cls):
        return "sql"

    def _engine(self):
        sa = self.sa
        timeout = self.store_timeout
        try:
            url = parse_url(sa, self.connection_str)
            options = {"pool_pre_ping": True, "hide_parameters": True,
                       "pool_timeout": timeout}
            backend = url.get_backend_name()
            if backend == "sqlite" and \
                    url.database in (None, "", ":memory:"):
                # Each pooled connection would see its own empty database.
                raise ValueError("sqlite needs a file path, e.g. "
                                 "sqlite:////var/lib/stacktrail/traces.db")
            if backend == "sqlite":
                # The flusher writes and the caller reads on other threads;
                # concurrent writers wait for the lock instead of failing.
                options["connect_args"] = {"check_same_thread": False,
                                           "timeout": timeout}
                options.pop("pool_timeout")
            else:
                options["connect_args"] = self._timeouts(url, timeout)
            # No connection here: a service starts while its store is down.
            engine = sa.create_engine(url, **options)
        except ImportError:  # create_engine's import of the client library
            raise base.DriverError(missing_driver(url)) from None
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError,
                ValueError) as exc:
            raise base.DriverError("bad SQL connection string %s: %s" % (
                logtext.mask_passwords(self.connection_str),
                logtext.one_line(exc, with_type=False))) from None
        self.where = engine.url.render_as_string(hide_password=True)
        self._watched = backend != "sqlite"
        self._backend = backend
        if self._watched:
            sa.event.listen(engine, "connect", self._on_connect)
            sa.event.listen(engine, "do_connect", self._do_connect)
        return engine

    def _do_connect(self, dialect, record, cargs, cparams):
        """A new connection inside a call gets what is left of its time."""
        deadline = getattr(self._calls, "deadline", None)
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise base.StoreTimeout("SQL store %s did not answer within "
                                    "%.1f s" % (self.where,
                                                self.store_timeout))
        if self._backend == "postgresql":
            cparams["connect_timeout"] = max(2, int(math.ceil(left)))
        elif "read_timeout" in cparams:   # PyMySQL
            cparams["connect_timeout"] = max(1, int(math.ceil(left)))
        return None

    @staticmethod
    def _timeouts(url, timeout):
        """Client timeouts for the URL's driver (the URL's own win)."""
        query = url.query
        backend, dbapi = url.get_backend_name(), url.get_driver_name()
        args = {}
        if backend == "postgresql":
            if "connect_timeout" not in query:
                # libpq takes whole seconds, at least 2.
                args["connect_timeout"] = max(2, int(math.ceil(timeout)))
        elif backend in ("mysql", "mariadb") and dbapi in ("pymysql",
                                                           "mysqldb"):
            for name in ("connect_timeout", "read_timeout", "write_timeout"):
                if name not in query:
                    args[name] = max(1, int(math.ceil(timeout)))
        return args

    def _on_connect(self, dbapi_connection, record):
        try:
            self._raw.add(dbapi_connection)
        except TypeError:
            fd = _fileno(dbapi_connection)
            if fd is not None:
                self._raw_fds.add(fd)

    def _cut(self):
        """The watchdog's doing: shut down every connection of this driver
        (they all lead to the store that stopped answering)."""
        for connection in list(self._raw):
            fd = _fileno(connection)
            if fd is not None:
                base.shutdown_socket(fd)
        for fd in list(self._raw_fds):
            base.shutdown_socket(fd)
        self._raw_fds.clear()

    @contextlib.contextmanager
    def _deadline(self, action):
        """Bound one store call by ``store_timeout``."""
        if not self._watched:
            yield
            return
        timeout = self.store_timeout
        self._calls.deadline = time.monotonic() + timeout
        token = base.WATCHDOG.watch(timeout, self._cut)
        try:
            yield
        except Exception:
            if base.WATCHDOG.done(token):
                raise base.StoreTimeout(
                    "SQL store %s did not answer within %.1f s (%s)"
                    % (self.where, timeout, action)) from None
            raise
        else:
            base.WATCHDOG.done(token)
        finally:
            self._calls.deadline = None

    def content_error(self, exc):
        sa = self.sa
        if isinstance(exc, sa.exc.DataError):
            return True
        if isinstance(exc, sa.exc.StatementError) and not isinstance(
                exc, sa.exc.DBAPIError):
            # raised on the client before the statement was sent
            return isinstance(exc.orig, base.CONTENT_ERRORS)
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return False
        return super().content_error(exc)

    @contextlib.contextmanager
    def _store_errors(self):
        """Read-side failures as one line, without SQL or parameters."""
        try:
            yield
        except self.sa.exc.SQLAlchemyError as exc:
            raise base.DriverError("SQL store %s: %s" % (
                self.where,
                logtext.one_line(getattr(exc, "orig", None) or exc,
                                 with_type=False))
            ) from None

    def ensure_schema(self):
        """Create the table and indexes if missing, once per driver.

        Workers forked together may race to create it; the loser finds it
        there on its second look.
        """
        if self._schema_ready:
            return
        for attempt in (1, 2):
            try:
                self.table.metadata.create_all(self.engine, checkfirst=True)
                break
            except self.sa.exc.DBAPIError:
                if attempt == 2:
                    raise
        self._schema_ready = True

    # write side

    def write_points(self, batch):
        rows = []
        for point, message in zip(batch, self.format_points(batch)):
            rows.append(self._row(message, EPOCH + datetime.timedelta(
                microseconds=point[5] // 1000)))
        self._insert(rows)

    def write_messages(self, messages):
        self._insert([self._row(m, datetime.datetime.strptime(
            m["timestamp"], TS_FORMAT)) for m in messages])

    def notify(self, info, **kwargs):
        message = dict(info)
        message.setdefault("project", self.project)
        message.setdefault("service", self.service)
        self.write_messages([message])

    def _row(self, message, when):
        info = message.get("info")
        host = info.get("host") if isinstance(info, dict) else None
        return {"base_id": _clip(message["base_id"]),
                "trace_id": _clip(message.get("trace_id")),
                "parent_id": _clip(message.get("parent_id")),
                "name": _clip(message.get("name")),
                "timestamp": when,
                "project": _clip(message.get("project")),
                "service": _clip(message.get("service")),
                "host": _clip(host),
                "is_error": base.is_error_message(message),
                "message": base.to_json(message)}

    def _insert(self, rows):
        if not rows:
            return
        with self._deadline("write"):
            self.ensure_schema()
            with self.engine.begin() as conn:  # commits, or rolls back
                conn.execute(self.table.insert(), rows)

    def close(self):
        self.engine.dispose()

    def after_fork(self):
        # The parent's pooled connections must not be used (or closed) by
        # the child: forget them and open new ones.
        self.engine.dispose(close=False)

    # read side

    def _readable(self):
        """False when nothing was ever written (no table: nothing to read).

        A SQLite file that does not exist is refused rather than opened,
        which would create it: a mistyped path is not an empty store.
        """
        if self._schema_ready:
            return True
        path = self.engine.url.database
        if self._backend == "sqlite" and not self.engine.url.query.get(
                "uri") and not os.path.exists(path):
            raise base.DriverError("no SQLite trace database at %s"
                                   % os.path.abspath(path))
        self._schema_ready = self.sa.inspect(self.engine).has_table(TABLE)
        return self._schema_ready

    def _rows(self, query):
        with self._store_errors(), self._deadline("read"):
            if not self._readable():
                return []
            with self.engine.connect() as conn:
                return conn.execute(query).all()

    def get_messages(self, base_id):
        """The trace's messages in time order.  A row whose text is not
        JSON is skipped and named in ``skipped`` (by its place)."""
        t = self.table
        query = (self.sa.select(t.c.message).where(t.c.base_id == base_id)
                 .order_by(t.c.timestamp, t.c.id))
        # One pass of the compiled codec (when installed) over the texts.
        messages, bad = codec.loads_each([row.message
                                          for row in self._rows(query)])
        for index in bad:
            self._skip("%s row %d of trace %s" % (TABLE, index, base_id),
                       "not JSON")
        return messages

    def _firsts(self, only_errors=False):
        """(base_id, earliest timestamp) per trace, oldest trace first."""
        sa, t = self.sa, self.table
        first = sa.func.min(t.c.timestamp).label("first")
        query = sa.select(t.c.base_id, first).group_by(t.c.base_id)
        if only_errors:
            query = query.where(t.c.is_error == sa.true())
        return self._rows(query.order_by(first, t.c.base_id))

    def list_traces(self, fields=None):
        fields = set(fields or ("base_id", "timestamp"))
        firsts = self._firsts()
        extra = fields - {"base_id", "timestamp"}
        details = self._first_messages() if extra else {}
        result = []
        for base_id, first in firsts:
            trace = {k: v for k, v in details.get(base_id, {}).items()
                     if k in extra}
            trace.update(base_id=base_id, timestamp=first.strftime(TS_FORMAT))
            result.append({k: v for k, v in trace.items() if k in fields})
        return result

    def _first_messages(self):
        """base_id -> the message of each trace's earliest point."""
        return {base_id: json.loads(message) for base_id, message
                in self._earliest(self.table.c.message)}

    def _earliest(self, column, where=None):
        """(base_id, ``column`` of its earliest point) of each trace."""
        sa, t = self.sa, self.table
        earliest = sa.select(t.c.base_id,
                             sa.func.min(t.c.timestamp).label("first"))
        if where is not None:
            earliest = earliest.where(where)
        earliest = earliest.group_by(t.c.base_id).subquery()
        query = sa.select(t.c.base_id, column).join(
            earliest, sa.and_(t.c.base_id == earliest.c.base_id,
                              t.c.timestamp == earliest.c.first))
        return self._rows(query)

    def trace_summaries(self, since_us=None, until_us=None):
        """Two grouped queries: per trace and service its first and last
        time, span count and errors; the name of each trace's first
        point."""
        sa, t = self.sa, self.table
        chosen = self._started_in(since_us, until_us)
        per_service = sa.select(
            t.c.base_id, t.c.service,
            sa.func.min(t.c.timestamp).label("first"),
            sa.func.max(t.c.timestamp).label("last"),
            sa.func.count(sa.distinct(t.c.trace_id)).label("spans"),
            sa.func.max(sa.cast(t.c.is_error, sa.Integer)).label("error"))
        if chosen is not None:
            per_service = per_service.where(chosen)
        traces = {}
        for row in self._rows(per_service.group_by(t.c.base_id,
                                                   t.c.service)):
            trace = traces.setdefault(row.base_id, {
                "first": row.first, "last": row.last, "services": set(),
                "spans": 0, "error": False})
            trace["first"] = min(trace["first"], row.first)
            trace["last"] = max(trace["last"], row.last)
            trace["services"].add(row.service)
            trace["spans"] += row.spans
            trace["error"] = trace["error"] or bool(row.error)
        names = dict(self._earliest(t.c.name, chosen))
        return [base.summary(base_id, names.get(base_id), _us(v["first"]),
                             _us(v["last"]), v["services"], v["spans"],
                             v["error"]) for base_id, v in traces.items()]

    def _started_in(self, since_us, until_us):
        """A condition on base_id: the trace began in the window (None
        when the window is open at both ends)."""
        if since_us is None and until_us is None:
            return None
        sa, t = self.sa, self.table
        first = sa.func.min(t.c.timestamp)
        started = sa.select(t.c.base_id).group_by(t.c.base_id)
        if since_us is not None:
            started = started.having(first >= _when(since_us))
        if until_us is not None:
            started = started.having(first < _when(until_us))
        return t.c.base_id.in_(started.scalar_subquery())

    def list_error_traces(self):
        return [{"base_id": base_id, "timestamp": first.strftime(TS_FORMAT)}
                for base_id, first in self._firsts(only_errors=True)]


def _fileno(connection):
    """The socket descriptor of a DBAPI connection (psycopg 3 and 2,
    PyMySQL), or None."""
    try:
        return connection.fileno()
    except Exception:
        pass
    sock = getattr(connection, "_sock", None)
    try:
        return sock.fileno() if sock is not None else None
    except Exception:
        return None
