"""Many traces at once: where the time of an operation goes, and what
changed (``stacktrail analyze``).

Each trace of a time window is read from the store, built into a report
(``tree.build``: the same critical path as ``trace show``), reduced to a
few numbers and dropped:

* its end-to-end time (the request and the asynchronous work it started)
  and its response time;
* the time each (service, span kind) held it up: the sum of the
  ``contribution_us`` of its spans on the critical path.  Time a span
  spent queued before it started (a cast waiting for its server) is its
  service's ``queued`` kind; gaps between top-level spans are
  ``untraced``.  These add up to the end-to-end time exactly.

Those numbers go into fixed-size log histograms (2 % wide buckets), so
the memory used does not grow with the number of traces: the latency
percentiles (p50, p90, p99) come from the histogram, and for each kind
the time it held the traces up is summed per latency bucket, which gives
its share of the time of the traces *at* each percentile (the traces
between the 45th and 55th percentile of latency for p50, the 85th and
95th for p90, the slowest 1 % for p99) as well as over all of them.
Because a trace's contributions add up to its latency, the change of the
mean latency between a baseline window and the window is the sum of the
changes of each kind's mean contribution: ``changes`` ranks the kinds by
their part of that difference.

Reading is the only slow part (decoding each trace's JSON messages and
building its report), so it is spread over worker processes, each with
its own connection to the store, reading chunks of trace ids; their
partial statistics are merged.  A ``file://`` store is read in one pass
per chunk of traces instead of once per trace.

``compare`` puts the same breakdown of one trace beside another's
(``trace show ID --html --compare OTHER``).
"""

import bisect
import datetime
import fnmatch
import heapq
import math
import os
import re
import time

from stacktrail.report import analysis
from stacktrail.report import tree

PERCENTILES = (50, 90, 99)
# The traces "at" a percentile: ranks (in percent) of latency.
BANDS = {"p50": (45.0, 55.0), "p90": (85.0, 95.0), "p99": (99.0, 100.0)}
BAND_NAMES = ("p50", "p90", "p99")
STEPS_PER_DOUBLING = 32          # buckets 2.2 % wide
MAX_GROUPS = 2000
MAX_OPERATIONS = 200
SLOWEST = 10
OTHER = ("(other)", "(other)")
QUEUED = "queued"
UNTRACED = ("", "untraced")
CHUNK = 100                      # trace ids per task


# --- a histogram of positive values in microseconds -----------------------

def bucket(value):
    """The log bucket of a duration in microseconds (-1 for under 1 us)."""
    if value < 1:
        return -1
    return int(math.log2(value) * STEPS_PER_DOUBLING)


def bucket_low(index):
    return 0.0 if index < 0 else 2.0 ** (index / STEPS_PER_DOUBLING)


def bucket_high(index):
    return 1.0 if index < 0 else 2.0 ** ((index + 1) / STEPS_PER_DOUBLING)


