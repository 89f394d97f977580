"""``otlp://host:port`` and ``otlps://host:port``: spans over OTLP/HTTP.

Each start/stop pair of trace points becomes one OpenTelemetry span, sent
as protobuf to ``/v1/traces`` of a collector, one request per batch.  The
messages are built with the ``opentelemetry-proto`` classes only: no SDK,
no tracer, and the process's global tracer provider is never touched, so a
service that also uses OpenTelemetry itself keeps its own setup.

Ids stay W3C-consistent with the rest of stacktrail: the trace id is the
base id as 128 bits, a span id is the low 64 bits of the point's trace_id,
the parent likewise; a span whose parent is the base id is a root span.
A span's kind and its semantic-convention attributes come from the kinds
its info records (``stacktrail.common.kinds``); whatever they do not map
is exported under ``stacktrail.``, secrets left out.

Options come from keyword arguments or the ``[profiler_otlp]`` group of
the conf handed in: ``service_name_prefix``, ``headers`` ("k=v,k2=v2"),
``ca_file``, ``insecure`` (skip TLS verification), ``timeout`` (seconds
one connect or read may take; default ``[profiler] store_timeout``),
``span_timeout`` (seconds a start waits for its stop) and ``max_open``.
Keyword arguments may also be spelled ``otlp_<option>``.

This is a write-only exporter: read traces in the OpenTelemetry backend.
"""

import collections
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse

from stacktrail.common import ids
from stacktrail.common import kinds
from stacktrail.common import points
from stacktrail.drivers import base

LOG = logging.getLogger(__name__)

# The read side (``base.WriteOnly``): traces live in the OpenTelemetry backend.
READ_ONLY = ("otlp is write-only: read traces in your OpenTelemetry backend "
             "(Jaeger, Tempo, ...)")
DEFAULT_PORT = 4318
TRACES_PATH = "/v1/traces"
MAX_TEXT = 8192
# Never exported: osprofiler records raw SQL parameters, which hold secrets.
SECRET_KEYS = frozenset(["params", "parameters", "password", "token",
                         "hmac_key", "auth_token"])

_Event = collections.namedtuple(
    "_Event", "name phase base span parent ns info resource")


def _proto():
    return tuple(base.require("opentelemetry.proto." + name, "otlp") for name
                 in ("collector.trace.v1.trace_service_pb2",
                     "common.v1.common_pb2", "resource.v1.resource_pb2",
                     "trace.v1.trace_pb2"))


