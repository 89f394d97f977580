"""Driver base class and lookup by connection-string scheme.

Drivers are stevedore plugins in the ``stacktrail.drivers`` namespace, one
entry point per scheme, so a third party adds a store by packaging one.
Only the driver that is asked for is imported.

The write side receives batches from the background flusher
(``write_points``: raw points; formatting happens here, off the request
thread).  The read side is osprofiler's: ``get_report``, ``list_traces``,
``list_error_traces``.
"""

import collections
import itertools
import json
from json import encoder as _json_encoder
import operator
import os
import time
import urllib.parse

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import points

NAMESPACE = "stacktrail.drivers"
# Seconds one store call (connect, read or write) may take, when neither a
# keyword nor ``[profiler] store_timeout`` says otherwise.
DEFAULT_STORE_TIMEOUT = 5.0


class DriverError(ValueError):
    """A connection string or store that cannot be used, said in one line."""


class Rejected(Exception):
    """A store refused some points of a batch for their content and stored
    all the others: retrying those points as they are cannot succeed.

    ``rejected``: list of (raw point, reason text).
    """

    def __init__(self, message, rejected):
        super().__init__(message)
        self.rejected = list(rejected)


class StoreTimeout(TimeoutError):
    """The store did not answer within ``store_timeout`` (one line)."""


class Watchdog:
    """Gives up on store calls that outlive their deadline.

    Some client libraries have no read timeout (libpq: a PostgreSQL server
    that stopped answering, SIGSTOP or a dead VM, is waited for without
    end).  A driver registers each store call with ``watch(seconds,
    on_expire)``; past the deadline one background thread runs
    ``on_expire`` (which shuts the call's sockets down, so the blocked read
    returns with an error) and ``done`` then says it fired.  One thread per
    process, started on first use and again after a fork.
    """

    def __init__(self):
        import threading
        self._threading = threading
        self._cond = threading.Condition()
        self._jobs = {}
        self._thread = None
        self._fired = set()

    def watch(self, seconds, on_expire):
        import time
        token = object()
        with self._cond:
            self._jobs[token] = (time.monotonic() + seconds, on_expire)
            if self._thread is None or not self._thread.is_alive():
                self._thread = self._threading.Thread(
                    target=self._run, name="stacktrail-store-watchdog",
                    daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def done(self, token):
        """Forget ``token``; True when its deadline had passed."""
        with self._cond:
            self._jobs.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self):
        import time
        with self._cond:
            while True:
                now = time.monotonic()
                due = [t for t, (when, _) in self._jobs.items()
                       if when <= now]
                for token in due:
                    _, on_expire = self._jobs.pop(token)
                    self._fired.add(token)
                    try:
                        on_expire()
                    except Exception:
                        pass
                later = [when for when, _ in self._jobs.values()]
                self._cond.wait(min(later) - now if later else 60.0)

    def after_fork(self):
        self.__init__()


WATCHDOG = Watchdog()


def shutdown_socket(fd):
    """Shut a connected socket down by descriptor (unblocks its reader)."""
    import socket
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class Interrupted(Exception):
    """A store failed (not for the content) while a batch was being split
    to isolate a poison point: the first ``handled`` points of the batch
    were dealt with (``outcome``), the rest were not."""

    def __init__(self, cause, handled, outcome):
        super().__init__(str(cause))
        self.cause = cause
        self.handled = handled
        self.outcome = outcome


# What ``deliver`` did with a batch: points stored, how many of those were
# cleaned first, and the points refused for good with the reason.
Outcome = collections.namedtuple("Outcome", "written sanitized rejected")

# Exceptions that say "this input cannot be stored" rather than "the store
# is unavailable" (a driver adds its client library's own, see
# ``Driver.content_error``).
CONTENT_ERRORS = (UnicodeError, ValueError, TypeError, KeyError, IndexError,
                  OverflowError, RecursionError)


# --- text every store accepts ----------------------------------------------

REPLACEMENT = "\ufffd"


