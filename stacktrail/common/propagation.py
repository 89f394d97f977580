"""The trace on the wire: osprofiler's signed headers and W3C Trace Context.

Incoming, ``start_from_headers`` decides whether a request is traced, in
this order: a validly signed osprofiler header (the signed budget); a
sampled ``traceparent`` when ``trust_traceparent`` is on, then local head
sampling, which joins the caller's W3C trace id when one came (both under
the unsigned budget).  Outgoing, ``outgoing_headers`` writes the formats
``propagation`` names.

W3C Trace Context, level 2
--------------------------

* ``traceparent`` is parsed strictly (lower-case hex, no all-zero ids,
  version ``ff`` refused, version ``00`` exactly 55 characters, a later
  version read as ``00`` when a ``-`` or nothing follows the flags).  Flags
  other than sampled (``01``) and random-trace-id (``02``) are dropped.
* ``tracestate`` is parsed by the level-2 grammar: members are split on
  commas, surrounding spaces and tabs and empty members are dropped; an
  invalid key or value, or more than 32 members, drops the whole header;
  a duplicated key keeps its first value; when the result is longer than
  512 characters, members over 128 characters go first, then members from
  the right.  Only the cleaned value is ever sent on.  stacktrail adds no
  member of its own.
* A traced request sends ``00-<trace>-<current span>-<flags>`` with the
  sampled flag set; the random flag is the caller's when the trace id came
  in a ``traceparent``, else set when the trace id is ours or osprofiler's
  (a version 4 UUID: its right-most 7 bytes are random).
* A request that is not traced here still participates: the WSGI filter
  keeps the caller's trace id, random flag and tracestate, or makes a new
  random trace id when no valid ``traceparent`` came (``W3CContext``), and
  every outgoing call (``outgoing_headers``: the ``requests`` integration,
  RPC, ``web.get_trace_id_headers``) carries it with a fresh parent-id and
  the sampled flag clear, since nothing was recorded here.  Nothing is
  created for RPC messages or code that runs outside a request; an RPC
  message that carried a ``traceparent`` passes it on the same way.

Nothing here raises on what a peer sent, and nothing malformed is ever
sent on: bad input reads as "no trace context".
"""

import contextvars
import logging
import re
import time

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

SAMPLED = 0x01
RANDOM = 0x02

_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_MAX_TRACEPARENT = 512
_OWS = " \t"
_MAX_ID_TEXT = 64

TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_LENGTH = 512
TRACESTATE_LONG_MEMBER = 128
# 32 members of 513 characters and their commas, plus room for spaces and
# empty members: anything longer cannot be a valid list.
_MAX_TRACESTATE_INPUT = 20000
_TRACESTATE_MEMBER = re.compile(
    r"([a-z0-9][a-z0-9_\-*/@]{0,255})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])\Z")

# The W3C context of a request that is not traced here (see W3CContext).
untraced = contextvars.ContextVar("stacktrail_w3c_untraced", default=None)
_current = context.current


# --- W3C Trace Context -----------------------------------------------------

def parse_traceparent_fields(text):
    """(trace id int, span id int, flags) of a valid traceparent, or None.

    ``flags`` keeps only the bits this version defines (sampled, random).
    Never raises.
    """
    if not isinstance(text, str) or len(text) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.match(text.strip(_OWS))
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_int = int(trace_id, 16)
    if trace_int == 0 or int(span_id, 16) == 0:
        return None
    return (trace_int, ids.from_w3c_span(trace_id, span_id),
            int(flags, 16) & (SAMPLED | RANDOM))


def parse_traceparent(text):
    """(trace id int, span id int, sampled) of a valid traceparent, or None.

    Strict: lower-case hex, no all-zero ids, version ff refused, version 00
    exactly 55 characters; later versions may append fields.
    """
    fields = parse_traceparent_fields(text)
    if fields is None:
        return None
    return fields[0], fields[1], bool(fields[2] & SAMPLED)


def format_traceparent(base_id, span_id, sampled=True, random=False):
    """A version 00 traceparent; its ids are never all zero."""
    return "00-%032x-%016x-%02x" % (
        ids.w3c_trace_int(base_id), ids.w3c_span_int(span_id),
        (SAMPLED if sampled else 0) | (RANDOM if random else 0))


