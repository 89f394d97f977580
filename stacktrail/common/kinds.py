"""Span kinds: what a span's ``info`` holds, declared once.

An integration records what a span did as one dict under one key of the
start info, and the key says what kind of span it is::

    wsgi      {"request": {...}}    stop: {"response": {"status": 201}}
    http      {"requests": {...}}   stop: {"requests": {"status_code": 200}}
    db        {"db": {...}}         SQL statements, Redis and MongoDB commands
    rpc       {"rpc": {...}}
    pool      {"pool": {...}}
    function  {"function": {...}}   @profiler.trace, trace_cls, driver methods

The shapes are osprofiler's where it has one (wsgi, http, SQL, @trace), so
points written by either library read the same.  Each ``Kind`` says what
its dict holds, how a report describes it in one line and how it maps to
OpenTelemetry (span kind, semantic-convention attributes).  Integrations
build their info with it; ``report.describe`` and ``drivers.otlp`` read
it.  Third parties add kinds through the ``stacktrail.kinds`` entry point
namespace (each entry point names a ``Kind``).

Pure data and pure functions: nothing here imports an integration, a
client library or protobuf.  ``line`` runs once per span while a report
is built, so it is a few dict lookups and a call.
"""

import operator
import re

from stacktrail.common import plugins

NAMESPACE = "stacktrail.kinds"

# OpenTelemetry span kinds (the exporter turns them into its enum).
SERVER, CLIENT, INTERNAL = "SERVER", "CLIENT", "INTERNAL"
PRODUCER, CONSUMER = "PRODUCER", "CONSUMER"
SPAN_KINDS = (SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER)


def _says_nothing(part, stop):
    return ""


def _maps_nothing(part, info):
    return {}


class Kind:
    """One kind of span: the dict its integrations record under ``key``.

    ``fields``: {field: what it holds}, the documentation of that dict.
    ``span_kind``: one of SPAN_KINDS (SERVER, CLIENT, INTERNAL...), or a
    function ``(part, point_name) -> one of them`` when it depends on the
    span.
    ``describe(part, stop)``: the span in one line for reports, "" when it
    cannot tell.  ``part`` is what the start recorded under ``key``, which
    may be anything at all (payloads come from other processes); ``stop``
    is the whole stop info ({} when there is none).
    ``attributes(part, info)``: {semantic-convention name: value}.  ``part``
    is the kind's dict (a dict), ``info`` the whole span info, start and
    stop merged; ``mapped`` names the fields it accounts for, which an
    exporter does not repeat under their own names.
    ``stop_key``: where the stop records the outcome when not under ``key``
    (the WSGI filter's ``response``, as osprofiler's readers expect).
    ``names``: {first word of a point name: fields it implies}, for points
    that say what they are by name only (osprofiler-era ``redis`` points,
    ``trace_cls("rpc")``, our pymongo spans that record no ``system``).
    """

    __slots__ = ("name", "key", "fields", "span_kind", "describe",
                 "attributes", "mapped", "stop_key", "names")

    def __init__(self, name, key, fields, span_kind=INTERNAL,
                 describe=_says_nothing, attributes=_maps_nothing,
                 mapped=(), stop_key=None, names=None):
        self.name = name
        self.key = key
        self.fields = dict(fields)
        self.span_kind = span_kind
        self.describe = describe
        self.attributes = attributes
        self.mapped = frozenset(mapped)
        self.stop_key = stop_key or key
        self.names = dict(names or {})

    def start_info(self, fields):
        """The start info of a span of this kind."""
        return {self.key: fields}

    def stop_info(self, fields):
        """The stop info recording its outcome."""
        return {self.stop_key: fields}

    def otel_kind(self, part, point_name):
        """The OpenTelemetry span kind of one span of this kind."""
        kind = self.span_kind
        return kind if kind.__class__ is str else kind(part, point_name)

    def __repr__(self):
        return "Kind(%r)" % self.name


# The builtin kinds' keys (each string written here only).
_REQUEST, _RESPONSE, _REQUESTS = "request", "response", "requests"


# --- one line per span -------------------------------------------------------
# Only the fields named here are shown: never SQL parameters, query
# strings, documents, call arguments or results.  Anything malformed gives
# "" rather than a guess.

