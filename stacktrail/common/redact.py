"""What counts as a secret in text stacktrail records or logs, and its mask.

One list and one set of maskers, used everywhere a value could leak:

* URL query strings and paths of traced requests (``web.request_info``);
* connection strings and error lines before they are logged or printed
  (``common.logtext.mask_passwords``, hence every driver, the notifier and
  the CLI);
* database error text recorded by failing spans (``profiler.error_info``
  and the SQLAlchemy integration).

A query or path parameter (``name=value``, ``;name=value``), a
``key=value`` pair in a connection string or DSN, or a ``'name': 'value'``
pair in a repr is hidden when its name

* contains one of ``CONTAINS`` (case-insensitive), or
* has one of ``WORDS`` as a whole word (a name's words are split at
  ``_ - .`` and at lower-to-upper case changes: ``temp_url_sig`` is
  ``temp url sig``, ``X-Amz-Signature`` contains ``signature``), or
* contains, as whole words, a name added by ``[profiler] redact_names`` or
  ``add_names()`` (``temp_url_expires`` hides exactly that parameter).

A path segment is hidden when the segment before it is one of
``PATH_SEGMENTS`` or an added name (``/v3/OS-OAUTH1/authorize/<token>``).
Values shaped like a JSON Web Token or a Keystone Fernet token are hidden
wherever they appear, whatever their name.  URL passwords
(``scheme://user:password@host``) are hidden in every form: with ``/``,
``@``, ``%2F`` in them, and inside URL-encoded URLs given as a parameter
(``messaging://?transport_url=rabbit%3A%2F%2Fuser%3Apass%40host``).

Database errors (DB-API drivers, SQLAlchemy, oslo.db, pymongo, and errors
raised ``from`` them): ``[parameters: ...]`` (SQLAlchemy's rendering of the
bound values) becomes ``[parameters: ***]``, and the values a server echoes
(``DETAIL: Key (email)=(...)``, ``Failing row contains (...)``,
``Duplicate entry '...'``, ``invalid input syntax ...: "..."``, MongoDB's
``dup key: {...}``, any other quoted literal) are masked; quoted
identifiers (``constraint "users_email_key"``, ``for key 'k'``) are kept.
With ``[profiler] show_sql_parameters`` they are recorded whole.
"""

import functools
import re
import sys
import urllib.parse

MASK = "***"

CONTAINS = ("token", "password", "passwd", "passphrase", "secret",
            "signature", "credential", "auth", "key", "session", "jwt",
            "cookie", "csrf", "xsrf", "nonce", "private", "saml")
WORDS = ("sig", "pwd", "pw", "pass", "otp", "totp", "hotp", "mfa", "code",
         "pin", "sid", "salt", "hmac", "assertion", "ticket", "bearer",
         "dsn")
PATH_SEGMENTS = ("token", "tokens", "authorize", "jwt", "otp", "session",
                 "sessions", "signature", "sig")

_added = set()          # add_names()
# (settings seen, runtime activation seen, names added: all of them,
#  path segment names): recomputed when either changes (start, SIGHUP).
_state = [None, None, frozenset(), frozenset()]


def add_names(*names):
    """More parameter names to hide (an adapter's, a deployment's)."""
    _added.update(_normal(n) for n in names if isinstance(n, str) and n)
    _state[0] = None


def extra_names():
    """Names added by ``add_names`` and ``[profiler] redact_names``."""
    return _current()[0]


def _current():
    """(names added, path segment names), read again when the live
    settings or the runtime's activation change: ``[profiler]
    redact_names`` of the configuration the runtime last activated."""
    settings = sys.modules.get("stacktrail.common.settings")
    runtime = sys.modules.get("stacktrail.runtime")
    live = getattr(settings, "current", None)
    latest = getattr(runtime, "_latest", None)
    if _state[0] is not live or _state[1] is not latest:
        names = set(_added)
        try:
            values = latest.conf.profiler.redact_names if latest else ()
            names.update(_normal(n) for n in values or () if n)
        except Exception:  # an option not registered: nothing added
            pass
        names = frozenset(n for n in names if n)
        _state[:] = [live, latest, names,
                     frozenset(PATH_SEGMENTS) | names]
        _paths.clear()
        _queries.clear()
    return _state[2], _state[3]