def clean_tracestate(text):
    """The tracestate to pass on (level-2 rules, see the module), or None."""
    if not isinstance(text, str) or not text or \
            len(text) > _MAX_TRACESTATE_INPUT:
        return None
    members = []
    seen = set()
    count = 0
    for raw in text.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        count += 1
        if count > TRACESTATE_MAX_MEMBERS:
            return None
        match = _TRACESTATE_MEMBER.match(member)
        if match is None:
            return None
        key = match.group(1)
        if key not in seen:
            seen.add(key)
            members.append(member)
    state = ",".join(members)
    if len(state) > TRACESTATE_MAX_LENGTH:
        members = [m for m in members if len(m) <= TRACESTATE_LONG_MEMBER]
        while len(",".join(members)) > TRACESTATE_MAX_LENGTH:
            members.pop()
        state = ",".join(members)
    return state or None


def _sendable(value):
    """Text that is valid in an HTTP header and an RPC context: printable
    ASCII, no CR/LF.  A last check on what we send, never on input."""
    return isinstance(value, str) and value.isascii() and value.isprintable()


class W3CContext:
    """The W3C context of a request that is not traced here.

    Made from the caller's ``traceparent``/``tracestate`` text, which is
    parsed only when a first outgoing call needs it (a request that calls
    nothing pays nothing).  No valid ``traceparent`` and ``create``: a new
    random trace id is made then, and kept for the request's other calls.
    Each outgoing call gets a fresh parent-id and the sampled flag clear:
    nothing was recorded here.
    """

    # Class attributes as defaults: ``W3CContext()``, what most requests
    # make, sets nothing (a third cheaper than an __init__).
    trace_id = None
    flags = RANDOM
    tracestate = None
    raw = None
    create = True

    @classmethod
    def incoming(cls, traceparent, tracestate=None, create=True):
        """The context of a caller's header text (parsed on first use)."""
        carried = cls()
        if traceparent:
            carried.raw = (traceparent, tracestate)
        carried.create = create
        return carried

    def _resolve(self):
        traceparent, tracestate = self.raw
        self.raw = None
        parent = parse_traceparent_fields(traceparent)
        if parent is not None:
            self.trace_id = parent[0]
            self.flags = parent[2] & RANDOM
            self.tracestate = clean_tracestate(tracestate)

    def headers(self):
        if self.raw is not None:
            self._resolve()
        if self.trace_id is None:
            if not self.create:
                return {}
            self.trace_id = ids.new_id()  # random: the RANDOM flag holds
            self.flags = RANDOM
        headers = {TRACEPARENT: "00-%032x-%016x-%02x" % (
            self.trace_id, ids.new_span64(), self.flags)}
        if self.tracestate and _sendable(self.tracestate):
            headers[TRACESTATE] = self.tracestate
        return headers


# --- osprofiler signed trace info ------------------------------------------