SQL_LIMIT = 60       # characters of a statement shown
_SQL_HEAD = 4 * SQL_LIMIT
_FIELD_LIMIT = 200   # any other recorded string
_TEXT = (str, int)
_SQL_LINES = {}  # statement -> its line
_SQL_CACHE_SIZE = 4096
_SQL_CACHE_TEXT = 2000  # longer statements are not kept


def text(value, limit=_FIELD_LIMIT):
    """A recorded scalar as short text ("" for anything else)."""
    if value.__class__ is str:
        return value if len(value) <= limit else value[:limit - 1] + "…"
    if isinstance(value, _TEXT) and not isinstance(value, bool):
        return str(value)
    return ""


def _status(holder, field):
    if holder.__class__ is not dict:
        return ""
    shown = text(holder.get(field), 16)
    return " -> " + shown if shown else ""


def sql_line(statement):
    """A statement on one line, whitespace collapsed, cut with an ellipsis.

    A service runs the same few statements over and over, so the lines of
    statements of ordinary length are cached by statement text (bounded in
    entries and in the size of the texts it keeps alive).
    """
    if statement.__class__ is not str:
        return ""
    shown = _SQL_LINES.get(statement)
    if shown is None:
        shown = _collapse(statement)
        if len(statement) <= _SQL_CACHE_TEXT:
            if len(_SQL_LINES) >= _SQL_CACHE_SIZE:
                _SQL_LINES.clear()
            _SQL_LINES[statement] = shown
    return shown


def _collapse(statement):
    head = statement[:_SQL_HEAD]
    shown = " ".join(head.split())
    if len(shown) <= SQL_LIMIT and len(statement) > _SQL_HEAD:
        # Mostly whitespace up front (indented SQL): collapse it all.
        shown = " ".join(statement.split())
    if len(shown) > SQL_LIMIT:
        shown = shown[:SQL_LIMIT - 1].rstrip() + "…"
    return shown


def _describe_wsgi(request, stop):
    # osprofiler's wsgi point has the same keys and no status.  The query
    # string is left out.
    if request.__class__ is not dict:
        return ""
    method, path = text(request.get("method")), text(request.get("path"))
    if not (method or path):
        return ""
    return ("%s %s" % (method, path)).strip() + _status(
        stop.get(_RESPONSE), "status")


def _describe_http(request, stop):
    # Also osprofiler.requests.  No query.
    if request.__class__ is not dict:
        return ""
    host = text(request.get("hostname"))
    if ":" in host:
        host = "[%s]" % host  # IPv6
    port = text(request.get("port"))
    if host and port:
        host += ":" + port
    method = text(request.get("method"))
    out = ("%s %s%s" % (method, host, text(request.get("path")))).strip()
    if not out:
        return ""
    return out + _status(stop.get(_REQUESTS), "status_code")


def _describe_db(db, stop):
    if db.__class__ is not dict:
        return ""
    if "statement" in db:                     # SQLAlchemy / oslo.db
        statement = db["statement"]
        # The cache inline: SQL spans are most of a big report's spans.
        return _SQL_LINES.get(statement) or sql_line(statement)
    command = text(db.get("command"), 64)
    if not command:
        return ""
    if db.get("system") == "redis":
        if command == "PIPELINE":
            count = db.get("commands")
            if count.__class__ is int:
                return "PIPELINE (%d command%s)" % (
                    count, "" if count == 1 else "s")
        return command
    collection = text(db.get("collection"))  # MongoDB
    return "%s %s" % (command, collection) if collection else command


def _describe_rpc(rpc, stop):
    if rpc.__class__ is not dict:
        return ""
    method = text(rpc.get("method"))
    if not method:
        return ""
    topic = text(rpc.get("topic"))
    target = "%s.%s" % (topic, method) if topic else method
    call_type = text(rpc.get("type"), 16)
    return "%s %s" % (call_type, target) if call_type else target


def _describe_pool(pool, stop):
    if pool.__class__ is not dict:
        return ""
    name, operation = text(pool.get("name")), text(pool.get("operation"))
    return "%s.%s" % (name, operation) if name and operation else (
        name or operation)