def clean_text(value):
    """``value`` with NUL and lone surrogates replaced by U+FFFD.

    PostgreSQL refuses NUL in text, BSON in keys, and no UTF-8 encoder
    takes a lone surrogate (JSON "\\ud800" from a peer decodes to one).
    Anything but ``str`` is returned as it is.  The common case (ASCII
    without NUL) costs two C calls.
    """
    if value.__class__ is not str:
        return value
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value \
            else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Pairs of surrogates become the character they encode; lone ones
        # the replacement character.
        value = value.encode("utf-16-le", "surrogatepass").decode(
            "utf-16-le", "replace")
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


MAX_CLEAN_NODES = 100_000


def clean_value(value):
    """A copy of a JSON-like value (dicts, lists, tuples, text) with every
    string and key passed through ``clean_text``.

    Iterative, so any nesting depth works; a container met twice (a cycle
    or a shared branch) and anything past MAX_CLEAN_NODES containers is
    replaced by a short text instead of being copied.
    """
    containers = (dict, list, tuple)
    if not isinstance(value, containers):
        return clean_text(value)
    root = [None]
    stack = [(value, root, 0)]
    seen = set()
    while stack:
        source, parent, slot = stack.pop()
        if id(source) in seen or len(seen) >= MAX_CLEAN_NODES:
            parent[slot] = "<%s not copied>" % type(source).__name__
            continue
        seen.add(id(source))
        if isinstance(source, dict):
            out = {}
            for key, item in source.items():
                key = clean_text(key)
                if isinstance(item, containers):
                    out[key] = None
                    stack.append((item, out, key))
                else:
                    out[key] = clean_text(item)
        else:
            out = list(source)
            for index, item in enumerate(out):
                if isinstance(item, containers):
                    stack.append((item, out, index))
                else:
                    out[index] = clean_text(item)
        parent[slot] = out
    return root[0]


def clean_point(point):
    """The raw point with its name, text ids and info cleaned."""
    name, phase, base_id, parent_id, trace_id, ns, info = point
    return (clean_text(name), phase, clean_text(base_id),
            clean_text(parent_id), clean_text(trace_id), ns,
            clean_value(info) if info else info)


def _clean_batch(batch):
    """(cleaned batch, number of points that changed)."""
    cleaned = []
    changed = 0
    for point in batch:
        try:
            new = clean_point(point)
        except Exception:  # not a point at all: left for the store to refuse
            new = point
        if new != point:
            changed += 1
        cleaned.append(new)
    return cleaned, changed


def deliver(driver, batch):
    """Write ``batch`` through ``driver``; a poison point never takes the
    others with it.

    A failure the driver calls a content error (``driver.content_error``)
    is answered by writing a cleaned copy (NUL and lone surrogates
    replaced); if that fails too, the batch is split in halves until each
    refused point stands alone.  Returns an ``Outcome``.  Any other failure
    (the store is down, slow, full) is raised as it is when nothing was
    written, or as ``Interrupted`` after part of the batch was.
    """
    try:
        driver.write_points(batch)
        return Outcome(len(batch), 0, [])
    except Rejected as exc:
        return Outcome(len(batch) - len(exc.rejected), 0, exc.rejected)
    except Exception as exc:
        if not driver.content_error(exc):
            raise
        first = exc
    from stacktrail.common import logtext
    cleaned, changed = _clean_batch(batch)
    written = 0
    rejected = []
    stack = [(0, cleaned)]
    if not changed:
        # Cleaning changed nothing: the whole batch would fail the same way.
        if len(batch) == 1:
            return Outcome(0, 0, [(batch[0], logtext.one_line(first))])
        half = len(batch) // 2
        stack = [(half, cleaned[half:]), (0, cleaned[:half])]
    while stack:
        offset, part = stack.pop()
        try:
            driver.write_points(part)
            written += len(part)
        except Rejected as exc:
            written += len(part) - len(exc.rejected)
            rejected.extend(exc.rejected)
        except Exception as exc:
            if not driver.content_error(exc):
                raise Interrupted(exc, offset, Outcome(
                    written, min(changed, written), rejected)) from exc
            if len(part) == 1:
                rejected.append((batch[offset], logtext.one_line(exc)))
            else:
                half = len(part) // 2
                stack.append((offset + half, part[half:]))
                stack.append((offset, part[:half]))
    return Outcome(written, min(changed, written), rejected)


