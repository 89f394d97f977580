"""What an OpenTelemetry span records, as stacktrail span info.

One vocabulary: the semantic-convention names ``common.kinds`` maps its
builtin kinds to are read here in reverse.  An HTTP server span becomes a
``wsgi`` span (``{"request": {...}}``, status under ``response``), an HTTP
client span an ``http`` one (``requests``), a database span a ``db`` one, an
RPC client or server span an ``rpc`` one, exactly the info those
integrations record, so reports describe them and the OTLP exporter maps
them back to the same attributes.  Whatever no builtin kind accounts for
stays under the ``otel`` kind (``stacktrail.otel.kind``) with its
semantic-convention name, with the span's OpenTelemetry kind and
instrumentation scope; the exporter sends those attributes as they are.

Deprecated attribute names (``http.method``, ``http.status_code``,
``net.peer.name``, ``db.name``...: what oslo.middleware and older
instrumentations write) are read as their current names first.

Secrets stay out, as everywhere in stacktrail: the values of attributes
named like secrets (``common.redact``) and values shaped like tokens are
masked, URL queries and paths are redacted like the WSGI filter's, and SQL
parameters (``db.query.parameter.*``) are dropped unless
``show_sql_parameters``.  Errors are the usual ``etype``/``message``.

Pure functions of plain data: no OpenTelemetry import.
"""

import urllib.parse

from stacktrail.common import kinds
from stacktrail.common import redact
from stacktrail.common import settings

KEY = "otel"
MAX_TEXT = 4096
MAX_EVENTS = 128
MAX_LINKS = 32

SERVER, CLIENT = kinds.SERVER, kinds.CLIENT

# Deprecated semantic-convention names -> their current names.
ALIASES = {
    "http.method": "http.request.method",
    "http.status_code": "http.response.status_code",
    "http.url": "url.full",
    "http.scheme": "url.scheme",
    "http.target": "url.path",
    "http.user_agent": "user_agent.original",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
    "net.host.name": "server.address",
    "net.host.port": "server.port",
    "db.name": "db.namespace",
    "db.operation": "db.operation.name",
    "db.sql.table": "db.collection.name",
    "db.mongodb.collection": "db.collection.name",
    "messaging.destination": "messaging.destination.name",
}
_SQL_PARAMETERS = ("db.query.parameter.", "db.operation.parameter.")
_URL_PATHS = ("url.path", "http.route", "url.template")


def _reverse(table):
    """{attribute: field} of a ``kinds`` (field, attribute) table; the
    first field naming an attribute is the one it is read back into."""
    reverse = {}
    for field, attribute in table:
        reverse.setdefault(attribute, field)
    return reverse


# The builtin kinds' own tables (``common.kinds``), read in reverse.
_HTTP = _reverse(getattr(kinds, "_HTTP", ()))
_DB = _reverse(getattr(kinds, "_DB", ()))
_RPC = _reverse(getattr(kinds, "_RPC", ()))
_STATUS = "http.response.status_code"
_DB_SYSTEM = ("db.system.name", "db.system")
_DB_TEXT = ("db.query.text", "db.statement")


# --- attributes --------------------------------------------------------------

def attributes(raw):
    """Attributes under their current names, made safe to record."""
    if not raw:
        return {}
    out = {}
    show_params = settings.current.show_sql_parameters
    extra = redact.extra_names()
    for key, value in dict(raw).items():
        if not isinstance(key, str) or value is None:
            continue
        name = ALIASES.get(key, key)
        if name != key and name in raw:
            continue  # the current name was given too: it wins
        if name.startswith(_SQL_PARAMETERS) and not show_params:
            continue
        value = _value(value)
        if key == "http.target" and isinstance(value, str):
            path, _, query = value.partition("?")
            value = path
            if query:
                out.setdefault("url.query", redact.query(query))
        out[name] = _safe(name, value, extra)
    return out


def _value(value):
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT]
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value[:128]]
    return _value(str(value))


# Names whose last word only looks like a secret's ("code").
_NOT_SECRET_ENDINGS = ("status_code", "error_code", "code.lineno",
                       "code.column")
_NOT_SECRET_PREFIXES = ("code.",)


_secret_names = {}  # attribute name -> secret_name(name)
_secret_names_of = [None]  # the extra names the cache was made under


def secret_name(name, extra=None):
    """True when an attribute's own name (its last segment) is a secret's
    (``common.redact``, with ``[profiler] redact_names``), as for query
    parameters.  Instrumentations use a few names over and over: answers
    are kept while the names to hide stay the same (``extra``:
    ``redact.extra_names()`` when the caller has it)."""
    if extra is None:
        extra = redact.extra_names()
    if _secret_names_of[0] is not extra or len(_secret_names) > 4096:
        _secret_names.clear()
        _secret_names_of[0] = extra
    found = _secret_names.get(name)
    if found is None:
        found = _secret_names[name] = not (
            name.endswith(_NOT_SECRET_ENDINGS) or
            name.startswith(_NOT_SECRET_PREFIXES)) and \
            redact.is_secret(name.rsplit(".", 1)[-1])
    return found


def _safe(name, value, extra=None):
    if secret_name(name, extra):
        return redact.MASK
    if isinstance(value, str):
        if name == "url.full":
            return _redact_url(value)
        if name == "url.query":
            return redact.query(value)
        if name in _URL_PATHS:
            return redact.path(value)
        if redact.looks_secret(value):
            return redact.MASK
    elif isinstance(value, list):
        return [redact.MASK if isinstance(v, str) and redact.looks_secret(v)
                else v for v in value]
    return value