# --- names -------------------------------------------------------------------

_CASE = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def _words(name):
    return tuple(w for w in _NON_WORD.split(
        _CASE.sub(r"\1_\2", name).lower()) if w)


def _normal(name):
    return " ".join(_words(name))


def is_secret(name):
    """True when a parameter called ``name`` holds a secret."""
    if not isinstance(name, str) or not name:
        return False
    return _secret(name, _current()[0])


@functools.lru_cache(maxsize=2048)
def _secret(name, extra):
    lowered = name.lower()
    if any(part in lowered for part in CONTAINS):
        return True
    words = _words(name)
    if any(word in WORDS for word in words):
        return True
    if extra:
        joined = " %s " % " ".join(words)
        return any(" %s " % added in joined for added in extra)
    return False


# --- values shaped like tokens -----------------------------------------------

_TOKEN_SHAPE = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JWT
    r"|gAAAAA[A-Za-z0-9_=-]{40,}")                               # Fernet


def looks_secret(value):
    """True for a value shaped like a bearer token (JWT, Fernet)."""
    return bool(value) and _TOKEN_SHAPE.search(value) is not None


# --- query strings and paths -------------------------------------------------

_SEPARATORS = re.compile(r"([&;])")
_SHORTEST_TOKEN = 24


def _unquote(text):
    if "%" not in text and "+" not in text:
        return text
    try:
        return urllib.parse.unquote_plus(text)
    except Exception:
        return text


def _pairs(text, extra):
    """``text``'s ``name=value`` pieces with the secret values masked,
    every other character as it was."""
    out = []
    for piece in _SEPARATORS.split(text):
        if piece in ("&", ";") or not piece:
            out.append(piece)
            continue
        name, equals, value = piece.partition("=")
        if not equals:
            out.append(MASK if len(name) >= _SHORTEST_TOKEN and
                       looks_secret(_unquote(name)) else piece)
        elif value and (_secret(_unquote(name), extra) or
                        _value_secret(value)):
            out.append(name + "=" + MASK)
        else:
            out.append(piece)
    return "".join(out)


def _value_secret(value):
    """A value that is a token, or a URL that carries a secret itself."""
    if len(value) >= _SHORTEST_TOKEN or "%" in value or "=" in value:
        value = _unquote(value)
        if looks_secret(value):
            return True
        if ("://" in value or "=" in value) and mask_text(value) != value:
            return True
    return False


# Requests repeat their paths and queries: what was redacted is kept, for
# the names in force (``_current`` empties these when they change).
_paths = {}
_queries = {}
_MEMO_MAX = 512


def _remember(memo, text, redacted):
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[text] = redacted
    return redacted


def query(text):
    """A URL query string with the values of secret parameters hidden;
    everything else is kept byte for byte."""
    if not text or not isinstance(text, str):
        return text
    extra = _current()[0]
    done = _queries.get(text)
    return done if done is not None else \
        _remember(_queries, text, _pairs(text, extra))


def path(text):
    """A URL path with secret path parameters and segments hidden."""
    if not text or not isinstance(text, str):
        return text
    extra, names = _current()
    done = _paths.get(text)
    return done if done is not None else \
        _remember(_paths, text, _path(text, extra, names))


def _path(text, extra, names):
    segments = text.split("/")
    hide_next = False
    for index, segment in enumerate(segments):
        if not segment:
            continue
        if hide_next:
            segments[index] = MASK
            hide_next = False
            continue
        if "=" in segment or ";" in segment:
            segments[index] = _pairs(segment, extra)
            segment = segment.split(";", 1)[0]
        elif len(segment) >= _SHORTEST_TOKEN and \
                looks_secret(_unquote(segment)):
            segments[index] = MASK
            continue
        word = segment.lower()
        if not word.isalnum():
            word = " ".join(w for w in _NON_WORD.split(_unquote(word)) if w)
        hide_next = word in names
    return "/".join(segments)