def _describe_function(function, stop):
    if function.__class__ is not dict:
        return ""
    return text(function.get("name"))


# --- OpenTelemetry semantic conventions --------------------------------------

def renamed(part, table):
    """{attribute: value} for each ``(field, attribute)`` of ``table`` whose
    field holds a value; the first field found wins an attribute."""
    attrs = {}
    for field, attribute in table:
        value = part.get(field)
        if value not in (None, "") and attribute not in attrs:
            attrs[attribute] = value
    return attrs


def mapped_by(*tables):
    """The fields ``renamed`` tables account for (a kind's ``mapped``)."""
    return frozenset(field for table in tables for field, _ in table)


def _numbers(attrs):
    # The conventions want integers; recorders give "200 OK" or "8774" too.
    code = attrs.get("http.response.status_code")
    if isinstance(code, str) and code[:3].isdigit():
        attrs["http.response.status_code"] = int(code[:3])
    port = attrs.get("server.port")
    if isinstance(port, str) and port.isdigit():
        attrs["server.port"] = int(port)
    return attrs


_SERVER = (("hostname", "server.address"), ("server", "server.address"),
           ("host", "server.address"), ("port", "server.port"))
_STATUS = (("status_code", "http.response.status_code"),
           ("status", "http.response.status_code"))
_HTTP = (("method", "http.request.method"), ("path", "url.path"),
         ("query", "url.query"), ("scheme", "url.scheme"),
         ("url", "url.full")) + _STATUS + _SERVER
_DB = (("command", "db.operation.name"), ("operation", "db.operation.name"),
       ("collection", "db.collection.name"), ("database", "db.namespace"),
       ("name", "db.namespace"), ("namespace", "db.namespace")) + _SERVER
_RPC = (("method", "rpc.method"), ("topic", "rpc.service"),
        ("service", "rpc.service"), ("namespace", "rpc.service")) + _SERVER
_SQL_SYSTEMS = ("postgresql", "mysql", "mariadb", "sqlite", "oracle", "mssql")


def _http_attributes(request, info):
    return _numbers(renamed(request, _HTTP))


def _wsgi_attributes(request, info):
    attrs = renamed(request, _HTTP)
    response = info.get(_RESPONSE)
    if isinstance(response, dict):
        for name, value in renamed(response, _STATUS).items():
            attrs.setdefault(name, value)
    return _numbers(attrs)


def _db_attributes(db, info):
    system = db.get("system") or _sql_system(db) or "other_sql"
    attrs = {"db.system": system, "db.system.name": system}
    statement = db.get("query") or db.get("statement")
    if statement:
        attrs["db.query.text"] = attrs["db.statement"] = str(statement)
    attrs.update(renamed(db, _DB))
    return _numbers(attrs)


def _sql_system(db):
    dialect = str(db.get("dialect") or db.get("engine") or "").lower()
    for known in _SQL_SYSTEMS:
        if known in dialect:
            return known
    return None


def _rpc_attributes(rpc, info):
    attrs = {"rpc.system": rpc.get("system") or "oslo_messaging"}
    attrs.update(renamed(rpc, _RPC))
    return _numbers(attrs)


def _rpc_side(rpc, point_name):
    # The dispatcher's span, or a point named for the receiving side.
    if rpc.get("type") == "server" or "server" in point_name.lower():
        return SERVER
    return CLIENT


def _function_attributes(function, info):
    name = function.get("name")
    return {"code.function.name": name} if name else {}


# --- the builtin kinds -------------------------------------------------------

WSGI = Kind(
    "wsgi", _REQUEST,
    {"method": "HTTP method",
     "path": "SCRIPT_NAME + PATH_INFO",
     "query": "query string, secret-looking values masked (never shown)",
     "scheme": "wsgi.url_scheme",
     "host": "Host header, or SERVER_NAME:SERVER_PORT",
     "project": "X-Project-ID, when the client sent one",
     "status": "stop, under response: the HTTP status code"},
    span_kind=SERVER, describe=_describe_wsgi, attributes=_wsgi_attributes,
    mapped=mapped_by(_HTTP), stop_key=_RESPONSE, names={"wsgi": {}})