class Histogram:
    """Counts and sums of values per log bucket; mergeable, bounded."""

    __slots__ = ("counts", "sums", "count", "total", "low", "high")

    def __init__(self):
        self.counts = {}
        self.sums = {}
        self.count = 0
        self.total = 0
        self.low = None
        self.high = None

    def add(self, value, index=None):
        if index is None:
            index = bucket(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.sums[index] = self.sums.get(index, 0) + value
        self.count += 1
        self.total += value
        if self.low is None or value < self.low:
            self.low = value
        if self.high is None or value > self.high:
            self.high = value
        return index

    def merge(self, other):
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
            self.sums[index] = self.sums.get(index, 0) + other.sums[index]
        self.count += other.count
        self.total += other.total
        for value in (other.low, other.high):
            if value is None:
                continue
            if self.low is None or value < self.low:
                self.low = value
            if self.high is None or value > self.high:
                self.high = value

    def percentile(self, p, zeros=0):
        """The value at percentile ``p`` (nearest rank, interpolated inside
        its bucket and kept within the values seen); ``zeros`` more values
        of 0 count too.  None when empty."""
        count = self.count + zeros
        if not count:
            return None
        rank = max(1, math.ceil(p / 100.0 * count))
        if rank <= zeros:
            return 0
        rank -= zeros
        seen = 0
        for index in sorted(self.counts):
            here = self.counts[index]
            if seen + here >= rank:
                low, high = bucket_low(index), bucket_high(index)
                value = low + (high - low) * (rank - seen - 0.5) / here
                return min(max(value, self.low), self.high)
            seen += here
        return self.high

    def mean(self):
        return self.total / self.count if self.count else None


def band_weights(hist, lo_pct, hi_pct):
    """{bucket: the fraction of its traces ranked between ``lo_pct`` and
    ``hi_pct`` percent}: the traces "at" a percentile (at least one)."""
    n = hist.count
    if not n:
        return {}
    lo, hi = lo_pct / 100.0 * n, hi_pct / 100.0 * n
    if hi - lo < 1:
        lo = max(0.0, hi - 1)
    weights = {}
    seen = 0
    for index in sorted(hist.counts):
        here = hist.counts[index]
        overlap = min(seen + here, hi) - max(seen, lo)
        if overlap > 0:
            weights[index] = overlap / here
        seen += here
        if seen >= hi:
            break
    return weights


# --- one trace ---------------------------------------------------------------

_STATUS = re.compile(r"\s+->\s+\S+$")
_IDS = re.compile(
    r"(?<=/)(?:[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}|\d+)(?=/|$|\?)")


def operation(info):
    """What a trace did, from its first top-level span: its point name
    and detail without the status and with ids in paths written {id}
    ("wsgi POST /v3/volumes/{id}/action")."""
    name = str(info.get("name") or "?")
    detail = info.get("detail") or ""
    if not isinstance(detail, str) or not detail:
        return name
    detail = _IDS.sub("{id}", _STATUS.sub("", detail))
    return "%s %s" % (name, detail)


class Summary:
    """The numbers ``stacktrail analyze`` keeps of one trace."""

    __slots__ = ("base_id", "started_us", "end_to_end_us", "response_us",
                 "operation", "services", "error", "held")

    def __init__(self, base_id, started_us, end_to_end_us, response_us,
                 operation, services, error, held):
        self.base_id = base_id
        self.started_us = started_us
        self.end_to_end_us = end_to_end_us
        self.response_us = response_us
        self.operation = operation
        self.services = services
        self.error = error
        self.held = held


def summarize(report, base_id=None, started_us=None):
    """The Summary of a built report: latency and the time each (service,
    kind) held the operation up, which add up to its end-to-end time."""
    info = report["info"]
    top = report.get("children") or []
    held = {}
    for entry in report.get("critical_path") or ():
        service = entry.get("service") or ""
        queued = entry.get("queued_us") or 0
        own = entry.get("contribution_us", 0) - queued
        key = (service, entry.get("name") or "?")
        held[key] = held.get(key, 0) + own
        if queued:
            key = (service, QUEUED)
            held[key] = held.get(key, 0) + queued
    if info.get("untraced_us"):
        held[UNTRACED] = held.get(UNTRACED, 0) + info["untraced_us"]
    first = min(top, key=lambda n: n["info"]["started_us"]) if top else None
    return Summary(
        base_id or info.get("base_id"), started_us,
        info.get("end_to_end_us", info.get("finished_us") or 0),
        info.get("response_us", info.get("finished_us") or 0),
        operation(first["info"]) if first is not None else "?",
        frozenset(info.get("services") or ()),
        bool(info.get("error_count")), held)


def compare(report, other):
    """One trace against another (``trace show ID --compare OTHER``):
    the end-to-end time of each and, per service and per (service, kind),
    the time it held each trace up (the breakdown ``analyze --baseline``
    ranks over many traces) and the self time of its spans, with the
    differences ("this trace" minus "other"), what got slower most first.
    The held-up differences add up to the end-to-end difference."""
    now, then = summarize(report), summarize(other)
    held = (now.held, then.held)
    own = (_self_by_kind(report), _self_by_kind(other))
    return {"trace": _side(report, now), "other": _side(other, then),
            "end_to_end_change_us": now.end_to_end_us - then.end_to_end_us,
            "services": _compared(held, own, ("service",)),
            "kinds": _compared(held, own, ("service", "kind"))}


def _compared(held, own, fields):
    """Rows of the times of ``compare`` added up by ``fields``."""
    sums = {}
    for name, pair in (("held_us", held), ("self_us", own)):
        for side, times in zip(("", "other_"), pair):
            for key, us in times.items():
                row = sums.setdefault(key[:len(fields)], dict.fromkeys(
                    ("held_us", "other_held_us", "self_us",
                     "other_self_us"), 0))
                row[side + name] += us
    rows = []
    for group, row in sums.items():
        row.update(zip(fields, group))
        row["held_change_us"] = row["held_us"] - row["other_held_us"]
        row["self_change_us"] = row["self_us"] - row["other_self_us"]
        rows.append(row)
    rows.sort(key=lambda r: (-r["held_change_us"], -r["self_change_us"])
              + tuple(r[f] for f in fields))
    return rows


def _side(report, summary):
    info = report["info"]
    return {"base_id": summary.base_id, "started_at": info.get("started_at"),
            "end_to_end_us": summary.end_to_end_us,
            "response_us": summary.response_us,
            "span_count": info.get("span_count"),
            "operation": summary.operation}


def _self_by_kind(report):
    """{(service, kind): the self time of its spans} (time not in a traced
    child, so a slower call shows at its own kind, not at its callers')."""
    out = {}
    for node, _ in analysis.walk(report):
        info = node["info"]
        own = info.get("self_us")
        if own is None:
            own = analysis.self_time_us(node)
        key = (info.get("service") or "", info.get("name") or "?")
        out[key] = out.get(key, 0) + own
    return out


class Filter:
    """Which traces count: root operation (a glob when it has ``*?[``,
    else a substring), a service the trace touched, errors or not."""

    def __init__(self, root=None, service=None, error=None):
        self.root = root
        self.service = service
        self.error = error

    def matches(self, summary):
        if self.error is not None and summary.error != self.error:
            return False
        if self.service is not None and self.service not in summary.services:
            return False
        if self.root:
            if any(c in self.root for c in "*?["):
                return fnmatch.fnmatchcase(summary.operation, self.root)
            return self.root in summary.operation
        return True

    def describe(self):
        parts = []
        if self.root:
            parts.append("root %s %r" % (
                "matches" if any(c in self.root for c in "*?[")
                else "contains", self.root))
        if self.service:
            parts.append("service %s" % self.service)
        if self.error is not None:
            parts.append("with errors" if self.error else "without errors")
        return ", ".join(parts) or "all traces"

    def as_dict(self):
        return {"root": self.root, "service": self.service,
                "error": self.error}


# --- many traces -------------------------------------------------------------

class Group:
    """The time one (service, kind) held traces up."""

    __slots__ = ("per_trace", "by_latency")

    def __init__(self):
        self.per_trace = Histogram()     # its time in each trace it is in
        self.by_latency = {}             # latency bucket -> its time there

    def merge(self, other):
        self.per_trace.merge(other.per_trace)
        for index, value in other.by_latency.items():
            self.by_latency[index] = self.by_latency.get(index, 0) + value


class Stats:
    """What many traces add up to, in bounded memory; mergeable."""

    def __init__(self):
        self.end_to_end = Histogram()
        self.response = Histogram()
        self.groups = {}
        self.operations = {}
        self.errors = 0
        self.slowest = []            # heap of (end_to_end_us, base_id)
        self.first_us = None
        self.last_us = None

    @property
    def count(self):
        return self.end_to_end.count

    def add(self, summary):
        index = self.end_to_end.add(summary.end_to_end_us)
        self.response.add(summary.response_us)
        groups = self.groups
        for key, value in summary.held.items():
            group = groups.get(key)
            if group is None:
                if len(groups) >= MAX_GROUPS:
                    key = OTHER
                    group = groups.get(key)
                if group is None:
                    group = groups[key] = Group()
            group.per_trace.add(value)
            group.by_latency[index] = group.by_latency.get(index, 0) + value
        self._operation(summary.operation, 1)
        self.errors += summary.error
        item = (summary.end_to_end_us, summary.base_id or "")
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, item)
        elif item > self.slowest[0]:
            heapq.heapreplace(self.slowest, item)
        if summary.started_us is not None:
            self._span(summary.started_us, summary.started_us)

    def _operation(self, name, count):
        ops = self.operations
        if name not in ops and len(ops) >= MAX_OPERATIONS:
            name = "(other)"
        ops[name] = ops.get(name, 0) + count

    def _span(self, first, last):
        if first is not None and (self.first_us is None
                                  or first < self.first_us):
            self.first_us = first
        if last is not None and (self.last_us is None
                                 or last > self.last_us):
            self.last_us = last

    def merge(self, other):
        self.end_to_end.merge(other.end_to_end)
        self.response.merge(other.response)
        for key, group in other.groups.items():
            mine = self.groups.get(key)
            if mine is None and len(self.groups) >= MAX_GROUPS:
                key = OTHER
                mine = self.groups.get(key)
            if mine is None:
                self.groups[key] = group
            else:
                mine.merge(group)
        for name, count in other.operations.items():
            self._operation(name, count)
        self.errors += other.errors
        for item in other.slowest:
            if len(self.slowest) < SLOWEST:
                heapq.heappush(self.slowest, item)
            elif item > self.slowest[0]:
                heapq.heapreplace(self.slowest, item)
        self._span(other.first_us, other.last_us)
        return self