def parse_headers(value):
    """Headers from "k=v,k2=v2" (values may be %-encoded) or a dict."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    headers = {}
    for item in (value or "").split(","):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            headers[key.strip()] = urllib.parse.unquote(val.strip())
    return headers


def _ssl_context(ca_file, insecure):
    context = ssl.create_default_context(cafile=ca_file or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class OTLPDriver(base.WriteOnly, base.Driver):
    """Pairs trace points into spans and posts them to a collector."""

    WHERE_TO_READ = READ_ONLY

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, **kwargs):
        super().__init__(connection_str, project=project, service=service,
                         host=host, conf=conf, **kwargs)
        self._pb = _proto()
        self.secure = self.url.scheme.lower() == "otlps"
        try:
            self.address = (self.url.hostname or "localhost",
                            self.url.port or DEFAULT_PORT)
        except ValueError:
            raise base.DriverError("bad port in %r" % connection_str) from None
        path = self.url.path.rstrip("/")
        self.path = path if path.endswith(TRACES_PATH) else path + TRACES_PATH
        self._configure()
        # (base id, span id) -> (start event, monotonic arrival).  Keyed by
        # ids, never by arrival order, so interleaved spans pair correctly.
        self._open = collections.OrderedDict()
        self._lock = threading.Lock()
        self._resource = (project, service, self.host)
        self.exported_requests = 0

    def _configure(self):
        def opt(name, default):
            return self.option(name, default, group="profiler_otlp",
                               keywords=("otlp_" + name,))

        self.headers = parse_headers(opt("headers", ""))
        self.timeout = float(opt("timeout", self.store_timeout))
        self.prefix = opt("service_name_prefix", "")
        self.span_timeout = float(opt("span_timeout", 300.0))
        self.max_open = int(opt("max_open", 10000))
        insecure = str(opt("insecure", False)).lower() in ("1", "true", "yes")
        self.ssl_context = (_ssl_context(opt("ca_file", None), insecure)
                            if self.secure else None)

    @property
    def endpoint(self):
        return "%s://%s:%d%s" % ("https" if self.secure else "http",
                                 self.address[0], self.address[1], self.path)

    # write side

    def write_points(self, batch):
        self._export(self._pair(self._event(p, self._resource)
                                for p in batch))

    def write_messages(self, messages):
        self._export(self._pair(self._message_event(m) for m in messages))

    def notify(self, info, **kwargs):
        self.write_messages([info])

    def flush_open(self):
        """Export every start still waiting for its stop, as unfinished."""
        with self._lock:
            pending = [start for start, _ in self._open.values()]
            self._open.clear()
        self._export([(start, None) for start in pending])

    def after_fork(self):
        """A forked child exports only its own spans: the parent's open
        starts stay with the parent."""
        self._open = collections.OrderedDict()
        self._lock = threading.Lock()

    def close(self):
        try:
            self.flush_open()
        except base.DriverError as exc:
            LOG.warning("%s", exc)

    @staticmethod
    def _event(point, resource):
        name, phase, base_id, parent_id, trace_id, ns, info = point
        parent = ids.to_int(parent_id) if parent_id else None
        return _Event(name, phase, ids.to_int(base_id), ids.to_int(trace_id),
                      parent, ns, info or {}, resource)

    def _message_event(self, message):
        """Messages (osprofiler's notify, the agent) carry their origin."""
        info = message.get("info") or {}
        resource = (message.get("project", self.project),
                    message.get("service", self.service),
                    info.get("host") or self.host)
        return self._event(points.from_message(message), resource)

    def _pair(self, events):
        """(start, stop) pairs ready to export; starts wait for stops."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for event in events:
                key = (event.base, event.span)
                if event.phase == points.START:
                    self._open[key] = (event, now)
                    self._open.move_to_end(key)
                else:
                    start = self._open.pop(key, (None, None))[0]
                    ready.append((start, event))
            ready.extend((start, None) for start in self._expired(now))
        return ready

    def _expired(self, now):
        """Oldest starts past span_timeout, or beyond max_open."""
        expired = []
        while self._open:
            key, (start, arrived) = next(iter(self._open.items()))
            if (len(self._open) <= self.max_open
                    and now - arrived < self.span_timeout):
                break
            del self._open[key]
            expired.append(start)
        return expired

    def _export(self, pairs):
        if not pairs:
            return
        body = self._request(pairs).SerializeToString()
        self._post(body)
        self.exported_requests += 1

    def _request(self, pairs):
        service_pb, common_pb, resource_pb, trace_pb = self._pb
        by_resource = collections.defaultdict(list)
        for start, stop in pairs:
            first = start or stop
            by_resource[first.resource].append(
                _span(trace_pb, common_pb, start, stop))
        request = service_pb.ExportTraceServiceRequest()
        for resource, spans in by_resource.items():
            rs = request.resource_spans.add()
            rs.resource.CopyFrom(resource_pb.Resource(
                attributes=_key_values(common_pb,
                                       self._resource_attrs(resource))))
            ss = rs.scope_spans.add()
            ss.scope.name = "stacktrail"
            ss.scope.version = _version()
            ss.spans.extend(spans)
        return request

    def _resource_attrs(self, resource):
        project, service, host = resource
        parts = [p for p in (self.prefix, project, service) if p]
        attrs = {"service.name": "-".join(parts) or "stacktrail",
                 "host.name": host}
        if project:
            attrs["stacktrail.project"] = project
        if service:
            attrs["stacktrail.service"] = service
        return attrs

    def _post(self, body):
        """One POST within ``timeout`` as a whole (a collector that sends
        its reply a byte at a time would outlast any per-read timeout: the
        watchdog shuts the socket down); a failure is one line."""
        host, port = self.address
        if self.secure:
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        headers = dict(self.headers)
        headers["Content-Type"] = "application/x-protobuf"
        token = base.WATCHDOG.watch(self.timeout, lambda: _cut(conn))
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            reply = response.read()
        except (OSError, http.client.HTTPException) as exc:
            if base.WATCHDOG.done(token):
                raise base.StoreTimeout(
                    "otlp export to %s timed out: not done within %.1f s"
                    % (self.endpoint, self.timeout)) from None
            raise base.DriverError("otlp export to %s failed: %s"
                                   % (self.endpoint, exc or type(exc).__name__)
                                   ) from None
        finally:
            base.WATCHDOG.done(token)
            conn.close()
        if not 200 <= response.status < 300:
            raise base.DriverError("otlp export to %s failed: HTTP %d %s"
                                   % (self.endpoint, response.status,
                                      response.reason))
        self._check_partial(reply)

    def _check_partial(self, reply):
        """A collector may accept a request but reject some spans."""
        try:
            answer = self._pb[0].ExportTraceServiceResponse.FromString(reply)
        except Exception:  # not protobuf (a proxy's text): nothing to check
            return
        rejected = answer.partial_success.rejected_spans
        if rejected:
            LOG.warning("otlp collector at %s rejected %d spans: %s",
                        self.endpoint, rejected,
                        answer.partial_success.error_message)


def _cut(conn):
    """The watchdog's doing: unblock a request that outlived its time."""
    sock = conn.sock
    if sock is not None:
        base.shutdown_socket(sock.fileno())


def _version():
    import stacktrail
    return stacktrail.__version__


# span building: pure functions of the start and stop events

def _span(trace_pb, common_pb, start, stop):
    first = start or stop
    info = _merge(start.info if start else {}, stop.info if stop else {})
    found = kinds.parts(first.name, info)
    kind = _span_kind(trace_pb, kinds.span_kind(first.name, info, found))
    attrs = _attributes(first.name, info, found)
    span = trace_pb.Span(
        trace_id=first.base.to_bytes(16, "big"),
        span_id=(first.span & ids.LOW64).to_bytes(8, "big"),
        name=_name(first.name, attrs),
        kind=kind,
        start_time_unix_nano=first.ns,
        end_time_unix_nano=stop.ns if stop else first.ns)
    if first.parent and first.parent != first.base:
        span.parent_span_id = (first.parent & ids.LOW64).to_bytes(8, "big")
    if start is None:
        attrs["stacktrail.start_missing"] = True
    if stop is None:
        attrs["stacktrail.unfinished"] = True
    span.attributes.extend(_key_values(common_pb, attrs))
    _set_status(trace_pb, common_pb, span, info, attrs, kind)
    return span


def _merge(start_info, stop_info):
    """Start info, with what the stop added (results, errors) on top."""
    merged = dict(start_info)
    for key, value in stop_info.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


_SPAN_KINDS = {}  # "CLIENT" -> its enum value (protobuf lookups are slow)


def _span_kind(trace_pb, name):
    """The enum value of one of ``kinds.SPAN_KINDS`` ("CLIENT"...)."""
    value = _SPAN_KINDS.get(name)
    if value is None:
        value = _SPAN_KINDS[name] = getattr(trace_pb.Span.SpanKind,
                                            "SPAN_KIND_" + name)
    return value


def _name(name, attrs):
    """The full point name, or "METHOD /path" for HTTP when known."""
    method, path = attrs.get("http.request.method"), attrs.get("url.path")
    return "%s %s" % (method, path) if method and path else name


def _attributes(name, info, found):
    """Each kind's semantic-convention attributes (``kinds``), then the
    rest under stacktrail."""
    rest = dict(info)
    rest.pop("host", None)  # it is the resource's host.name
    attrs = {"stacktrail.name": name}
    for kind, part in found:
        mapped = _mapped(kind, part, info)
        if mapped is None:
            continue
        for key, value in mapped.items():
            attrs.setdefault(key, value)
        for key in {kind.key, kind.stop_key}:
            _leave_out(rest, key, kind.mapped)
    if rest.get("etype"):
        attrs["error.type"] = rest.pop("etype")
    _flatten("stacktrail", rest, attrs)
    return attrs


def _mapped(kind, part, info):
    """A kind's attributes, or None when its (third-party) mapping fails:
    then its fields are exported under stacktrail as they are."""
    try:
        attrs = kind.attributes(part, info)
    except Exception:
        LOG.debug("stacktrail: %r could not map a span", kind, exc_info=True)
        return None
    return attrs if isinstance(attrs, dict) else None


def _leave_out(rest, key, mapped):
    """The fields a kind mapped are not repeated under stacktrail."""
    part = rest.get(key)
    if isinstance(part, dict):
        rest[key] = {k: v for k, v in part.items() if k not in mapped}


def _flatten(prefix, value, attrs):
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SECRET_KEYS:
                continue
            _flatten("%s.%s" % (prefix, key), item, attrs)
    elif value is not None:
        attrs.setdefault(prefix, value)


def _set_status(trace_pb, common_pb, span, info, attrs, kind):
    codes = trace_pb.Status.StatusCode
    etype = attrs.get("error.type")
    code = attrs.get("http.response.status_code")
    if etype:
        message = str(info.get("message") or "")
        span.status.code = codes.STATUS_CODE_ERROR
        span.status.message = ("%s: %s" % (etype, message))[:MAX_TEXT]
        event = span.events.add(name="exception",
                                time_unix_nano=span.end_time_unix_nano)
        exc_attrs = {"exception.type": etype, "exception.message": message}
        if info.get("traceback"):
            exc_attrs["exception.stacktrace"] = info["traceback"]
        event.attributes.extend(_key_values(common_pb, exc_attrs))
    elif isinstance(code, int) and (code >= 500 or (
            code >= 400 and kind == _span_kind(trace_pb, kinds.CLIENT))):
        span.status.code = codes.STATUS_CODE_ERROR


def _key_values(common_pb, attrs):
    return [common_pb.KeyValue(key=key, value=_any_value(common_pb, value))
            for key, value in attrs.items() if value is not None]


def _any_value(common_pb, value):
    if isinstance(value, bool):
        return common_pb.AnyValue(bool_value=value)
    if isinstance(value, int) and -2 ** 63 <= value < 2 ** 63:
        return common_pb.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb.AnyValue(double_value=value)
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str, sort_keys=True)
        except (TypeError, ValueError):
            value = str(value)
    return common_pb.AnyValue(string_value=value[:MAX_TEXT])