# --- connection strings and log text -----------------------------------------

_ENCODED_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*%3[Aa]%2[Ff]%2[Ff]"
                          r"[^\s&'\"<>]*")
# A URL runs to a blank, a quote or the next URL (one given unencoded as a
# parameter of another: messaging://?transport_url=rabbit://u:p@h/).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://"
                  r"((?:(?![A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>])*)")
_PORT_PATH = re.compile(r"\d*(/|$)")
_KEY_VALUE = re.compile(
    r"(?P<pre>^|[\s?&;,(])(?P<name>[A-Za-z_][\w.\-\[\]]*)(?P<eq>\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,'\")]+)")
_REPR_PAIR = re.compile(
    r"(?P<q>['\"])(?P<name>[^'\"\s]{1,64})(?P=q)(?P<colon>\s*:\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,}]+)")


def _encoded(match):
    text = match.group(0)
    inner = _unquote(text)
    masked = mask_text(inner)
    if masked == inner:
        return text
    return urllib.parse.quote(masked, safe=":/@*,")


def _userinfo(match):
    """``scheme://user:password@host...`` with the password hidden."""
    rest = match.group(1)
    head = re.split(r"[?#]", rest, 1)[0]
    at = head.rfind("@")
    if at < 0:
        at = rest.rfind("@")    # a password with ? or # in it
    if at < 0:
        return match.group(0)
    auth = rest[:at]
    colon = auth.find(":")
    if colon < 0 or "/" in auth[:colon]:
        return match.group(0)   # a user without a password, or a path
    if "/" in auth and _PORT_PATH.match(auth, colon + 1):
        return match.group(0)   # host:port/path@... is not a userinfo
    start = match.start(1) - match.start(0)
    return match.group(0)[:start] + auth[:colon + 1] + MASK + rest[at:]


def _key_value(match):
    if not is_secret(match.group("name")):
        return match.group(0)
    return "%s%s%s%s" % (match.group("pre"), match.group("name"),
                         match.group("eq"), MASK)


def _repr_pair(match):
    if not is_secret(match.group("name")):
        return match.group(0)
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return "%s%s%s%s%s%s%s" % (match.group("q"), match.group("name"),
                               match.group("q"), match.group("colon"),
                               quote, MASK, quote)


def mask_text(text):
    """``text`` with every secret a connection string, URL, DSN or repr
    can carry hidden: URL passwords (also inside URL-encoded URLs given as
    a parameter), secret ``name=value`` parameters, ``'name': 'value'``
    pairs and token-shaped values."""
    text = str(text)
    if "%3" in text or "%3a" in text.lower():
        text = _ENCODED_URL.sub(_encoded, text)
    if "://" in text:
        text = _URL.sub(_userinfo, text)
    if "=" in text:
        text = _KEY_VALUE.sub(_key_value, text)
    if ":" in text and ("'" in text or '"' in text):
        text = _REPR_PAIR.sub(_repr_pair, text)
    if "eyJ" in text or "gAAAAA" in text:
        text = _TOKEN_SHAPE.sub(MASK, text)
    return text


# --- database errors ---------------------------------------------------------

_DB_MODULES = ("sqlalchemy", "oslo_db", "psycopg2", "psycopg", "pymysql",
               "MySQLdb", "mysql", "sqlite3", "_sqlite3", "asyncpg",
               "pg8000", "cx_Oracle", "oracledb", "pyodbc", "pymssql",
               "aiomysql", "aiosqlite", "pymongo")