# Built once: json.dumps(..., separators=..., default=...) builds a new
# JSONEncoder on every call (about 1.5 us of a 4.4 us small message).
# ``encode`` makes its own circular-reference markers per call, so one
# encoder is safe to share between threads.
_to_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def to_json(message):
    """Compact JSON of a message; values JSON cannot hold become text.

    ``info`` comes from service code and may hold any object: a trace point
    is never lost because one value is not serialisable.
    """
    return _to_json(message)


_quote = _json_encoder.encode_basestring_ascii   # str -> '"..."' (C)
_MESSAGE = ('{"name":%s,"base_id":%s,"trace_id":%s,"parent_id":%s,'
            '"timestamp":"%s","info":%s%s')


def _quoted_id(value):
    """The JSON text of an id: ints as UUID text, peers' text escaped."""
    if type(value) is int:
        return '"%s"' % ids.to_uuid(value)
    if type(value) is str:
        return _quote(value)
    raise TypeError("id of type %s" % type(value).__name__)


def _message_json(point, host, project, service):
    """The slow path of ``points_json``: the same text via the dict."""
    message = points.to_message(point, host, project, service)
    message.setdefault("project", project)
    message.setdefault("service", service)
    try:
        return _to_json(message)
    except (TypeError, ValueError, RecursionError) as exc:
        # info JSON cannot hold (a cycle, non-text keys, nesting deeper than
        # this thread may go): keep the point, say why instead of the info.
        message["info"] = {"host": message["info"].get("host", host),
                           "unencodable_info": type(exc).__name__}
        return _to_json(message)


def points_json(batch, host, project, service):
    """``[to_json(m) for m in format_points(batch)]``, the same text, made
    without the message dicts (the agent's hot loop: about half the cost).

    A ``points.Batch`` (what the agent decodes from a version 2 frame) is
    formatted from its columns in a few C-level passes (``columns_json``).

    The fixed fields are formatted as text (ids and timestamps need no
    escaping; names go through the C string encoder) and only ``info`` is
    encoded as JSON.  A point this path cannot take (unusual types, an info
    that cannot be encoded) goes through ``to_message`` and ``to_json``.
    """
    if batch.__class__ is points.Batch:
        return columns_json(batch.columns, host, project, service)
    quoted_id = _quoted_id
    quote = _quote
    timestamp = clock.format_timestamp
    suffix = points.SUFFIX
    tail = ',"project":%s,"service":%s}' % (_to_json(project),
                                            _to_json(service))
    host_item = ',"host":%s}' % _to_json(host)
    host_only = '{"host":%s}' % _to_json(host)
    out = []
    append = out.append
    for point in batch:
        try:
            name, phase, base_id, parent_id, trace_id, ns, info = point
            if not info:
                info_text = host_only
            elif type(info) is dict:
                info_text = _to_json(info)
                if "host" not in info:
                    info_text = info_text[:-1] + host_item
            else:
                raise TypeError("info is not a dict")
            append(_MESSAGE % (
                quote(name + suffix[phase]),
                quoted_id(base_id), quoted_id(trace_id),
                quoted_id(parent_id),
                timestamp(ns), info_text, tail))
        except Exception:
            append(_message_json(point, host, project, service))
    return out


_NS_PER_US = 1000
_US_PER_S = 1_000_000
_SECONDS = {}           # second -> "%Y-%m-%dT%H:%M:%S." text (naive UTC)
_SECONDS_MAX = 100_000


def second_texts(seconds):
    """The timestamp text of each second of ``seconds`` (a list), up to
    and with its decimal point."""
    cache = _SECONDS
    missing = set(seconds).difference(cache)
    if missing:
        if len(cache) + len(missing) > _SECONDS_MAX:
            cache.clear()
            missing = set(seconds)
        strftime, gmtime = time.strftime, time.gmtime
        for second in missing:
            cache[second] = strftime("%Y-%m-%dT%H:%M:%S.", gmtime(second))
    return map(cache.__getitem__, seconds)


