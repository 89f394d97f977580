"""Trace and span ids: random integers on the request path, UUIDs on disk.

A span id is a 128-bit integer shaped like a version 4 UUID.  Its low 64 bits
are its W3C span-id and a base id is a W3C trace-id, so one trace reads the
same in osprofiler's format and in W3C Trace Context / OTLP.

A base id is random in all its 122 free bits.  A span id is drawn in two
halves: the high one once per process (and again in a forked child), the
low one per span (the variant bits, then 62 random bits).  One small draw
and one addition per span instead of a 128-bit draw and two masks: about
5 % of a start + stop pair (counted with callgrind).  Span ids stay unique
within a trace as long as 62 random bits do, and a trace is told apart
from another by its base id.
"""

import os
import random
import re

getrandbits = random.getrandbits
# The version and variant bits of a v4 UUID: cleared, then set.
ID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
ID_SET = (0x4000 << 64) | (0x8000 << 48)
LOW64 = (1 << 64) - 1


SPAN_LOW_BITS = 62
SPAN_HIGH = 0   # this process's high half of every span id, variant bits in


def _draw_span_high():
    global SPAN_HIGH
    SPAN_HIGH = (getrandbits(64) << 64) & ID_CLEAR | ID_SET


_draw_span_high()
os.register_at_fork(after_in_child=_draw_span_high)


def new_id():
    """A fresh random id (an int shaped as a version 4 UUID): a base id."""
    return getrandbits(128) & ID_CLEAR | ID_SET


def new_span_id():
    """A span's id (see the module); inlined in ``profiler``, where every
    span of the request path gets one."""
    return SPAN_HIGH + getrandbits(SPAN_LOW_BITS)


_texts = {}
_TEXTS_MAX = 4096


def to_uuid(value):
    """Format an id as the dashed UUID text osprofiler uses.

    A trace's base id and parent ids recur in every message, so recent
    texts are kept (the cache is simply emptied when it fills).
    """
    if type(value) is not int:
        return value
    text = _texts.get(value)
    if text is None:
        if len(_texts) >= _TEXTS_MAX:
            _texts.clear()
        h = "%032x" % value
        text = _texts[value] = (f"{h[:8]}-{h[8:12]}-{h[12:16]}-"
                                f"{h[16:20]}-{h[20:]}")
    return text


def to_int(value):
    """Parse an id written as a UUID (or any text) back to 128 bits.

    Text that is not a UUID, which osprofiler tolerates, is hashed so that it
    still maps to a stable W3C id.
    """
    if type(value) is int:
        return value
    text = str(value)
    try:
        number = int(text.replace("-", ""), 16)
    except ValueError:
        number = -1
    if len(text.replace("-", "")) != 32 or number <= 0:
        import hashlib
        number = int.from_bytes(hashlib.sha1(text.encode()).digest()[:16],
                                "big")
    return number


_CANONICAL = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def canonical_int(text):
    """The id of canonical (lower-case, dashed) UUID text, else None: such
    text comes back unchanged from ``to_uuid``."""
    if type(text) is str and _CANONICAL.match(text):
        return int(text.replace("-", ""), 16) or None
    return None


def is_uuid(text):
    """True for dashed or plain 32-digit hex text that is not all zeros."""
    if not isinstance(text, str):
        return False
    plain = text.replace("-", "") if len(text) == 36 else text
    if len(plain) != 32:
        return False
    try:
        return int(plain, 16) != 0
    except ValueError:
        return False


def trace_id_hex(base_id):
    """W3C trace-id (32 lower-case hex digits) of a base id."""
    return "%032x" % to_int(base_id)


def span_id_hex(span_id):
    """W3C span-id (16 lower-case hex digits): the low 64 bits of the id."""
    return "%016x" % (to_int(span_id) & LOW64)


def from_w3c_span(trace_id, span_id):
    """The id whose low 64 bits are a W3C span-id, high bits from its trace."""
    return (int(trace_id, 16) & ~LOW64) | int(span_id, 16)


def w3c_span_int(span_id):
    """The W3C span-id of an id as an int, never 0 (all-zero is invalid):
    an id whose low 64 bits are zero uses its high bits, else 1."""
    value = to_int(span_id)
    return value & LOW64 or (value >> 64) & LOW64 or 1


def w3c_trace_int(base_id):
    """The W3C trace-id of a base id as an int, never 0 and never wider
    than 128 bits."""
    value = to_int(base_id)
    if 0 < value < 1 << 128:
        return value
    return to_int("w3c:%s" % value)


def new_span64():
    """A fresh random, non-zero 64-bit W3C span-id."""
    return getrandbits(64) or 1


def is_random_id(value):
    """True for an id shaped as a version 4 UUID (ours and osprofiler's):
    its right-most 7 bytes are random, so W3C's random-trace-id flag holds."""
    return type(value) is int and (value >> 76) & 0xF == 4 and \
        (value >> 62) & 0x3 == 2