# --- windows -----------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)", re.I)
_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000,
          "h": 3_600_000_000, "d": 86_400_000_000, "w": 604_800_000_000}


class Window:
    """[start_us, end_us) in microseconds since the epoch (UTC); None is
    open-ended."""

    def __init__(self, start_us=None, end_us=None, text=None):
        self.start_us = start_us
        self.end_us = end_us
        self.text = text

    def __contains__(self, us):
        return ((self.start_us is None or us >= self.start_us)
                and (self.end_us is None or us < self.end_us))

    def shifted(self, us):
        return Window(None if self.start_us is None else self.start_us - us,
                      None if self.end_us is None else self.end_us - us)

    def describe(self):
        if self.start_us is None and self.end_us is None:
            return "the whole store"
        return "%s .. %s UTC" % (
            "(start)" if self.start_us is None else format_us(self.start_us),
            "(now)" if self.end_us is None else format_us(self.end_us))

    def as_dict(self):
        return {"start": None if self.start_us is None
                else format_us(self.start_us),
                "end": None if self.end_us is None else format_us(self.end_us),
                "start_us": self.start_us, "end_us": self.end_us}


def format_us(us):
    """"2024-05-01 10:00:00" (".123456" when not a whole second)."""
    text = tree.format_time_us(int(us)).replace("T", " ")
    return text[:-7] if text.endswith(".000000") else text