def _id_text(value):
    """An id a peer may send: short printable ASCII text."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_TEXT and \
        value.isascii() and value.isprintable()


def _fresh(expiry, ttl):
    """A signed expiry (unix seconds) that has not passed and does not
    claim more life than ``ttl`` seconds (plus a minute of clock skew)."""
    if type(expiry) is not int:
        return False
    now = time.time()
    return now <= expiry <= now + ttl + 60


def unpack_trace_info(packed, mac, keys, require_expiry=False, ttl=None):
    """(base_id, parent_id, key) of a valid signed header or token, or None.

    The signed data is ``{"base_id", "parent_id"}`` (osprofiler's headers,
    which carry no expiry) or the same with ``"exp"``, unix seconds after
    which it is refused; ``require_expiry`` refuses data without one (our
    RPC token).  Never raises.
    """
    unpacked = signing.unpack(packed, mac, keys)
    if unpacked is None:
        return None
    data, key = unpacked
    if not set(data) <= {"base_id", "parent_id", "exp"} or \
            not _id_text(data.get("base_id")):
        return None
    if "exp" in data or require_expiry:
        if not _fresh(data.get("exp"), settings.current.signed_token_ttl
                      if ttl is None else ttl):
            LOG.debug("stacktrail: stale or unbounded signed trace refused")
            return None
    parent = data.get("parent_id")
    if parent is not None and not _id_text(parent):
        return None
    return data["base_id"], parent, key


def signed_token(base_id, parent_id, key, ttl=None):
    """(packed, hmac) of an RPC trace token that expires in ``ttl`` s."""
    ttl = settings.current.signed_token_ttl if ttl is None else ttl
    return signing.pack({"base_id": base_id, "parent_id": parent_id,
                         "exp": int(time.time()) + int(ttl)}, key)


# --- decisions ---------------------------------------------------------------

def samples(live):
    """Whether anything but a signed trigger can start a trace here: head
    sampling, a central sampling policy, or a trusted ``traceparent``.
    When not, a request without a trigger is not traced whatever else it
    carries (its W3C context is only passed on)."""
    return live.sampling_rate > 0 or live.policy is not None or \
        live.trust_traceparent


def head_rate(live, operation=None, path=None):
    """(share of such requests to trace, whether the cap applies): the
    live rate, refined by the central policy's always-keep rules and
    operation rates when the caller names the request."""
    policy = live.policy
    if policy is None or (operation is None and path is None):
        return live.sampling_rate, True
    if policy.always_keeps(path, operation):
        return 1.0, False
    return policy.rates["operation"].get(operation, live.sampling_rate), True


def start_from_headers(get_header, keys=None, participate=False,
                       operation=None, path=None):
    """Start a trace for an incoming request if one of the three ways says
    so; ``get_header(name)`` reads a request header.  Returns the profiler
    or None.  Bad headers only mean "not traced".  ``operation`` (the span
    the request opens: ``wsgi``, ``rpc``) and ``path`` let a central
    sampling policy's rules choose the sampling rate (``head_rate``).

    Not traced, the caller's W3C context (``traceparent``) is kept in
    ``untraced`` for outgoing calls; with ``participate`` (the WSGI filter)
    a new one is made when none (or an invalid one) came.
    """
    live = settings.current
    raw_parent = get_header(TRACEPARENT)
    packed, mac = get_header(X_TRACE_INFO), get_header(X_TRACE_HMAC)
    if packed or mac:
        signed = unpack_trace_info(
            packed, mac, live.validation_keys if keys is None else keys)
        if signed is None:
            LOG.debug("stacktrail: trace header not accepted (bad "
                      "signature, unknown key, expired or malformed)")
        elif live.signed_limiter.allow(signed[0]):
            base_id, parent_id, key = signed
            parent = parse_traceparent_fields(raw_parent)
            return join(key, base_id, parent_id, parent,
                        clean_tracestate(get_header(TRACESTATE))
                        if parent else None)
        else:
            LOG.debug("stacktrail: triggered trace refused by the rate "
                      "limit")
            signed = False  # not traced, and no other way may trace it
    else:
        signed = None
    if signed is None:
        rate, capped = head_rate(live, operation, path)
        parent = parse_traceparent_fields(raw_parent) \
            if raw_parent and (live.trust_traceparent or rate > 0) else None
        if parent is not None and parent[2] & SAMPLED and \
                live.trust_traceparent:
            if live.sampled_limiter.allow(parent[0]):
                return _init(live.signing_key, parent[0], parent[1],
                             parent[2] & RANDOM, get_header(TRACESTATE))
        elif sampling.sampled(rate) and \
                (not capped or live.sampled_limiter.allow()):
            if parent is not None:
                return _init(live.signing_key, parent[0], parent[1],
                             parent[2] & RANDOM, get_header(TRACESTATE))
            return _init(live.signing_key, None, None, RANDOM, None)
    carry_untraced(raw_parent, get_header(TRACESTATE) if raw_parent else None,
                   participate)
    return None


def carry_untraced(traceparent, tracestate=None, create=False):
    """Keep the W3C context of a request not traced here for the calls it
    makes (when ``propagation`` names w3c): the caller's ``traceparent``
    text, parsed on first use, or with ``create`` a new one when none."""
    if "w3c" not in settings.current.propagation:
        return
    if traceparent:
        untraced.set(W3CContext.incoming(traceparent, tracestate, create))
    elif create:
        untraced.set(W3CContext())


def join(key, base_id, parent_id, parent=None, state=None):
    """Start the trace a signed trigger names.  ``parent``/``state``: the
    parsed traceparent and clean tracestate that came with it; they are
    kept only when they name the same trace (else the W3C trace restarts:
    tracestate dropped, random flag from the id itself)."""
    prof = profiler.init(key, base_id=base_id, parent_id=parent_id)
    if parent is not None and parent[0] == ids.w3c_trace_int(prof.base_id):
        _w3c(prof, bool(parent[2] & RANDOM), state)
    else:
        _w3c(prof, ids.is_random_id(prof.base_id), None)
    return prof


def _init(key, base_id, parent_id, random, tracestate):
    """Start a trace from a traceparent (``base_id``) or a new one."""
    prof = profiler.init(key, base_id=base_id, parent_id=parent_id)
    if base_id:
        _w3c(prof, bool(random), clean_tracestate(tracestate))
    else:
        _w3c(prof, ids.is_random_id(prof.base_id), None)
    return prof


def _w3c(prof, random, tracestate):
    prof.tracestate = tracestate
    prof.w3c_random = random
    if untraced.get() is not None:
        untraced.set(None)


def _random_of(prof):
    random = getattr(prof, "w3c_random", None)
    if random is None:
        random = ids.is_random_id(prof.base_id)
        try:
            prof.w3c_random = random
        except AttributeError:
            pass
    return random


def w3c_headers():
    """``traceparent`` (and ``tracestate``) for the current position:
    the trace's, or the untraced request's W3C context ({} when neither,
    or when ``propagation`` leaves W3C out)."""
    if "w3c" not in settings.current.propagation:
        return {}
    frame = _current.get()
    if frame is None:
        carried = untraced.get()
        return {} if carried is None else carried.headers()
    return _traced_w3c(frame)


def _traced_w3c(frame):
    prof = frame.profiler
    headers = {TRACEPARENT: format_traceparent(
        prof.base_id, frame.span_id, True, _random_of(prof))}
    state = prof.tracestate
    if state and _sendable(state):
        headers[TRACESTATE] = state
    return headers


def outgoing_headers():
    """Headers that carry the current trace to a callee ({} when none).

    A request that is not traced here still gets its W3C context
    (``W3CContext``) when ``propagation`` names w3c.
    """
    frame = _current.get()
    if frame is None:
        carried = untraced.get()
        if carried is None or "w3c" not in settings.current.propagation:
            return {}
        return carried.headers()
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
        headers.update(_traced_w3c(frame))
    return headers


# --- RPC request context -----------------------------------------------------

def rpc_trace_info():
    """osprofiler's ``trace_info`` for an RPC context, or None."""
    prof = profiler.get()
    if prof is None:
        return None
    return {"hmac_key": prof.hmac_key, "base_id": prof.get_base_id(),
            "parent_id": prof.get_id()}


def start_from_trace_info(trace_info, keys=None, traceparent=None,
                          tracestate=None):
    """Join the trace an RPC caller put in its context; True if joined.

    Only when its ``hmac_key`` is one of ours (``keys``, default the live
    validation keys, compared in constant time): knowing the key is what
    lets a peer start a trace here.  ``traceparent``/``tracestate``: the
    W3C keys of the same context, used when they name the same trace.
    Never raises.
    """
    if not isinstance(trace_info, dict):
        return False
    key = signing.matching_key(
        trace_info.get("hmac_key"),
        settings.current.validation_keys if keys is None else keys)
    base_id = trace_info.get("base_id")
    if key is None or not _id_text(base_id):
        return False
    parent = trace_info.get("parent_id")
    w3c = parse_traceparent_fields(traceparent)
    join(key, base_id, parent if _id_text(parent) else None, w3c,
         clean_tracestate(tracestate) if w3c else None)
    return True
