"""JSON through a compiled codec when one is installed, else the stdlib.

``pip install 'stacktrail[fast]'`` brings orjson (and hiredis, which
redis-py picks up by itself).  Without it everything here falls back to
the standard library's C-accelerated ``json`` and stays correct, only
slower.  The choice is made once at import; ``use(False)`` forces the
pure standard-library path (tests and benchmarks compare both), as does
``STACKTRAIL_NO_FAST=1`` in the environment for a whole process.

What the two paths may write differently (both are valid JSON and decode
to the same data, except for the values JSON cannot hold):

* orjson writes non-ASCII text as UTF-8, the stdlib as ``\\uXXXX``;
* NaN and infinities: orjson writes ``null``, the stdlib ``NaN``;
* values JSON cannot hold become ``repr()`` text on both paths, except
  ``uuid.UUID`` and ``enum`` members, which orjson writes as their text
  and value.

Reading accepts what either path wrote: a document orjson refuses (NaN,
a lone surrogate escape) is read again by the stdlib.
"""

import json
from json import scanner as _scanner
import os

try:  # the optional compiled codec
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

AVAILABLE = _orjson is not None
FAST = AVAILABLE and not os.environ.get("STACKTRAIL_NO_FAST")

# Datetimes and dataclasses go through ``default`` (repr), as with the
# stdlib encoder, rather than orjson's own formats.
_ORJSON_OPTIONS = 0
_TEXT_OPTIONS = _INDENT_OPTIONS = 0
if _orjson is not None:
    _ORJSON_OPTIONS = (_orjson.OPT_PASSTHROUGH_DATETIME
                       | _orjson.OPT_PASSTHROUGH_DATACLASS)
    # ``dumps_text``: keys written as ``json.dumps`` writes them.
    _TEXT_OPTIONS = _ORJSON_OPTIONS | _orjson.OPT_NON_STR_KEYS
    _INDENT_OPTIONS = _TEXT_OPTIONS | _orjson.OPT_INDENT_2

# What the compiled codec raises for a value it will not write (non-text
# keys, ints past 64 bits, lone surrogates, nesting past 255 levels).
_REFUSED = (TypeError, ValueError, RecursionError, OverflowError)

# The stdlib side: one encoder built once (json.dumps builds one per call),
# skipping keys JSON cannot hold and writing other values as repr() text;
# no circular-reference markers (a cycle fails with RecursionError, which
# callers treat as "cannot encode").
_std_encode = json.JSONEncoder(separators=(",", ":"), skipkeys=True,
                               default=repr, check_circular=False).encode
_std_loads = json.loads
_scan_once = _scanner.make_scanner(json.JSONDecoder())
_WHITESPACE = " \t\n\r"


def use(fast):
    """Use the compiled codec (when installed) or force the stdlib."""
    global FAST
    FAST = bool(fast) and AVAILABLE
    return FAST


def name():
    return "orjson" if FAST else "json (stdlib)"


def _repr(value):
    return repr(value)


def dumps(value):
    """Compact JSON text (str) of ``value``; values JSON cannot hold become
    repr() text, keys it cannot hold are left out.  Raises TypeError,
    ValueError or RecursionError when even that fails (a cycle, nesting
    deeper than the thread may go)."""
    if FAST:
        try:
            return _orjson.dumps(value, default=_repr,
                                 option=_ORJSON_OPTIONS).decode()
        except _REFUSED:
            pass   # non-text keys, big ints, lone surrogates, deep nesting
    return _std_encode(value)


def dumps_bytes(value):
    """``dumps(value)`` as UTF-8 bytes (lone surrogates passed through)."""
    if FAST:
        try:
            return _orjson.dumps(value, default=_repr,
                                 option=_ORJSON_OPTIONS)
        except _REFUSED:
            pass
    return _std_encode(value).encode("utf-8", "surrogatepass")


def dumps_text(value, default=_repr, indent=False):
    """``json.dumps(value, default=default, separators=(",", ":"))``, or
    with ``indent`` ``json.dumps(value, indent=2, default=default)``, by
    the compiled codec; None when it is off or refuses the value (a lone
    surrogate, an int beyond 64 bits, a key it cannot write, nesting past
    its limit of 255 levels): the caller falls back to its own encoder.
    Non-ASCII text is written as UTF-8, NaN and infinities as null."""
    if not FAST:
        return None
    try:
        return _orjson.dumps(value, default=default, option=(
            _INDENT_OPTIONS if indent else _TEXT_OPTIONS)).decode()
    except _REFUSED:
        return None


def loads(data):
    """A JSON document (str or bytes); ValueError when it is not one."""
    if FAST:
        try:
            return _orjson.loads(data)
        except ValueError:
            pass   # NaN, a lone surrogate escape: the stdlib takes those
    try:
        return _std_loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads_each(items):
    """Decode a sequence of JSON documents (bytes or str).

    Returns (values, bad) where ``bad`` lists the indexes of the items
    that are not JSON (they are left out of ``values``).  Each item is
    decoded on its own, so a junk record can never shift its neighbours.
    """
    values = []
    bad = []
    append = values.append
    if FAST:
        decode = _orjson.loads
        for index, item in enumerate(items):
            try:
                append(decode(item))
            except ValueError:
                try:
                    append(_slow_one(item))
                except ValueError:
                    bad.append(index)
        return values, bad
    scan = _scan_once
    for index, item in enumerate(items):
        try:
            text = item.decode("utf-8") if item.__class__ is bytes else item
            value, end = scan(text, 0)
            if end != len(text) and text[end:].strip(_WHITESPACE):
                raise ValueError("extra data")
        except (StopIteration, ValueError, UnicodeDecodeError,
                AttributeError, RecursionError):
            try:
                value = _slow_one(item)
            except ValueError:
                bad.append(index)
                continue
        append(value)
    return values, bad


def _slow_one(item):
    try:
        return _std_loads(item)
    except (TypeError, RecursionError):
        raise ValueError("not JSON") from None


# Between the values of one ``dumps_each`` call: a raw newline, which the
# encoder never writes inside a value (control characters are escaped).
# (orjson.Fragment came with orjson 3.9.11; an older one takes the loop.)
_FRAGMENT = getattr(_orjson, "Fragment", None)
_EACH_SEPARATOR = _FRAGMENT(b"\n") if _FRAGMENT is not None else None


def dumps_each(values):
    """``[dumps(value) for value in values]``, the same texts; with the
    compiled codec in one call for the whole list (a call costs several
    times what encoding a small value does), cut apart at separators."""
    if FAST and values and _EACH_SEPARATOR is not None:
        parts = [_EACH_SEPARATOR] * (2 * len(values))
        parts[::2] = values
        try:
            text = _orjson.dumps(parts, default=_repr,
                                 option=_ORJSON_OPTIONS).decode()
        except _REFUSED:
            pass   # one value it refuses: each on its own, as ``dumps``
        else:
            texts = text[1:-3].split(",\n,")
            if len(texts) == len(values):   # no raw newline in a value
                return texts
    return [dumps(value) for value in values]
