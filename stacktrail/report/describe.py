"""One line saying what a span did, from what its integration recorded.

    wsgi     GET /v2/queues/q1 -> 201
    http     GET 10.0.0.5:8774/v2.1/servers -> 200
    db       SELECT servers.id FROM servers WHERE servers.uuid = %(uuid_…
    rpc      call compute.build_instance
    redis    GET  /  PIPELINE (3 commands)
    mongodb  find servers
    driver, pool, @profiler.trace: the function or method name

The kind of span is told by the keys of its start info (what each
integration, stacktrail's or osprofiler's, records), not by its point
name, which services choose ("db", "db-query", osprofiler's "https" for
an HTTP call).  Only the fields named here are used: never SQL
parameters, query strings, documents, call arguments or results.
Anything else, or anything malformed, gives "" rather than a guess.

This runs once per span while a report is built, so each case is a few
dict lookups.
"""

SQL_LIMIT = 60       # characters of a statement shown
_SQL_HEAD = 4 * SQL_LIMIT
_FIELD_LIMIT = 200   # any other recorded string
_RAW = "meta.raw_payload."
_NO_INFO = {}
_TEXT = (str, int)
_SQL_LINES = {}  # statement -> its line
_SQL_CACHE_SIZE = 4096
_SQL_CACHE_TEXT = 2000  # longer statements are not kept


def _text(value, limit=_FIELD_LIMIT):
    """A recorded scalar as short text ("" for anything else)."""
    if value.__class__ is str:
        return value if len(value) <= limit else value[:limit - 1] + "…"
    if isinstance(value, _TEXT) and not isinstance(value, bool):
        return str(value)
    return ""


def _status(value):
    text = _text(value, 16)
    return " -> " + text if text else ""


def sql(statement):
    """A statement on one line, whitespace collapsed, cut with an ellipsis.

    A service runs the same few statements over and over, so the lines of
    statements of ordinary length are cached by statement text (bounded in
    entries and in the size of the texts it keeps alive).
    """
    if statement.__class__ is not str:
        return ""
    line = _SQL_LINES.get(statement)
    if line is None:
        line = _sql_line(statement)
        if len(statement) <= _SQL_CACHE_TEXT:
            if len(_SQL_LINES) >= _SQL_CACHE_SIZE:
                _SQL_LINES.clear()
            _SQL_LINES[statement] = line
    return line


def _sql_line(statement):
    head = statement[:_SQL_HEAD]
    line = " ".join(head.split())
    if len(line) <= SQL_LIMIT and len(statement) > _SQL_HEAD:
        # Mostly whitespace up front (indented SQL): collapse it all.
        line = " ".join(statement.split())
    if len(line) > SQL_LIMIT:
        line = line[:SQL_LIMIT - 1].rstrip() + "…"
    return line


def _wsgi(request, start, stop):
    # web.request_info; osprofiler's wsgi point has the same keys and no
    # status.  The query string is left out.
    if request.__class__ is not dict:
        return ""
    method, path = _text(request.get("method")), _text(request.get("path"))
    if not (method or path):
        return ""
    out = ("%s %s" % (method, path)).strip()
    response = stop.get("response")
    if response.__class__ is dict:
        out += _status(response.get("status"))
    return out


def _http(request, start, stop):
    # integrations.http.request_info and osprofiler.requests: method,
    # scheme, hostname, port, path; status_code at stop.  No query.
    if request.__class__ is not dict:
        return ""
    host = _text(request.get("hostname"))
    if ":" in host:
        host = "[%s]" % host  # IPv6
    port = _text(request.get("port"))
    if host and port:
        host += ":" + port
    method = _text(request.get("method"))
    out = ("%s %s%s" % (method, host, _text(request.get("path")))).strip()
    if not out:
        return ""
    response = stop.get("requests")
    if response.__class__ is dict:
        out += _status(response.get("status_code"))
    return out


def _db(db, start, stop):
    if db.__class__ is not dict:
        return ""
    if "statement" in db:                     # SQLAlchemy / oslo.db
        return sql(db["statement"])
    command = _text(db.get("command"), 64)
    if not command:
        return ""
    if db.get("system") == "redis":           # integrations.redis
        if command == "PIPELINE":
            count = db.get("commands")
            if count.__class__ is int:
                return "PIPELINE (%d command%s)" % (
                    count, "" if count == 1 else "s")
        return command
    collection = _text(db.get("collection"))  # integrations.pymongo
    return "%s %s" % (command, collection) if collection else command


def _rpc(rpc, start, stop):
    # integrations.rpc._span_info: type (call/cast), topic, method.
    if rpc.__class__ is not dict:
        return ""
    method = _text(rpc.get("method"))
    if not method:
        return ""
    topic = _text(rpc.get("topic"))
    target = "%s.%s" % (topic, method) if topic else method
    kind = _text(rpc.get("type"), 16)
    return "%s %s" % (kind, target) if kind else target


def _pool(pool, start, stop):
    # integrations.pools: the pool's name and the operation (the traced
    # method's name, or "checkout").
    if pool.__class__ is not dict:
        return ""
    name, operation = _text(pool.get("name")), _text(pool.get("operation"))
    return "%s.%s" % (name, operation) if name and operation else (
        name or operation)


def _function(function, start, stop):
    # @profiler.trace, trace_cls and integrations.drivers: the qualified
    # name.  Never args, kwargs or result.
    if function.__class__ is not dict:
        return ""
    return _text(function.get("name"))


# The start info key that tells the kind of span, in the order tried.
_KINDS = (("request", _wsgi), ("requests", _http), ("db", _db),
          ("rpc", _rpc), ("pool", _pool), ("function", _function))


def from_infos(start, stop=None):
    """The detail of a span from its start and stop info dicts."""
    if start.__class__ is not dict:
        return ""
    if stop.__class__ is not dict:
        stop = _NO_INFO
    try:
        for key, describe_kind in _KINDS:
            if key in start:
                return describe_kind(start[key], start, stop)
    except Exception:  # a hostile or odd payload: say nothing
        return ""
    return ""


def _payload_info(message):
    info = message.get("info") if message.__class__ is dict else None
    return info if info.__class__ is dict else None


def describe(node_info):
    """The detail of a report node's ``info`` (built or loaded), read from
    its raw start and stop payloads."""
    if node_info.__class__ is not dict:
        return ""
    start = stop = None
    for key, value in node_info.items():
        if key.__class__ is not str or not key.startswith(_RAW):
            continue
        # osprofiler's name rule: a name ending in "stop" is the stop.
        if key.endswith("stop"):
            stop = _payload_info(value)
        elif start is None:
            start = _payload_info(value)
    return from_infos(start, stop)


def ensure(report):
    """Give every node of a loaded report (saved by an older stacktrail or
    by osprofiler) its ``detail``; nodes that have one keep it."""
    stack = list(report.get("children") or ())
    while stack:
        node = stack.pop()
        if node.__class__ is not dict:
            continue
        info = node.get("info")
        if info.__class__ is dict and "detail" not in info:
            info["detail"] = describe(info)
        stack.extend(node.get("children") or ())
    return report