def info_texts(infos, host):
    """JSON text of each info (dict or None, plain JSON data) with
    ``host`` added when it has none, as the osprofiler message holds it."""
    from stacktrail.drivers import codec
    host_item = ',"host":%s}' % _to_json(host)
    host_only = '{"host":%s}' % _to_json(host)
    # "{}" when every key was one JSON cannot hold (left out)
    return [host_only if not info or text == "{}" else
            text if "host" in info else text[:-1] + host_item
            for info, text in zip(infos, codec.dumps_each(infos))]


def columns_json(columns, host, project, service):
    """The JSON message of each point of a batch given as columns (see
    ``points.Batch``): the same fields, order and values as
    ``points_json``; info text may be written by the compiled codec.

    Each message is joined from its pieces (``str.join`` is several times
    cheaper than a %-template of eight fields); the ids are UUID text or
    text already checked to need no escaping (``protocol``).
    """
    names, phases, bases, parents, traces, times, infos = columns
    repeat = itertools.repeat
    # '{"name":"<name>-start","base_id":"' and its -stop twin, per name
    heads = {name: tuple('{"name":%s,"base_id":"' % _quote(name + suffix)
                         for suffix in points.SUFFIX)
             for name in set(names)}
    micros = list(map(operator.floordiv, times, repeat(_NS_PER_US)))
    seconds = list(map(operator.floordiv, micros, repeat(_US_PER_S)))
    fractions = map(str.zfill, map(str, map(
        operator.mod, micros, repeat(_US_PER_S))), repeat(6))
    tail = ',"project":%s,"service":%s}' % (_to_json(project),
                                            _to_json(service))
    return list(map("".join, zip(
        map(operator.getitem, map(heads.__getitem__, names), phases),
        bases, repeat('","trace_id":"'), traces,
        repeat('","parent_id":"'), parents, repeat('","timestamp":"'),
        second_texts(seconds), fractions, repeat('","info":'),
        info_texts(infos, host), repeat(tail))))


def require(module, extra):
    """Import a store's client library, or say in one line how to get it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DriverError("the %s store needs %s: pip install "
                          "'stacktrail[%s]'"
                          % (extra, module, extra)) from None


def scheme_of(connection_string):
    if (not isinstance(connection_string, str)
            or "://" not in connection_string):
        raise DriverError("bad connection string %r: expected scheme://..."
                          % (connection_string,))
    return connection_string.split("://", 1)[0].lower()


# osprofiler stores we do not write to ourselves: the way there is OTLP
# to an OpenTelemetry Collector, which exports to all of them.
UNSERVED = ("elasticsearch", "loginsight", "jaeger")
UNSERVED_HINT = ("%s:// is not a stacktrail store: send traces over OTLP to "
                 "an OpenTelemetry Collector (connection_string = "
                 "otlp://COLLECTOR:4318), which exports them to "
                 "Elasticsearch/OpenSearch and Jaeger")


def get_driver(connection_string, *args, **kwargs):
    """Instantiate the driver registered for the connection string's scheme."""
    import importlib.metadata

    scheme = scheme_of(connection_string)
    if scheme in UNSERVED:
        raise DriverError(UNSERVED_HINT % scheme)
    found = importlib.metadata.entry_points(group=NAMESPACE, name=scheme)
    if not found:
        raise DriverError("unknown connection string scheme %r (known: %s)"
                          % (scheme, ", ".join(known_schemes())))
    if len(found) > 1:
        raise DriverError("%d packages register the %r store: %s" % (
            len(found), scheme, ", ".join(ep.value for ep in found)))
    # What stevedore's DriverManager would load, without scanning the
    # installed packages a second time (a command's start-up).
    return next(iter(found)).load()(connection_string, *args, **kwargs)


def known_schemes():
    import importlib.metadata
    return sorted({ep.name for ep in
                   importlib.metadata.entry_points(group=NAMESPACE)})


# --- trace summaries: one line of ``stacktrail trace list`` ---------------

def summary(base_id, name, first_us, last_us, services, spans, error):
    """The summary of one trace, the same shape from every store:
    ``name`` of its earliest point (the root span, ``-start`` cut off),
    ``timestamp`` when it began, ``duration_ms`` from its first to its last
    point, the ``services`` it touched, how many ``spans``, ``error``."""
    name = name or ""
    for suffix in points.SUFFIX:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return {"base_id": base_id, "name": name,
            "timestamp": clock.format_timestamp(first_us * 1000),
            "duration_ms": (last_us - first_us) / 1000.0,
            "services": sorted(s for s in services if s), "spans": spans,
            "error": bool(error)}