def parse_duration(text):
    """Microseconds of "90s", "15m", "1h30m", "2d", "1w", "250ms"; None
    when ``text`` is not a duration."""
    text = text.strip()
    if not text:
        return None
    total, at = 0, 0
    for found in _DURATION.finditer(text):
        if found.start() != at and text[at:found.start()].strip():
            return None
        total += float(found.group(1)) * _UNITS[found.group(2).lower()]
        at = found.end()
    if at == 0 or text[at:].strip():
        return None
    return int(total)


def parse_time(text, now_us):
    """Microseconds since the epoch of "now", an ISO 8601 date or time
    (naive means UTC), or a number of seconds since the epoch."""
    text = text.strip()
    if text.lower() == "now":
        return now_us
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not a time: %r (use ISO 8601, e.g. "
                         "2024-05-01T10:00, or 'now')" % text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def parse_window(text, now_us=None, relative_to=None):
    """A Window from "START/END", "START/DURATION", "DURATION/END" or
    "DURATION" (the last DURATION up to now); for a baseline
    (``relative_to`` the window) also "-DURATION": that window shifted
    DURATION earlier ("-1d": the same hours yesterday)."""
    if now_us is None:
        now_us = int(time.time() * 1_000_000)
    text = (text or "").strip()
    if not text:
        raise ValueError("empty time window")
    if relative_to is not None and text.startswith("-"):
        shift = parse_duration(text[1:])
        if shift is None:
            raise ValueError("not a duration: %r" % text[1:])
        if relative_to.start_us is None and relative_to.end_us is None:
            raise ValueError("a shifted baseline (%s) needs --window" % text)
        window = relative_to.shifted(shift)
        window.text = text
        return window
    if "/" not in text:
        length = parse_duration(text)
        if length is None:
            raise ValueError("not a window: %r (e.g. 1h, 2024-05-01T10:00/1h,"
                             " 2024-05-01T10:00/2024-05-01T11:00)" % text)
        return Window(now_us - length, now_us, text)
    left, right = (part.strip() for part in text.split("/", 1))
    left_length, right_length = parse_duration(left), parse_duration(right)
    if left_length is not None and right_length is not None:
        raise ValueError("a window needs a start or an end: %r" % text)
    if left_length is not None:
        end = parse_time(right, now_us)
        return Window(end - left_length, end, text)
    start = parse_time(left, now_us)
    end = start + right_length if right_length is not None else (
        parse_time(right, now_us) if right else None)
    if end is not None and end <= start:
        raise ValueError("the window %r ends before it starts" % text)
    return Window(start, end, text)


def select(listing, window):
    """(started_us, base_id) of the listed traces that started in
    ``window``, oldest first."""
    chosen = []
    for trace in listing:
        try:
            started = tree.parse_time_us(trace["timestamp"])
            base_id = trace["base_id"]
        except (KeyError, TypeError, ValueError):
            continue
        if started in window:
            chosen.append((started, base_id))
    chosen.sort()
    return chosen


# --- reading the store -------------------------------------------------------

def read(driver, base_ids):
    """(base_id, messages) for each of ``base_ids``: the driver's
    ``iter_messages``, or one pass over a ``file://`` store's file."""
    path = _file_path(driver)
    if path is not None:
        return _file_messages(path, base_ids)
    iterate = getattr(driver, "iter_messages", None)
    if iterate is not None:
        return iterate(base_ids)
    return ((base_id, driver.get_messages(base_id)) for base_id in base_ids)


def _file_path(driver):
    """The file of a ``file://`` store whose driver reads one trace per
    pass over the whole file."""
    try:
        from stacktrail.drivers import base
        from stacktrail.drivers import file as file_driver
    except ImportError:   # pragma: no cover - both ship with stacktrail
        return None
    if not isinstance(driver, file_driver.FileDriver):
        return None
    if type(driver).iter_messages is not base.Driver.iter_messages:
        return None   # it reads many traces well by itself
    return getattr(driver, "path", None)


_BASE_ID = re.compile(rb'"base_id"\s*:\s*"([^"\\]*)"')


def _file_messages(path, base_ids):
    import json
    wanted = {}
    for base_id in base_ids:
        wanted[base_id.encode() if isinstance(base_id, str)
               else base_id] = []
    try:
        handle = open(path, "rb")
    except OSError:
        return ((b.decode(), []) for b in wanted)
    with handle:
        for line in handle:
            found = _BASE_ID.search(line)
            if found is None or found.group(1) not in wanted:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                wanted[found.group(1)].append(message)
    return ((b.decode(), messages) for b, messages in wanted.items())


def collect(driver, chosen, trace_filter, stats=None):
    """Read, build and summarize the traces ``chosen`` ((started_us,
    base_id) pairs) into ``stats``; returns (stats, read, matched)."""
    stats = Stats() if stats is None else stats
    started = dict((base_id, us) for us, base_id in chosen)
    read_count = matched = 0
    for base_id, messages in read(driver, [b for _, b in chosen]):
        read_count += 1
        if not messages:
            continue
        report = tree.build(messages)
        if not report["children"]:
            continue
        summary = summarize(report, base_id, started.get(base_id))
        if trace_filter.matches(summary):
            stats.add(summary)
            matched += 1
    return stats, read_count, matched


_WORKER = {}


def _start_worker(open_driver):
    _WORKER["driver"] = open_driver()


def _work(chunk, trace_filter):
    stats, read_count, matched = collect(_WORKER["driver"], chunk,
                                         trace_filter)
    skipped = list(getattr(_WORKER["driver"], "skipped", None) or ())
    return stats, read_count, matched, skipped


class Scan:
    """Reading the traces of one or more windows, with a progress hook.

    ``open_driver()`` makes a driver (each worker process calls it once);
    ``jobs`` worker processes (1: read here, in this process).
    ``progress(label, state, final)`` is called now and then."""

    def __init__(self, open_driver, jobs=1, progress=None, chunk=CHUNK):
        self.open_driver = open_driver
        self.jobs = max(1, int(jobs or 1))
        self.progress = progress
        self.chunk = chunk
        self.skipped = []

    def run(self, runs, trace_filter, driver=None):
        """[(Stats, state)] for each (label, chosen) of ``runs``: the
        traces ``chosen`` ((started_us, base_id), from ``select``) that
        match ``trace_filter``.  ``driver``, when given, is used here and
        closed before worker processes start."""
        states = [{"label": label, "read": 0, "matched": 0,
                   "total": len(chosen), "started": time.monotonic()}
                  for label, chosen in runs]
        stats = [Stats() for _ in runs]
        total = sum(len(chosen) for _, chosen in runs)
        local = driver is not None and _file_path(driver) is not None
        if self.jobs == 1 or local or total < 2 * self.chunk:
            owned = driver is None
            driver = driver or self.open_driver()
            step = self.chunk if not local else 5000
            try:
                for (label, chosen), state, part in zip(runs, states, stats):
                    state["started"] = time.monotonic()
                    for at in range(0, len(chosen), step):
                        _, got, matched = collect(
                            driver, chosen[at:at + step], trace_filter, part)
                        state["read"] += got
                        state["matched"] += matched
                        self._report(state)
                    self._report(state, True)
                self.skipped += list(getattr(driver, "skipped", None) or ())
            finally:
                if owned:
                    _close(driver)
            return list(zip(stats, states))
        if driver is not None:
            _close(driver)   # the workers have their own connections
        self._parallel(runs, trace_filter, stats, states)
        return list(zip(stats, states))

    def _parallel(self, runs, trace_filter, stats, states):
        import concurrent.futures
        tasks = []
        for number, (_, chosen) in enumerate(runs):
            tasks += [(number, chosen[at:at + self.chunk])
                      for at in range(0, len(chosen), self.chunk)]
        tasks.reverse()
        left = [len(chosen) for _, chosen in runs]
        with concurrent.futures.ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=_context(),
                initializer=_start_worker,
                initargs=(self.open_driver,)) as pool:
            pending = {}
            while tasks or pending:
                # A few chunks in flight: bounded memory whatever the
                # number of traces.
                while tasks and len(pending) < 2 * self.jobs:
                    number, chunk = tasks.pop()
                    if not states[number].get("submitted"):
                        # Its time runs from its first chunk on.
                        states[number]["submitted"] = True
                        states[number]["started"] = time.monotonic()
                    pending[pool.submit(_work, chunk, trace_filter)] = (
                        number, len(chunk))
                finished, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    number, size = pending.pop(future)
                    part, got, matched, skipped = future.result()
                    stats[number].merge(part)
                    state = states[number]
                    state["read"] += got
                    state["matched"] += matched
                    left[number] -= size
                    if len(self.skipped) < 20:
                        self.skipped += skipped[:20 - len(self.skipped)]
                    self._report(state, not left[number])

    def _report(self, state, final=False):
        if self.progress is not None:
            state["elapsed"] = time.monotonic() - state["started"]
            self.progress(state["label"], state, final)


