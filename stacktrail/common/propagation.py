"""The trace on the wire: osprofiler's signed headers and W3C Trace Context.

Incoming, ``start_from_headers`` decides whether a request is traced, in
this order: a validly signed osprofiler header; a sampled ``traceparent``
when ``trust_traceparent`` is on (both under the per-process rate limit);
local head sampling, which joins the caller's W3C trace id when one came.
Outgoing, ``outgoing_headers`` writes the formats ``propagation`` names.
"""

import logging
import re

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.common import ids
from stacktrail.common import sampling
from stacktrail.common import settings
from stacktrail.common import signing

LOG = logging.getLogger(__name__)

X_TRACE_INFO = "X-Trace-Info"
X_TRACE_HMAC = "X-Trace-HMAC"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_MAX_ID_TEXT = 64


# --- W3C Trace Context -----------------------------------------------------

def parse_traceparent(text):
    """(trace id int, span id int, sampled) of a valid traceparent, or None.

    Strict: lower-case hex, no all-zero ids, version ff refused, version 00
    exactly 55 characters; later versions may append fields.
    """
    if not isinstance(text, str) or len(text) > 512:
        return None
    match = _TRACEPARENT.match(text.strip())
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if int(trace_id, 16) == 0 or int(span_id, 16) == 0:
        return None
    return (int(trace_id, 16), ids.from_w3c_span(trace_id, span_id),
            bool(int(flags, 16) & 1))


def format_traceparent(base_id, span_id, sampled=True):
    return "00-%s-%s-%s" % (ids.trace_id_hex(base_id),
                            ids.span_id_hex(span_id),
                            "01" if sampled else "00")


def valid_tracestate(text):
    """The tracestate to pass on, or None when it is malformed."""
    if not isinstance(text, str) or not text or len(text) > 512:
        return None
    members = [m.strip() for m in text.split(",") if m.strip()]
    if len(members) > 32 or not all("=" in m for m in members):
        return None
    return ",".join(members)


# --- osprofiler signed trace info ------------------------------------------

def _id_text(value):
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_TEXT


def unpack_trace_info(packed, mac, keys):
    """(base_id, parent_id, key) of a valid signed header, or None."""
    unpacked = signing.unpack(packed, mac, keys)
    if unpacked is None:
        return None
    data, key = unpacked
    if not set(data) <= {"base_id", "parent_id"} or \
            not _id_text(data.get("base_id")):
        return None
    parent = data.get("parent_id")
    if parent is not None and not _id_text(parent):
        return None
    return data["base_id"], parent, key


# --- decisions ---------------------------------------------------------------

def start_from_headers(get_header, keys=None):
    """Start a trace for an incoming request if one of the three ways says
    so; ``get_header(name)`` reads a request header.  Returns the profiler
    or None.  Bad headers only mean "not traced".
    """
    live = settings.current
    keys = live.validation_keys if keys is None else keys
    parent = parse_traceparent(get_header(TRACEPARENT))
    state = valid_tracestate(get_header(TRACESTATE)) if parent else None

    packed, mac = get_header(X_TRACE_INFO), get_header(X_TRACE_HMAC)
    signed = unpack_trace_info(packed, mac, keys)
    if signed is None and (packed or mac):
        LOG.debug("stacktrail: trace header not accepted (bad signature, "
                  "unknown key or malformed)")
    if signed and live.limiter.allow():
        base_id, parent_id, key = signed
        return _init(key, base_id, parent_id, state)
    if signed:
        LOG.debug("stacktrail: triggered trace refused by the rate limit")
        return None
    if parent and parent[2] and live.trust_traceparent:
        if live.limiter.allow():
            return _init(live.signing_key, parent[0], parent[1], state)
        return None
    if sampling.sampled(live.sampling_rate):
        if parent:
            return _init(live.signing_key, parent[0], parent[1], state)
        return _init(live.signing_key, None, None, None)
    return None


def _init(key, base_id, parent_id, tracestate):
    prof = profiler.init(key, base_id=base_id, parent_id=parent_id)
    prof.tracestate = tracestate
    return prof


def outgoing_headers():
    """Headers that carry the current trace to a callee ({} when none)."""
    frame = context.current.get()
    if frame is None:
        return {}
    prof = frame.profiler
    formats = settings.current.propagation
    headers = {}
    if "osprofiler" in formats and prof.hmac_key:
        packed, mac = signing.pack(
            {"base_id": prof.get_base_id(),
             "parent_id": ids.to_uuid(frame.span_id)}, prof.hmac_key)
        headers[X_TRACE_INFO] = packed
        headers[X_TRACE_HMAC] = mac
    if "w3c" in formats:
        headers[TRACEPARENT] = format_traceparent(prof.base_id,
                                                  frame.span_id)
        if prof.tracestate:
            headers[TRACESTATE] = prof.tracestate
    return headers


# --- RPC request context -----------------------------------------------------

def rpc_trace_info():
    """osprofiler's ``trace_info`` for an RPC context, or None."""
    prof = profiler.get()
    if prof is None:
        return None
    return {"hmac_key": prof.hmac_key, "base_id": prof.get_base_id(),
            "parent_id": prof.get_id()}


def start_from_trace_info(trace_info):
    """Join the trace an RPC caller put in its context; True if joined."""
    if not isinstance(trace_info, dict) or \
            not _id_text(trace_info.get("base_id")):
        return False
    parent = trace_info.get("parent_id")
    profiler.init(trace_info.get("hmac_key"), base_id=trace_info["base_id"],
                  parent_id=parent if _id_text(parent) else None)
    return True