_DB_CLASSES = ("DatabaseError", "DBAPIError", "StatementError", "DBError")
_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
# Values servers echo, each anchored on the text around it (greedy to the
# anchor, so a value with quotes or parentheses in it is hidden whole).
_ECHOED = tuple((re.compile(pattern, flags), replacement) for pattern, flags,
                replacement in (
    (r"(\)\s*=\s*\().*(\))", 0, r"\1%s\2" % MASK),       # Key (a)=(v)
    (r"(Failing row contains \().*(\))", re.I, r"\1%s\2" % MASK),
    (r"(Duplicate entry ').*('\s+for key)", re.I, r"\1%s\2" % MASK),
    (r"(\bvalue:?\s*').*?('\s+for\s+(?:column|function|type))", re.I,
     r"\1%s\2" % MASK),
    (r"(near\s+').*('\s+at line)", re.I, r"\1%s\2" % MASK),
    (r"(near\s+\").*?(\"(?::|\s*$))", re.I | re.M, r"\1%s\2" % MASK),
    (r"(:\s*\").*(\"\s*$)", re.M, r"\1%s\2" % MASK),        # ...: "v"
    (r"(dup key: \{).*(\})", 0, r"\1 %s \2" % MASK),          # MongoDB
))
_QUOTED = re.compile(r"'[^'\"\n]*'|\"[^\"'\n]*\"")
_WORD_BEFORE = re.compile(r"([A-Za-z_]+)\s*(:?)\s*$")
# A quoted string right after one of these words names a thing, not a value.
_IDENTIFIER_WORDS = frozenset((
    "relation", "table", "column", "constraint", "index", "key", "schema",
    "database", "type", "function", "sequence", "view", "trigger", "role",
    "user", "tablespace", "domain", "extension", "collation", "field",
    "savepoint", "procedure", "operator", "cursor", "statement", "into",
    "from", "update", "join", "exists"))


def is_database_error(exc):
    """True for a DB-API, SQLAlchemy, oslo.db or pymongo error, or one
    wrapping such an error (``orig``, ``inner_exception``, ``raise ...
    from``): their text may echo the values of a row."""
    seen = 0
    while exc is not None and seen < 6:
        for klass in type(exc).__mro__:
            module = klass.__module__ or ""
            if klass.__name__ in _DB_CLASSES or \
                    module.split(".", 1)[0] in _DB_MODULES:
                return True
        seen += 1
        exc = (getattr(exc, "orig", None) or
               getattr(exc, "inner_exception", None) or exc.__cause__)
        if not isinstance(exc, BaseException):
            return False
    return False


def _quoted(match):
    text = match.string
    before = _WORD_BEFORE.search(text, max(0, match.start() - 48),
                                 match.start())
    if before and not before.group(2) and \
            before.group(1).lower() in _IDENTIFIER_WORDS:
        return match.group(0)
    quote = match.group(0)[0]
    return quote + MASK + quote


def database_error(text):
    """Database error text with bound parameters and echoed values hidden
    (identifiers such as constraint and column names are kept)."""
    text = str(text)
    if "[parameters: " in text:
        text = _PARAMETERS.sub("[parameters: %s]" % MASK, text)
    for pattern, replacement in _ECHOED:
        text = pattern.sub(replacement, text)
    text = _QUOTED.sub(_quoted, text)
    return mask_text(text)


def sqlstate(exc):
    """The SQLSTATE (or the server's error code) a driver gives, or None."""
    for name in ("sqlstate", "pgcode"):
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            return value
    diag = getattr(exc, "diag", None)
    value = getattr(diag, "sqlstate", None)
    if isinstance(value, str) and value:
        return value
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and type(args[0]) is int:
        module = type(exc).__module__ or ""
        if module.split(".", 1)[0] in ("pymysql", "MySQLdb", "mysql"):
            return str(args[0])   # MySQL's error number
    return None


def error_message(exc, message):
    """The message recorded for ``exc``: database values and bound
    parameters hidden unless ``[profiler] show_sql_parameters``."""
    if "[parameters: " not in message and not is_database_error(exc):
        return message
    settings = sys.modules.get("stacktrail.common.settings")
    if getattr(getattr(settings, "current", None), "show_sql_parameters",
               False):
        return message
    return database_error(message)