def _context():
    """How to start workers: fork where that is safe (Linux, no other
    thread running: the parent's connections are closed first), spawn
    otherwise."""
    import multiprocessing
    import sys
    import threading
    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods()):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _close(driver):
    try:
        driver.close()
    except Exception:  # closing must not hide the outcome
        pass


def default_jobs(count):
    """Worker processes worth starting for ``count`` traces."""
    if count < 2000:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


# --- the result --------------------------------------------------------------

def _latency(hist):
    out = {"p%d_us" % p: _round(hist.percentile(p)) for p in PERCENTILES}
    out.update(mean_us=_round(hist.mean()), min_us=hist.low,
               max_us=hist.high, count=hist.count)
    return out


def _round(value):
    return None if value is None else int(round(value))


def _bands(stats):
    """{band: (weights, traces in it, their summed latency)}."""
    hist = stats.end_to_end
    out = {}
    for name in BAND_NAMES:
        lo, hi = BANDS[name]
        weights = band_weights(hist, lo, hi)
        traces = sum(w * hist.counts[i] for i, w in weights.items())
        latency = sum(w * hist.sums[i] for i, w in weights.items())
        out[name] = (weights, traces, latency)
    return out


def _groups(stats):
    """{(service, kind): row} with its time over all traces and at each
    percentile's band."""
    count = stats.count
    total = stats.end_to_end.total or 1
    bands = _bands(stats)
    rows = {}
    for key, group in stats.groups.items():
        hist = group.per_trace
        zeros = count - hist.count
        row = {"service": key[0], "kind": key[1],
               "traces": hist.count,
               "mean_us": _round(hist.total / count) if count else 0,
               "share": round(hist.total / total, 4),
               "total_us": hist.total}
        for p in PERCENTILES:
            row["p%d_us" % p] = _round(hist.percentile(p, zeros))
        row["at"] = {}
        for name in BAND_NAMES:
            weights, traces, latency = bands[name]
            held = sum(w * group.by_latency.get(i, 0)
                       for i, w in weights.items())
            row["at"][name] = {
                "mean_us": _round(held / traces) if traces else None,
                "share": round(held / latency, 4) if latency else None}
        rows[key] = row
    return rows, {name: {"traces": round(traces, 2),
                         "mean_us": _round(latency / traces) if traces
                         else None}
                  for name, (_, traces, latency) in bands.items()}


