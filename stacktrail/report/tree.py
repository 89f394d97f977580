"""Build a trace report from trace-point messages.

The result has osprofiler's report shape, so tools written for osprofiler
keep working::

    {"info": {"name": "total", "started": 0, "finished": <ms>, ...},
     "children": [{"info": {...}, "trace_id", "parent_id", "children"}],
     "stats": {<name>: {"count", "duration"}}}

and differs where osprofiler loses information: point names are kept whole
("db-query" stays "db-query"), every time is also given in microseconds
(``*_us`` keys), each span says in one line what it did (``detail``, from
``stacktrail.report.describe``), incomplete or malformed traces are
repaired and flagged instead of silently zeroed, and
``stacktrail.report.analysis`` adds the critical path and the spans with
the most self time.

Messages may come in any order, duplicated, with a start or a stop
missing, or with parents that were never stored.  Every step is linear or
a sort, and nothing recurses, so deep traces cannot hit the recursion limit.
"""

import calendar
import collections
import contextlib
import datetime
import gc
import operator
import time

from stacktrail.report import analysis
from stacktrail.report import describe

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S"
_SECOND_CACHE = {}  # "YYYY-mm-ddTHH:MM:SS" -> epoch seconds
_SECOND_US = {}  # the same, as microseconds, for the per-point fast path
_NO_INFO = {}


class _Span:
    """One span while the tree is being assembled (the output is dicts)."""

    __slots__ = ("trace_id", "parent_id", "name", "start", "stop",
                 "start_msg", "stop_msg", "children", "orphan", "node",
                 "parent", "depth")

    def __init__(self, trace_id, parent_id, name):
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.name = name
        self.start = self.stop = None      # microseconds since the epoch
        self.start_msg = self.stop_msg = None
        self.children = []
        self.orphan = False
        self.node = self.parent = None
        self.depth = 0


def parse_time_us(value):
    """Microseconds since the epoch of a message timestamp.

    osprofiler writes naive UTC text; stores may hand back a datetime or a
    number of seconds.  Points of one trace share a handful of seconds, so
    the slow strptime runs once per distinct second.
    """
    if isinstance(value, str):
        head, _, frac = value.rstrip("Z").partition(".")
        seconds = _SECOND_CACHE.get(head)
        if seconds is None:
            seconds = calendar.timegm(
                time.strptime(head.replace(" ", "T"), _TS_FORMAT))
            if len(_SECOND_CACHE) > 100_000:
                _SECOND_CACHE.clear()
                _SECOND_US.clear()
            _SECOND_CACHE[head] = seconds
        micros = int(frac[:6].ljust(6, "0")) if frac else 0
        return seconds * 1_000_000 + micros
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc)
        seconds = calendar.timegm(value.timetuple())
        return seconds * 1_000_000 + value.microsecond
    if isinstance(value, (int, float)):
        return int(value * 1_000_000)
    raise ValueError("bad timestamp %r" % (value,))


def format_time_us(us):
    """osprofiler's timestamp text for microseconds since the epoch."""
    seconds, micros = divmod(us, 1_000_000)
    return "%s.%06d" % (time.strftime(_TS_FORMAT, time.gmtime(seconds)),
                        micros)


_POINT_NAMES = {}  # full point name -> span name


def _point_name(full):
    """"db-query" from "db-query-start" or "db-query-stop": the whole name,
    where osprofiler keeps only what precedes the first "-"."""
    name = _POINT_NAMES.get(full)
    if name is None:
        name = full
        for suffix in ("-start", "-stop"):
            if full.endswith(suffix):
                name = full[:-len(suffix)]
        if len(_POINT_NAMES) > 10_000:
            _POINT_NAMES.clear()
        _POINT_NAMES[full] = name
    return name


def _collect(messages):
    """Spans by trace_id, the base_id, and the count of unusable messages.

    This loop runs once per point, so the common case (osprofiler's
    fixed-width timestamp text, whose second is already in the cache) is
    written inline; anything else goes through ``_parse_slowly``.
    """
    spans = {}
    base_ids = collections.Counter()
    ignored = 0
    cache = _SECOND_US
    for msg in messages:
        try:
            stamp = msg["timestamp"]
            if len(stamp) != 26:
                raise ValueError
            ts = cache[stamp[:19]] + int(stamp[20:])
            name = msg["name"]
            # osprofiler's rule: a name ending in "stop" is a stop,
            # anything else a start.
            is_stop = name.endswith("stop")
            trace_id = msg["trace_id"]
            span = spans.get(trace_id)
        except Exception:
            parsed = _parse_slowly(msg)
            if parsed is None:
                ignored += 1
                continue
            name, trace_id, ts, is_stop = parsed
            span = spans.get(trace_id)
        if span is None:
            span = spans[trace_id] = _Span(trace_id, msg.get("parent_id"),
                                           _point_name(name))
            base_ids[msg.get("base_id")] += 1
        if is_stop:
            # A duplicated stop keeps the latest, a duplicated start the
            # earliest: the span covers everything that was recorded.
            if span.stop is None or ts > span.stop:
                span.stop, span.stop_msg = ts, msg
        elif span.start is None or ts < span.start:
            span.start, span.start_msg = ts, msg
            span.parent_id = msg.get("parent_id", span.parent_id)
    base_id = base_ids.most_common(1)[0][0] if base_ids else None
    return spans, base_id, ignored


