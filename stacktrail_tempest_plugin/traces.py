"""Trace headers, and traces read back from the store: structure, not
timings.

Nothing here imports tempest, so it is usable (and tested) on its own:

* ``Ids.new()``: a trace id and a parent span id that read the same in both
  wire formats (the parent's high 64 bits are the trace's, its low 64 bits
  the W3C span-id), and the headers of either format for them;
* ``Store(connection_string).messages(base_id)``: the points a trace has
  in the store, through stacktrail's drivers (any store the stacktrail CLI
  reads);
* ``Trace(messages)``: the spans as a tree, with the checks the tests make:
  ``chain`` (spans nested in a given order), ``open_spans``, ``orphans``,
  ``services``, ``secrets_found``;
* ``wait_for(read, until, ...)``: poll until a trace holds what a test
  expects and nothing more arrives, or fail saying what was there.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid

X_TRACE_INFO = "X-Trace-Info"
X_TRACE_HMAC = "X-Trace-HMAC"
TRACEPARENT = "traceparent"
LOW64 = (1 << 64) - 1


class Ids:
    """A new trace's id and the caller's span id, in both formats."""

    def __init__(self, trace_int, parent_int):
        self.trace_int = trace_int
        self.parent_int = parent_int

    @classmethod
    def new(cls):
        trace = uuid.uuid4().int
        return cls(trace, (trace & ~LOW64) | (secrets.randbits(64) or 1))

    @property
    def base_id(self):
        return str(uuid.UUID(int=self.trace_int))

    @property
    def parent_id(self):
        return str(uuid.UUID(int=self.parent_int))

    @property
    def span_hex(self):
        return "%016x" % (self.parent_int & LOW64)

    def osprofiler_headers(self, key):
        """osprofiler's signed headers (byte-compatible with osprofiler 4
        and tempest's own profiler)."""
        packed = base64.urlsafe_b64encode(json.dumps(
            {"base_id": self.base_id, "parent_id": self.parent_id}).encode())
        mac = hmac.new(key.encode(), packed, hashlib.sha1).hexdigest()
        return {X_TRACE_INFO: packed.decode(), X_TRACE_HMAC: mac}

    def traceparent_headers(self, sampled=True):
        """A W3C Trace Context ``traceparent`` for the same ids."""
        return {TRACEPARENT: "00-%032x-%s-%s" % (
            self.trace_int, self.span_hex, "01" if sampled else "00")}

    def both_headers(self, key):
        headers = self.osprofiler_headers(key)
        headers.update(self.traceparent_headers())
        return headers


class Store:
    """Read a trace's points with stacktrail's drivers."""

    def __init__(self, connection_string):
        self.connection_string = connection_string

    def messages(self, base_id):
        from stacktrail.drivers import base
        driver = base.get_driver(self.connection_string)
        try:
            return list(driver.get_messages(base_id) or [])
        except base.DriverError:
            return []       # e.g. a file store whose file is not there yet
        finally:
            try:
                driver.close()
            except Exception:  # closing never hides what was read
                pass


class Span:
    """One span: its start and stop messages, parent and children."""

    def __init__(self, span_id):
        self.id = span_id
        self.start = None
        self.stop = None
        self.parent = None
        self.children = []

    @property
    def _first(self):
        return self.start or self.stop or {}

    @property
    def name(self):
        return self._first.get("name", "").rsplit("-", 1)[0]

    @property
    def parent_id(self):
        return self._first.get("parent_id")

    @property
    def service(self):
        return self._first.get("service") or ""

    @property
    def info(self):
        return (self.start or {}).get("info") or {}

    @property
    def stop_info(self):
        return (self.stop or {}).get("info") or {}

    @property
    def function(self):
        function = self.info.get("function")
        return function.get("name", "") if isinstance(function, dict) else ""

    @property
    def method(self):
        request = self.info.get("request")
        return request.get("method", "") if isinstance(request, dict) else ""

    @property
    def path(self):
        request = self.info.get("request")
        return request.get("path", "") if isinstance(request, dict) else ""

    @property
    def status(self):
        response = self.stop_info.get("response")
        if isinstance(response, dict):
            return response.get("status")
        return None

    @property
    def closed(self):
        return self.start is not None and self.stop is not None

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def describe(self):
        detail = self.method and "%s %s" % (self.method, self.path) or \
            self.function
        return "%s@%s%s%s" % (self.name, self.service,
                              " " + detail if detail else "",
                              "" if self.closed else " (open)")