def histogram_bins(hists, bins=40):
    """Shared log-spaced bins over several histograms: (edges_us,
    [counts per histogram])."""
    lows = [h.low for h in hists if h.count]
    highs = [h.high for h in hists if h.count]
    if not lows:
        return [], [[] for _ in hists]
    low, high = max(1.0, min(lows)), max(1.0, max(highs))
    if high <= low * 1.05:
        low, high = low / 1.1, high * 1.1
    step = (math.log(high) - math.log(low)) / bins
    edges = [low * math.exp(step * i) for i in range(bins + 1)]
    counts = []
    for hist in hists:
        row = [0] * bins
        for index, here in hist.counts.items():
            value = math.sqrt(bucket_low(index) * bucket_high(index))
            value = min(max(value, hist.low or 0), hist.high or 0)
            at = bisect.bisect_right(edges, value) - 1
            row[min(max(at, 0), bins - 1)] += here
        counts.append(row)
    return [int(round(e)) for e in edges], counts


def result(stats, window, trace_filter, state, baseline=None,
           baseline_window=None, baseline_state=None, rank="mean",
           source=None):
    """The JSON-ready answer: latency, where the critical-path time went,
    and with a baseline what changed."""
    rows, band_info = _groups(stats)
    groups = sorted(rows.values(), key=lambda r: (-r["share"], r["service"],
                                                  r["kind"]))
    out = {
        "source": source,
        "window": dict(window.as_dict(), text=window.text,
                       description=window.describe()),
        "filter": dict(trace_filter.as_dict(),
                       description=trace_filter.describe()),
        "traces": {"read": state.get("read", 0),
                   "matched": stats.count, "errors": stats.errors,
                   "first_started": None if stats.first_us is None
                   else format_us(stats.first_us),
                   "last_started": None if stats.last_us is None
                   else format_us(stats.last_us),
                   "seconds": round(state.get("elapsed", 0), 3)},
        "latency": {"end_to_end": _latency(stats.end_to_end),
                    "response": _latency(stats.response)},
        "bands": band_info,
        "groups": groups,
        "operations": [{"operation": name, "count": count}
                       for name, count in sorted(
                           stats.operations.items(),
                           key=lambda item: (-item[1], item[0]))],
        "slowest": [{"base_id": base_id, "end_to_end_us": us}
                    for us, base_id in sorted(stats.slowest, reverse=True)],
    }
    hists = [stats.end_to_end]
    if baseline is not None:
        hists.append(baseline.end_to_end)
    edges, counts = histogram_bins(hists)
    out["histogram"] = {"edges_us": edges, "window": counts[0]}
    if baseline is not None:
        out["histogram"]["baseline"] = counts[1]
        out["baseline"] = result(baseline, baseline_window, trace_filter,
                                 baseline_state or {}, source=source)
        del out["baseline"]["histogram"]
        out["changes"], out["latency_change"] = _changes(
            stats, baseline, rows, rank)
        out["rank"] = rank
    return out