def _parse_slowly(msg):
    """(name, trace_id, time_us, is_stop) of any message, or None if it is
    unusable; caches the second of fixed-width text for the fast path."""
    try:
        name = msg["name"]
        trace_id = msg["trace_id"]
        stamp = msg["timestamp"]
        ts = parse_time_us(stamp)
        hash(trace_id)
        is_stop = name.endswith("stop")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if (isinstance(stamp, str) and len(stamp) == 26 and stamp[19] == "."
            and stamp[20:].isdigit()):
        _SECOND_US[stamp[:19]] = ts - int(stamp[20:])
    return name, trace_id, ts, is_stop


def _link(spans, base_id):
    """Attach spans to their parents; return the top-level spans and every
    span in pre-order.  Unknown parents and cycles go to the top level."""
    roots = []
    for span in spans.values():
        parent = spans.get(span.parent_id)
        if parent is None or parent is span:
            span.orphan = span.parent_id not in (base_id, None)
            roots.append(span)
        else:
            parent.children.append(span)
            span.parent = parent
    order = _preorder(roots)
    if len(order) < len(spans):
        # Some parent chain loops: cut each loop where it is found.
        seen = set(map(id, order))
        for span in spans.values():
            if id(span) not in seen:
                parent = spans[span.parent_id]
                parent.children = [c for c in parent.children
                                   if c is not span]
                span.orphan = True
                span.parent = None
                roots.append(span)
                found = _preorder([span])
                order.extend(found)
                seen.update(map(id, found))
    return roots, order


def _preorder(roots):
    """Spans parents-first, each with its depth set."""
    order = []
    stack = list(reversed(roots))
    for root in roots:
        root.depth = 0
    while stack:
        span = stack.pop()
        order.append(span)
        children = span.children
        if children:
            depth = span.depth + 1
            for child in children:
                child.depth = depth
            stack.extend(reversed(children))
    return order


def _repair_times(order, trace_end):
    """Give every span both ends.

    A missing stop (still running, lost, or the process died) runs to the
    end of the trace, but not past the stop of its parent: a parent that
    returned shows where its child was abandoned.  A missing start begins
    with its earliest child, or is a point at its stop.  Parents come
    before children in ``order``.
    """
    for span in order:
        if span.stop is None:
            end = trace_end
            parent = span.parent
            if parent is not None and parent.stop_msg is not None:
                end = parent.stop
            span.stop = max(end, span.start)
    for span in reversed(order):
        if span.start is None:
            first = min((c.start for c in span.children), default=span.stop)
            span.start = min(first, span.stop)


_STATUS_KEYS = ("status", "status_code", "http.status_code")
_STATUS_HOLDERS = frozenset(_STATUS_KEYS + ("response", "request"))
# A stop info with none of these keys records no error.
_STOP_ERROR_KEYS = _STATUS_HOLDERS | {"etype", "message"}


def _status_code(info):
    if _STATUS_HOLDERS.isdisjoint(info):  # the common case, kept cheap
        return None
    for holder in (info, info.get("response"), info.get("request")):
        if not isinstance(holder, dict):
            continue
        for key in _STATUS_KEYS:
            value = holder.get(key)
            if value is None:
                continue
            text = str(value).strip().split(" ", 1)[0]
            if text.isdigit():
                return int(text)
    return None


def _error_of(start, stop):
    """(exception type or "None", error text or None) from the start and
    stop infos: an exception recorded at stop, or an HTTP status >= 500."""
    etype = stop.get("etype")
    if etype or stop.get("message"):
        text = "%s: %s" % (etype or "Error", stop.get("message", ""))
        return str(etype or "None"), text.rstrip(": ")
    for info in (stop, start):
        status = _status_code(info)
        if status is not None and status >= 500:
            return "None", "HTTP status %d" % status
    return "None", None


_detail = describe.from_infos