class Step:
    """What one span of a chain must be: its name (a regex matched in
    full), and optionally its service and the traced function (regexes
    searched for)."""

    def __init__(self, name, service=None, function=None):
        self.name = name
        self.service = service
        self.function = function

    def matches(self, span):
        return (re.fullmatch(self.name, span.name) is not None and
                (self.service is None or
                 re.search(self.service, span.service) is not None) and
                (self.function is None or
                 re.search(self.function, span.function) is not None))

    def __repr__(self):
        extra = "".join(" %s=%r" % (k, v) for k, v in
                        (("service", self.service),
                         ("function", self.function)) if v)
        return "Step(%r%s)" % (self.name, extra)


class Trace:
    """The spans of one trace, as a tree."""

    def __init__(self, base_id, messages):
        self.base_id = base_id
        self.messages = list(messages)
        spans = {}
        for message in self.messages:
            name = message.get("name", "")
            span_id = message.get("trace_id")
            if not span_id or not name.endswith(("-start", "-stop")):
                continue
            span = spans.setdefault(span_id, Span(span_id))
            if name.endswith("-start"):
                span.start = message
            else:
                span.stop = message
        self.spans = spans
        self.roots = []
        for span in spans.values():
            parent = spans.get(span.parent_id)
            if parent is not None and parent is not span:
                span.parent = parent
                parent.children.append(span)
            else:
                self.roots.append(span)
        key = _start_time
        self.roots.sort(key=key)
        for span in spans.values():
            span.children.sort(key=key)

    def __len__(self):
        return len(self.messages)

    def walk(self):
        for root in self.roots:
            yield from root.walk()

    def named(self, name):
        return [span for span in self.walk() if span.name == name]

    def open_spans(self):
        """Spans with a start and no stop, or a stop and no start."""
        return [span for span in self.walk() if not span.closed]

    def orphans(self, *expected_parents):
        """Top-level spans whose parent is none of ``expected_parents``
        (the caller's span id) nor the trace itself."""
        allowed = {self.base_id, *expected_parents}
        return [span for span in self.roots
                if span.parent_id not in allowed]

    def services(self):
        return {span.service for span in self.walk() if span.service}

    def chain(self, *steps, start=None):
        """Spans matching ``steps`` in order, each nested (at any depth)
        under the one before, the first one anywhere (or under ``start``,
        which may be a span or a list of spans); None if there is none."""
        if start is None:
            candidates = list(self.walk())
        elif isinstance(start, Span):
            candidates = list(start.walk())
        else:
            candidates = [s for root in start for s in root.walk()]
        return _chain(candidates, steps)

    def secrets_found(self, *values):
        """Which of ``values`` appear anywhere in the stored points."""
        text = json.dumps(self.messages, default=str)
        return [value for value in values if value and value in text]

    def render(self):
        """The tree as text, for failure messages."""
        lines = ["trace %s: %d points" % (self.base_id, len(self.messages))]

        def add(span, depth):
            lines.append("  " * (depth + 1) + span.describe())
            for child in span.children:
                add(child, depth + 1)
        for root in self.roots:
            add(root, 0)
        return "\n".join(lines)


def _start_time(span):
    return str((span.start or span.stop or {}).get("timestamp", ""))


def _chain(candidates, steps):
    if not steps:
        return []
    first, rest = steps[0], steps[1:]
    for span in candidates:
        if first.matches(span):
            below = _chain([d for c in span.children for d in c.walk()],
                           rest)
            if below is not None:
                return [span] + below
    return None


class TraceTimeout(AssertionError):
    """The store never held what the test waited for."""


def wait_for(read, base_id, until, timeout=60.0, interval=0.5, settle=1.5,
             clock=time.monotonic, sleep=time.sleep):
    """Poll ``read(base_id)`` (messages) until ``until(trace)`` is true and
    no point was added for ``settle`` seconds; the Trace.  TraceTimeout,
    with what the store held, when ``timeout`` passes first."""
    deadline = clock() + timeout
    trace = Trace(base_id, [])
    seen, since = -1, clock()
    while True:
        trace = Trace(base_id, read(base_id))
        now = clock()
        if len(trace) != seen:
            seen, since = len(trace), now
        elif until(trace) and now - since >= settle:
            return trace
        if now >= deadline:
            raise TraceTimeout(
                "after %.0f s the store does not hold the expected trace "
                "(%s)\n%s" % (timeout, getattr(until, "__doc__", None) or
                              "condition", trace.render()))
        sleep(interval)