def _changes(stats, baseline, rows, rank):
    """Each kind's part of the change of latency, ranked by ``rank``
    ("mean": over all traces, or a band "p50", "p90", "p99")."""
    before_rows, before_bands = _groups(baseline)
    _, now_bands = _groups(stats)
    latency = {}
    for name, now, then in (
            ("end_to_end", stats.end_to_end, baseline.end_to_end),
            ("response", stats.response, baseline.response)):
        entry = {}
        for label, value_now, value_then in [
                ("p%d_us" % p, now.percentile(p), then.percentile(p))
                for p in PERCENTILES] + [("mean_us", now.mean(),
                                          then.mean())]:
            entry[label] = {"before": _round(value_then),
                            "after": _round(value_now),
                            "change": None if value_now is None
                            or value_then is None
                            else _round(value_now - value_then)}
        latency[name] = entry
    for name in BAND_NAMES:
        now_mean = now_bands[name]["mean_us"]
        then_mean = before_bands[name]["mean_us"]
        latency["end_to_end"]["at_" + name] = {
            "before": then_mean, "after": now_mean,
            "change": None if now_mean is None or then_mean is None
            else now_mean - then_mean}
    total_change = {"mean": (stats.end_to_end.mean() or 0)
                    - (baseline.end_to_end.mean() or 0)}
    for name in BAND_NAMES:
        change = latency["end_to_end"]["at_" + name]["change"]
        total_change[name] = change or 0
    changes = []
    for key in set(rows) | set(before_rows):
        now, then = rows.get(key), before_rows.get(key)
        entry = {"service": key[0], "kind": key[1],
                 "before_us": then["mean_us"] if then else 0,
                 "after_us": now["mean_us"] if now else 0}
        entry["change_us"] = entry["after_us"] - entry["before_us"]
        entry["at"] = {}
        for name in BAND_NAMES:
            a = (now["at"][name]["mean_us"] if now else 0) or 0
            b = (then["at"][name]["mean_us"] if then else 0) or 0
            entry["at"][name] = {"before_us": b, "after_us": a,
                                 "change_us": a - b}
        key_change = entry["change_us"] if rank == "mean" \
            else entry["at"][rank]["change_us"]
        whole = total_change[rank]
        entry["share_of_change"] = round(key_change / whole, 4) \
            if whole else None
        entry["rank_change_us"] = key_change
        changes.append(entry)
    changes.sort(key=lambda e: (-e["rank_change_us"], e["service"],
                                e["kind"]))
    latency["change_ranked_us"] = _round(total_change[rank])
    return changes, latency