def _redact_url(url):
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact.MASK
    netloc = parts.netloc.rpartition("@")[2]  # never user:password@
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, redact.path(parts.path),
         redact.query(parts.query), ""))


# --- one span ----------------------------------------------------------------

def error(exception_info, status_error, attrs, kind):
    """The ``etype``/``message`` a span ends with, or {}.

    ``status_error``: None (status not ERROR) or the status description.
    An exception recorded while the status is not ERROR was handled: it
    is an event, not an error.
    """
    if status_error is None:
        return {}
    if exception_info:
        return dict(exception_info)
    etype = attrs.get("error.type")
    if not etype:
        code = attrs.get(_STATUS)
        etype = "HTTPServerError" if kind == SERVER and isinstance(
            code, int) and code >= 500 else "_OTHER"
    return {"etype": str(etype), "message": status_error or ""}


def infos(name, kind, scope, raw_attributes, events=(), links=(),
          exception=None, status_error=None):
    """(point name, start info, stop info) of a span of the bridge.

    ``kind``: "SERVER", "CLIENT", "INTERNAL", "PRODUCER" or "CONSUMER";
    ``events``: [(name, time_ns, attributes)]; ``links``: [(trace id int,
    span id int)]; ``exception``: error info of the first exception
    recorded; ``status_error``: see ``error``.
    """
    attrs = attributes(raw_attributes)
    builtin, part, stop_part, used = _builtin(kind, attrs)
    start = {}
    if builtin is not None:
        start[builtin.key] = part
    otel = {"kind": kind}
    if scope:
        otel["scope"] = scope
    rest = {k: v for k, v in attrs.items() if k not in used}
    if rest:
        otel["attributes"] = rest
    if links:
        otel["links"] = ["%032x-%016x" % link for link in links[:MAX_LINKS]]
    start[KEY] = otel
    stop = {}
    if stop_part:
        stop[builtin.stop_key] = stop_part
    recorded = _events(events, exception, status_error)
    if recorded:
        stop[KEY] = {"events": recorded}
    stop.update(error(exception, status_error, attrs, kind))
    return point_name(name, builtin), start, stop or None


def absorbed(kind, scope, raw_attributes, events=(), exception=None,
             status_error=None):
    """The stop info an integration's span takes from the OpenTelemetry
    span it absorbed: everything under ``otel`` (the integration's own kind
    already says what the operation was; the exporter keeps its attributes
    where both name one)."""
    attrs = attributes(raw_attributes)
    otel = {"kind": kind}
    if scope:
        otel["scope"] = scope
    if attrs:
        otel["attributes"] = attrs
    recorded = _events(events, exception, status_error)
    if recorded:
        otel["events"] = recorded
    info = {KEY: otel}
    info.update(error(exception, status_error, attrs, kind))
    return info


def _events(events, exception, status_error):
    recorded = [{"name": str(name), "time_ns": ns,
                 "attributes": attributes(attrs)}
                for name, ns, attrs in list(events)[:MAX_EVENTS]]
    if exception and status_error is None:
        # Handled: not the span's error, but worth seeing.
        recorded.append({"name": "exception", "attributes": {
            "exception.type": exception.get("etype"),
            "exception.message": exception.get("message")}})
    return recorded


def _builtin(kind, attrs):
    """(builtin Kind or None, its start part, its stop part, attributes
    consumed) for the span's semantic-convention attributes."""
    if "http.request.method" in attrs and kind in (SERVER, CLIENT):
        return _http(kind, attrs)
    system = next((attrs[a] for a in _DB_SYSTEM if a in attrs), None)
    if system and kind == CLIENT:
        part, used = _renamed(attrs, _DB)
        part["system"] = system
        used.update(_DB_SYSTEM)
        text = next((attrs[a] for a in _DB_TEXT if a in attrs), None)
        if text:
            part["statement"] = text
            used.update(_DB_TEXT)
        return kinds.DB, part, None, used
    if attrs.get("rpc.system") and kind in (SERVER, CLIENT):
        part, used = _renamed(attrs, _RPC)
        part["system"] = attrs["rpc.system"]
        used.add("rpc.system")
        if kind == SERVER:
            part["type"] = "server"
        return kinds.RPC, part, None, used
    return None, None, None, set()


def _renamed(attrs, reverse):
    part, used = {}, set()
    for attribute, field in reverse.items():
        if attribute in attrs and field not in part:
            part[field] = attrs[attribute]
            used.add(attribute)
    return part, used


def _http(kind, attrs):
    table = {a: f for a, f in _HTTP.items() if a != _STATUS}
    part, used = _renamed(attrs, table)
    if kind == SERVER and "path" not in part and \
            isinstance(attrs.get("url.full"), str):
        # The request's path, which the wsgi kind describes it by (a
        # client span keeps the name and URL its instrumentation gave).
        path = urllib.parse.urlsplit(attrs["url.full"]).path
        if path:
            part["path"] = path  # already redacted with the URL
    code = attrs.get(_STATUS)
    if isinstance(code, str) and code[:3].isdigit():
        code = int(code[:3])
    if kind == SERVER:
        builtin, stop = kinds.WSGI, ({"status": code} if code else None)
    else:
        builtin, stop = kinds.HTTP, ({"status_code": code} if code else None)
    if code:
        used.add(_STATUS)
    return builtin, part, stop, used


def point_name(name, builtin):
    """The span's own name, unless its first word would make stacktrail
    read it as another kind ("HTTP GET /" is not an ``http`` client
    call): then the builtin kind's name, or the name behind ``otel``."""
    name = str(name or "") or "otel"
    implied = kinds.named(name)
    if implied is None:
        return name
    if builtin is not None:
        return name if implied[0] is builtin else builtin.name
    return "otel " + name
