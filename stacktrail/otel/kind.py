"""The ``otel`` span kind: what a span started through OpenTelemetry's API
records beyond what a builtin kind accounts for.

Added to the kinds registry when the bridge is installed (``register``),
after the kinds third parties declare through the ``stacktrail.kinds``
entry points, so the report describer and the OTLP exporter of the process
read it without knowing the bridge::

    {"otel": {"kind": "PRODUCER", "scope": "oslo.messaging",
              "attributes": {"messaging.system": "rabbitmq", ...}}}
    stop: {"otel": {"events": [{"name", "time_ns", "attributes"}]}}

The attributes already carry semantic-convention names, so the exporter
sends them as they are (plus ``otel.scope.name``); the span's OpenTelemetry
kind (PRODUCER and CONSUMER included) is its kind when no builtin kind
recorded in the same info says otherwise.  Pure data and functions.
"""

import types

from stacktrail.common import kinds

KEY = "otel"


def _span_kind(part, point_name):
    kind = part.get("kind")
    return kind if kind in kinds.SPAN_KINDS else kinds.INTERNAL


def _attributes(part, info):
    attrs = part.get("attributes")
    out = dict(attrs) if isinstance(attrs, dict) else {}
    scope = part.get("scope")
    if isinstance(scope, str) and scope:
        out.setdefault("otel.scope.name", scope)
    return out


def _describe(part, stop):
    if part.__class__ is not dict:
        return ""
    kind = kinds.text(part.get("kind"), 16).lower()
    scope = kinds.text(part.get("scope"), 64)
    if kind and scope:
        return "%s (%s)" % (kind, scope)
    return kind or scope


OTEL = kinds.Kind(
    "otel", KEY,
    {"kind": "OpenTelemetry span kind (SERVER, CLIENT, INTERNAL, PRODUCER, "
             "CONSUMER)",
     "scope": "instrumentation scope (the tracer's name)",
     "attributes": "attributes no builtin kind accounts for, by their "
                   "semantic-convention names (secrets masked)",
     "links": "linked spans, as trace-id-span-id hex",
     "events": "stop: span events (name, time_ns, attributes)"},
    span_kind=_span_kind, describe=_describe, attributes=_attributes,
    mapped=("kind", "scope", "attributes"), names={"otel": {}})


def register():
    """Add ``OTEL`` to the kinds registry (idempotent): the entry points'
    kinds first, then this one, before ``function`` as always."""
    found = kinds.extra()
    if any(kind.key == KEY for kind in found):
        return
    kinds.extra([types.SimpleNamespace(plugin=kind)
                 for kind in found + (OTEL,)])