HTTP = Kind(
    "http", _REQUESTS,
    {"method": "HTTP method", "scheme": "URL scheme",
     "hostname": "server host name or address", "port": "server port",
     "path": "URL path",
     "query": "query string, only with show_query (never shown)",
     "status_code": "stop: the HTTP status code"},
    span_kind=CLIENT, describe=_describe_http, attributes=_http_attributes,
    mapped=mapped_by(_HTTP),
    names={"http": {}, "https": {}, "requests": {}})

DB = Kind(
    "db", "db",
    {"statement": "SQL text",
     "system": "SQLAlchemy dialect name, or redis (MongoDB: by point name)",
     "params": "SQL parameters, only with show_sql_parameters (never "
               "shown or exported)",
     "executemany": "True for executemany",
     "command": "Redis or MongoDB command name (PIPELINE for a pipeline)",
     "keys": "Redis: how many keys the command names (never key names)",
     "commands": "Redis pipeline: how many commands",
     "names": "Redis pipeline: the first command names",
     "transaction": "Redis pipeline: MULTI/EXEC or not",
     "db": "Redis database number",
     "database": "MongoDB database", "collection": "MongoDB collection",
     "host": "MongoDB server host", "port": "MongoDB server port",
     "document": "MongoDB command, only with show_documents",
     "reply": "stop: MongoDB reply, only with show_documents",
     "duration_us": "stop: MongoDB's own duration",
     "code": "stop: MongoDB error code",
     "result": "stop: SQL rows, only when results are not hidden",
     "rowcount": "stop: SQL row count, only when results are not hidden",
     "original_exception": "stop: the SQL error",
     "chained_exception": "stop: its cause"},
    span_kind=CLIENT, describe=_describe_db, attributes=_db_attributes,
    mapped=mapped_by(_DB) | {"system", "dialect", "engine", "statement",
                             "query"},
    names={"db": {}, "sql": {}, "sqlalchemy": {}, "memcache": {},
           "memcached": {}, "redis": {"system": "redis"},
           "mongodb": {"system": "mongodb"},
           "pymongo": {"system": "mongodb"}})

RPC = Kind(
    "rpc", "rpc",
    {"method": "RPC method", "type": "call, cast, or server (dispatched)",
     "topic": "target topic", "server": "target server",
     "namespace": "target namespace", "version": "target version",
     "exchange": "target exchange", "fanout": "True for a fanout cast",
     "system": "RPC system, oslo_messaging when not recorded"},
    span_kind=_rpc_side, describe=_describe_rpc, attributes=_rpc_attributes,
    mapped=mapped_by(_RPC) | {"system"},
    names={"rpc": {"system": "oslo_messaging"}, "amqp": {},
           "messaging": {}})

POOL = Kind(
    "pool", "pool",
    {"name": "the pool", "operation": "checkout, or the traced method",
     "result": "stop: what was handed out or chosen",
     "...": "any other keyword given to pools.checkout"},
    describe=_describe_pool)

FUNCTION = Kind(
    "function", "function",
    {"name": "qualified name of the function or method",
     "args": "str of the arguments, only when asked for",
     "kwargs": "str of the keyword arguments, only when asked for",
     "result": "stop: repr of the result, only when asked for"},
    describe=_describe_function, attributes=_function_attributes,
    mapped=("name",))

# In the order a span's kind is looked up.  ``function`` stays last, after
# the third parties' kinds: method wrappers add it to whatever info an
# adapter records for its own kind.
BUILTIN = (WSGI, HTTP, DB, RPC, POOL, FUNCTION)


# --- the registry ------------------------------------------------------------

_extra = None
_every = None   # builtin and third-party kinds, in lookup order
_order = None   # ((key, kind), ...) of _every
_lines = None   # ((key, describe), ...) of _every, for ``line``
_names = None   # {first word of a point name: (kind, implied fields)}
_FIRST_WORD = re.compile(r"[-._ :/]")
_NO_INFO = {}
_by_point = {}  # point name -> named(point name): services use a few names
_BY_POINT_SIZE = 4096
_UNSEEN = object()


