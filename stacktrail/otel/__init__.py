"""The OpenTelemetry bridge: OpenTelemetry-instrumented code in stacktrail
traces (``[profiler] otel_bridge``, extra ``stacktrail[otel]``).

``apply(True)`` installs ``bridge.TracerProvider`` as OpenTelemetry's
global provider (or, when the service already set a real one, leaves that
provider in place and only shares the trace context: see ``bridge``), and
puts stacktrail's context in front of OpenTelemetry's, so that

* a span started through the OpenTelemetry API inside a stacktrail trace is
  a span of that trace (its parent the current stacktrail span), with its
  attributes, status and events (``mapping``, ``kind``);
* ``opentelemetry.trace.get_current_span()`` inside a stacktrail span is
  that span (the trace and span ids of its W3C form), and stacktrail spans
  opened inside an OpenTelemetry span nest under it;
* ``opentelemetry.context.attach`` of a context from outside (an extracted
  ``traceparent``) is a caller's context for stacktrail too;
* outside any stacktrail trace, stacktrail's sampling decides; spans it
  does not record still carry the context;
* oslo.messaging's and oslo.middleware's own spans are absorbed into the
  ``rpc`` and ``wsgi`` spans of stacktrail's integrations (``owners``).

Importing this package imports no OpenTelemetry module: only ``apply(True)``
does (``bridge``).  The runtime calls ``apply`` on activation and reload.
"""

import logging
import sys

LOG = logging.getLogger(__name__)
_BRIDGE = "stacktrail.otel.bridge"
_warned = False


def apply(wanted):
    """Bridge on (True) or inert (False); True when it is now active.

    Never raises: without opentelemetry-api one warning is logged and
    tracing goes on without the bridge.
    """
    global _warned
    if not wanted:
        bridge = sys.modules.get(_BRIDGE)
        if bridge is not None:
            bridge.uninstall()
        return False
    try:
        from stacktrail.otel import bridge
    except ImportError as exc:
        if not _warned:
            _warned = True
            LOG.warning("stacktrail: otel_bridge is on but OpenTelemetry's "
                        "API is not installed (pip install "
                        "'stacktrail[otel]'): %s", exc)
        return False
    try:
        return bridge.install()
    except Exception:  # tracing never stops the service
        LOG.exception("stacktrail: could not install the OpenTelemetry "
                      "bridge")
        return False


def status():
    """"off", "global" (the bridge is OpenTelemetry's provider) or
    "beside" (another provider records OpenTelemetry spans; the trace
    context is shared)."""
    bridge = sys.modules.get(_BRIDGE)
    return bridge.mode() if bridge is not None else "off"


def tracer_provider():
    """The bridge's ``TracerProvider`` (imports OpenTelemetry's API)."""
    from stacktrail.otel import bridge
    return bridge.PROVIDER