def timestamp_us(text):
    """Microseconds since the epoch of a message's timestamp text."""
    return clock.parse_timestamp(text) // 1000


def is_error_message(message):
    info = message.get("info")
    return isinstance(info, dict) and info.get("etype") is not None


def in_window(us, since_us=None, until_us=None):
    """``us`` in [since_us, until_us); None is open-ended."""
    return ((since_us is None or us >= since_us)
            and (until_us is None or us < until_us))


def summarize_messages(base_id, messages):
    """The ``summary`` of one trace from its messages (None when none has
    a readable timestamp)."""
    # osprofiler's timestamp text sorts as time does: only the first and
    # the last are parsed.
    stamped = [m for m in messages if isinstance(m.get("timestamp"), str)]
    if not stamped:
        return None
    first = min(stamped, key=operator.itemgetter("timestamp"))
    last = max(stamped, key=operator.itemgetter("timestamp"))
    try:
        first_us = timestamp_us(first["timestamp"])
        last_us = timestamp_us(last["timestamp"])
    except ValueError:
        return None
    return summary(
        base_id, first.get("name"), first_us, last_us,
        {m.get("service") for m in stamped},
        len({m.get("trace_id") for m in stamped}),
        any(is_error_message(m) for m in stamped))


def summarize_all(messages, since_us=None, until_us=None):
    """Summaries of every trace in a stream of messages (a store read in
    one pass), those that began in the window only."""
    traces = collections.defaultdict(list)
    for message in messages:
        traces[message.get("base_id")].append(message)
    found = (summarize_messages(b, m) for b, m in traces.items())
    return [s for s in found if s is not None and in_window(
        timestamp_us(s["timestamp"]), since_us, until_us)]


MAX_SKIPPED = 20