def extra(manager=None):
    """Kinds third parties declared through entry points (loaded once).

    ``manager``: a stevedore ExtensionManager to use instead (tests build
    one with ``ExtensionManager.make_test_instance``).
    """
    global _extra, _every, _order, _lines, _names
    if manager is None and _extra is not None:
        return _extra
    _extra = plugins.instances(NAMESPACE, Kind, operator.attrgetter("key"),
                               [kind.key for kind in BUILTIN], manager)
    _every = _order = _lines = _names = None  # rebuilt from the new list
    return _extra


def every():
    """Every kind in lookup order: the builtin ones, with the third
    parties' before ``function``."""
    return _every or _index()[0]


def _index():
    global _every, _order, _lines, _names
    kinds = BUILTIN[:-1] + extra() + BUILTIN[-1:]
    names = {}
    for kind in reversed(kinds):  # the first kind to claim a name keeps it
        names.update((word, (kind, implied))
                     for word, implied in kind.names.items())
    _order = tuple((kind.key, kind) for kind in kinds)
    _lines = tuple((kind.key, kind.describe if kind in BUILTIN
                    else _text_only(kind.describe)) for kind in kinds)
    _names, _every = names, kinds
    _by_point.clear()
    return _every, _order, _lines, _names


def _text_only(describe):
    """A third party's describer, held to giving text."""
    def checked(part, stop):
        shown = describe(part, stop)
        return shown if shown.__class__ is str else ""
    return checked


def of(info):
    """The kind a start info records (None: none it knows)."""
    for key, kind in _order or _index()[1]:
        if key in info:
            return kind
    return None


def line(start, stop=None):
    """The one-line detail of a span from its start and stop infos ("" when
    it records no kind known here, or the payload is odd).

    ``of`` inlined: this runs once per span while a report is built.
    """
    if start.__class__ is not dict:
        return ""
    if stop.__class__ is not dict:
        stop = _NO_INFO
    try:
        for key, describe in _lines or _index()[2]:
            if key in start:
                return describe(start[key], stop)
    except Exception:  # a hostile payload, or a failing plugin: say nothing
        return ""
    return ""


def named(point_name):
    """``(kind, implied fields)`` a point's name says, or None.

    The first word counts: "db-query" is a ``db`` point, osprofiler's
    "https" an ``http`` one.
    """
    found = _by_point.get(point_name, _UNSEEN)
    if found is _UNSEEN:
        word = _FIRST_WORD.split(point_name, 1)[0].lower()
        found = (_names if _names is not None else _index()[3]).get(word)
        if len(_by_point) >= _BY_POINT_SIZE:
            _by_point.clear()
        _by_point[point_name] = found
    return found


def parts(point_name, info):
    """``[(kind, part)]`` for every kind a span records or its point name
    implies, in lookup order: what an exporter maps.

    ``info`` is the start and stop info merged.  A kind counts when its
    ``key`` or ``stop_key`` holds a dict, or when the point's name implies
    fields of it (they fill in what the part lacks).
    """
    by_name = named(point_name)
    implied_kind, implied = by_name if by_name is not None else (None, None)
    found = []
    for key, kind in _order or _index()[1]:
        part = info.get(key)
        if kind is implied_kind and implied:
            part = _implied(part if isinstance(part, dict) else {}, implied)
        elif not isinstance(part, dict):
            if kind.stop_key == key or not isinstance(
                    info.get(kind.stop_key), dict):
                continue
            part = {}
        found.append((kind, part))
    return found


def _implied(part, implied):
    merged = dict(part)
    for field, value in implied.items():
        if not merged.get(field):
            merged[field] = value
    return merged


def span_kind(point_name, info, found=None):
    """One of SPAN_KINDS: as the kind the point's name says, else as the
    first kind its info records (INTERNAL: neither).

    Services name points after what they are ("db" on a traced DB API, "rpc"
    on a manager) while the info may only say that a method was wrapped.
    ``found``: ``parts(point_name, info)`` when already made.
    """
    by_name = named(point_name)
    kind = by_name[0] if by_name is not None else of(info)
    if kind is None:
        return INTERNAL
    if found is None:
        found = parts(point_name, info)
    part = next((p for k, p in found if k is kind), {})
    try:
        otel_kind = kind.otel_kind(part, point_name)
    except Exception:  # a third party's function failed: nothing special
        return INTERNAL
    return otel_kind if otel_kind in SPAN_KINDS else INTERNAL