def _node(span, t0):
    """The osprofiler-shaped node of a span, plus our keys.

    Runs once per span, hence the inlined lookups.
    """
    start_msg, stop_msg = span.start_msg, span.stop_msg
    first = start_msg if start_msg is not None else stop_msg
    start = first.get("info") if start_msg is not None else None
    stop = stop_msg.get("info") if stop_msg is not None else None
    if start.__class__ is not dict:
        start = _NO_INFO
    if stop.__class__ is not dict:
        stop = _NO_INFO
    if (not _STOP_ERROR_KEYS.isdisjoint(stop)
            or not _STATUS_HOLDERS.isdisjoint(start)):
        exception, error = _error_of(start, stop)
    else:
        exception, error = "None", None
    started_us = span.start - t0
    finished_us = span.stop - t0
    started, finished = started_us // 1000, finished_us // 1000
    info = {
        "name": span.name,
        # What the span did, in one line (ours; osprofiler has no such key).
        "detail": _detail(start, stop),
        "project": first.get("project"),
        "service": first.get("service"),
        "host": start.get("host") or stop.get("host"),
        "started": started,
        "finished": finished,
        "exception": exception,
        "started_us": started_us,
        "finished_us": finished_us,
        "duration_us": finished_us - started_us,
        "self_us": finished_us - started_us,  # children are taken off later
        "error": error is not None,
        "critical": False,
    }
    if error is not None:
        info["error_message"] = error
    if span.orphan:
        info["orphan"] = True
    # osprofiler keeps each raw message under its full name.
    if start_msg is None:
        info["missing_start"] = True
    else:
        info["meta.raw_payload." + start_msg["name"]] = start_msg
    if stop_msg is None:
        info["open"] = True
    else:
        info["meta.raw_payload." + stop_msg["name"]] = stop_msg
    return {"info": info, "trace_id": span.trace_id,
            "parent_id": span.parent_id, "children": []}


_sort_key = operator.attrgetter("start")


class Report(dict):
    """A report ``build`` made: every node has its ``detail`` and the
    analysis is done, so renderers need not walk it to check (a dict in
    every other respect, written to JSON as one)."""

    __slots__ = ()


def _empty(ignored=0):
    info = {"name": "total", "started": 0, "finished": None,
            "last_trace_started": None, "finished_us": None,
            "base_id": None, "span_count": 0, "error_count": 0}
    if ignored:
        info["ignored_messages"] = ignored
    return {"info": info, "children": [], "stats": {},
            "critical_path": [], "top_self_time": []}


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off for the block.

    A report is a few hundred thousand small objects, none in a cycle,
    that all stay alive until it is written: letting the collector rescan
    them while they are made doubles the time it takes to build a report,
    and more than doubles the time to render one.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build(messages):
    """The report of one trace from its messages (any order, any damage)."""
    with gc_paused():
        return _build(messages)


def _build(messages):
    spans, base_id, ignored = _collect(messages)
    if not spans:
        return _empty(ignored)
    stamps = [s.start for s in spans.values() if s.start is not None]
    stamps += [s.stop for s in spans.values() if s.stop is not None]
    t0, trace_end = min(stamps), max(stamps)
    last_start = max((s.start for s in spans.values()
                      if s.start is not None), default=t0)

    roots, order = _link(spans, base_id)
    _repair_times(order, trace_end)

    stats = {}
    errors = opened = 0
    for span in order:
        span.node = node = _node(span, t0)
        info = node["info"]
        entry = stats.get(span.name)
        if entry is None:
            entry = stats[span.name] = {"count": 0, "duration": 0,
                                        "duration_us": 0}
        entry["count"] += 1
        # osprofiler's stats add up per-span differences of whole ms.
        entry["duration"] += info["finished"] - info["started"]
        entry["duration_us"] += info["duration_us"]
        errors += info["error"]
        opened += "open" in info
    scored = _link_nodes(order)
    roots.sort(key=_sort_key)

    total_us = trace_end - t0
    info = {
        "name": "total",
        "started": 0,
        "finished": total_us // 1000,
        "last_trace_started": (last_start - t0) // 1000,
        "started_us": 0,
        "finished_us": total_us,
        "duration_us": total_us,
        "started_at": format_time_us(t0),
        "base_id": base_id,
        "span_count": len(order),
        "error_count": errors,
        "open_count": opened,
        "services": sorted({str(s) for s in
                            (span.node["info"]["service"] for span in order)
                            if s is not None}),
    }
    if ignored:
        info["ignored_messages"] = ignored
    report = Report(info=info, children=[r.node for r in roots],
                    stats=stats)
    analysis.annotate(report, scored)
    for span in order:
        # Parent and children point at each other: left so, the spans
        # (and the messages they hold) would wait for the cyclic
        # collector, which the CLI pauses and which then scans them all
        # at exit.
        span.parent = None
    return report


def _link_nodes(order):
    """Fill each node's children (sorted by start) and take the time they
    cover off its self time; return (self_us, depth, node) of every span
    for the self-time ranking."""
    scored = []
    for span in order:
        node = span.node
        children = span.children
        if children:
            if len(children) > 1:
                children.sort(key=_sort_key)
            node["children"] = [c.node for c in children]
            start, stop = span.start, span.stop
            covered = analysis.covered_us(
                start, stop, [(c.start, c.stop) for c in children])
            node["info"]["self_us"] = max(0, stop - start - covered)
        scored.append((node["info"]["self_us"], span.depth, node))
    return scored