class Driver:
    """A trace store or exporter.

    ``project``, ``service`` and ``host`` describe the process writing; the
    flusher calls ``write_points`` with batches, and subclasses override
    ``write_messages`` to store a batch in one round trip.
    """

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, **kwargs):
        self.connection_str = connection_str
        # Labels go into every row of a store: one NUL in a host name must
        # not make every point of that process poison.
        self.project = clean_text(project)
        self.service = clean_text(service)
        self.host = clean_text(host or points.HOST)
        self.conf = conf
        self.options = kwargs
        self.url = urllib.parse.urlsplit(connection_str)
        # (record, why) of unreadable records reading skipped (``_skip``)
        self.skipped = []

    def _skip(self, record, why):
        """Name a record reading skipped: the first MAX_SKIPPED of them
        (the command's warning lists them)."""
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append((record, why))

    def option(self, name, default=None, group="profiler", keywords=()):
        """A driver option: keyword argument (``name`` or one of
        ``keywords``), else ``[group] name`` of ``conf`` (oslo.config object
        or osprofiler-style dict), else default.
        """
        for key in keywords + (name,):
            if self.options.get(key) is not None:
                return self.options[key]
        conf = self.conf
        if isinstance(conf, dict):
            value = (conf.get(group) or {}).get(name)
        else:
            try:
                value = getattr(getattr(conf, group), name)
            except Exception:  # no conf, group or option: use the default
                value = None
        return default if value is None else value

    @classmethod
    def get_name(cls):
        return cls.__module__.rsplit(".", 1)[-1]

    @property
    def store_timeout(self):
        """Seconds one call to the store (connect, read, write) may take:
        keyword ``store_timeout``, else ``[profiler] store_timeout``."""
        try:
            value = float(self.option("store_timeout",
                                      DEFAULT_STORE_TIMEOUT))
        except (TypeError, ValueError):
            value = DEFAULT_STORE_TIMEOUT
        return value if value > 0 else DEFAULT_STORE_TIMEOUT

    def content_error(self, exc):
        """True when ``exc`` says the batch's content was refused (retrying
        it unchanged would fail again), False when the store is down, slow
        or full.  Drivers add their client library's exceptions."""
        if isinstance(exc, (OSError, DriverError, Interrupted)):
            return False
        return isinstance(exc, CONTENT_ERRORS)

    def retry_safe(self, exc):
        """Points whose write failed with ``exc`` can be written again
        without a risk of storing them twice; ``exc.unsent`` then says
        which (all of the batch when absent)."""
        return False

    # write side

    def make_sink(self):
        """The sink the notifier installs: a bounded buffer and a flusher."""
        from stacktrail.common import buffer
        options = {}
        size = self.option("buffer_size")  # [profiler] buffer_size
        if size is not None:
            options["max_points"] = int(size)
        interval = self.option("status_interval")
        if interval is not None:
            options["status_interval"] = float(interval)
        status_dir = self.option("status_dir")
        if status_dir:
            options["status_dir"] = status_dir
        return buffer.BufferedSink(self, **options)

    def write_points(self, batch):
        """Format a batch of raw points and store it."""
        self.write_messages(self.format_points(batch))

    def format_points(self, batch):
        """osprofiler messages of a batch, ``project``/``service`` always set.

        osprofiler's readers index those keys unconditionally, so a store it
        must read carries them even when they are None.
        """
        project, service, host = self.project, self.service, self.host
        messages = []
        for point in batch:
            message = points.to_message(point, host, project, service)
            message.setdefault("project", project)
            message.setdefault("service", service)
            messages.append(message)
        return messages

    def format_json(self, batch):
        """``[to_json(m) for m in self.format_points(batch)]``, faster."""
        return points_json(batch, self.host, self.project, self.service)

    def write_messages(self, messages):
        for message in messages:
            self.notify(message)

    def notify(self, info, **kwargs):
        """Store one formatted message (osprofiler's driver interface)."""
        raise NotImplementedError

    def close(self):
        """Release connections; called at interpreter exit and after use."""

    def after_fork(self):
        """In a forked child: drop connections inherited from the parent.

        Called by the buffer's at-fork hook before the child writes; a
        socket shared by two processes interleaves their requests.
        """

    # read side

    def get_messages(self, base_id):
        """Every message of one trace, in any order."""
        raise NotImplementedError

    def get_report(self, base_id):
        """osprofiler's report structure, with our additions."""
        from stacktrail.report import tree
        return tree.build(self.get_messages(base_id))

    def iter_messages(self, base_ids):
        """``(base_id, messages)`` for each of ``base_ids``, in that order:
        what ``stacktrail analyze`` streams over, a few hundred ids at a
        time.  This reads one trace per ``get_messages`` call; a store that
        can read many traces in one round trip (a Redis pipeline, one SQL
        query) overrides it."""
        for base_id in base_ids:
            yield base_id, self.get_messages(base_id)

    def list_traces(self, fields=None):
        raise NotImplementedError

    def list_error_traces(self):
        raise NotImplementedError

    def trace_summaries(self, since_us=None, until_us=None):
        """The ``summary`` of each trace that began in [since_us, until_us)
        (microseconds since the epoch, None: open-ended), in any order.

        This lists the traces, keeps those of the window and reads them
        (``iter_messages``).  A store that can add them up itself (SQL,
        MongoDB) or that reads everything in one pass anyway (file,
        messaging: ``summarize_all``) overrides it.
        """
        chosen = []
        for trace in self.list_traces():
            try:
                started = timestamp_us(trace["timestamp"])
            except (KeyError, TypeError, ValueError):
                continue
            if in_window(started, since_us, until_us):
                chosen.append(trace["base_id"])
        found = (summarize_messages(b, m)
                 for b, m in self.iter_messages(chosen))
        return [s for s in found if s is not None]


class WriteOnly:
    """The read side of a driver that keeps nothing to read: each read
    fails with one line saying where the traces are (``WHERE_TO_READ``).
    Put it before ``Driver`` in the bases."""

    WHERE_TO_READ = "this store cannot be read"

    def get_messages(self, base_id):
        raise DriverError(self.WHERE_TO_READ)

    def list_traces(self, fields=None):
        raise DriverError(self.WHERE_TO_READ)

    def list_error_traces(self):
        raise DriverError(self.WHERE_TO_READ)


os.register_at_fork(after_in_child=WATCHDOG.after_fork)
