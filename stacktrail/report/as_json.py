"""The report as JSON (osprofiler's structure plus our keys).

``json.dumps`` recurses once per nesting level, and with ``indent`` it is
the pure-Python encoder, whose generators pass every chunk up through each
level: a trace nested a few hundred spans deep fails with RecursionError
(after seconds of quadratic work).  ``dumps_deep`` writes the same text
with a loop and an explicit stack, in linear time (faster than
``json.dumps(indent=2)`` on flat reports too), at any depth; past
MAX_INDENT_LEVELS levels the indentation stops growing so that the output
stays linear in size.
"""

import json
from json import encoder as _encoder

MAX_INDENT_LEVELS = 40
_CONTAINERS = (dict, list, tuple)
_quote = _encoder.encode_basestring_ascii


def render(report, show_noise=False):
    """The whole report.  Every span is in it whatever ``show_noise`` says:
    transaction statements and pings are flagged (``info["noise"]``) and
    folded into their neighbours in ``critical_path`` (``folded``)."""
    # Raw payloads may hold what a store handed back (datetimes, bytes):
    # those become text rather than failing the whole report.
    return dumps_deep(report, indent=2, default=str) + "\n"


def _float(value):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _scalar(value, default):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    replaced = default(value)
    if isinstance(replaced, _CONTAINERS):
        raise TypeError("default must return a scalar here")
    return _scalar(replaced, default)


def _key(key):
    if isinstance(key, str):
        return _quote(key)
    if key is True or key is False or key is None:
        return '"%s"' % json.dumps(key)
    if isinstance(key, float):
        return '"%s"' % _float(key)
    if isinstance(key, int):
        return '"%d"' % key
    return _quote(str(key))


def dumps_deep(value, indent=None, separators=None, default=str):
    """``json.dumps(value, indent=..., separators=..., default=...)``
    without recursion: any nesting depth, linear time.  Indentation is
    capped at MAX_INDENT_LEVELS levels."""
    if separators is None:
        separators = (",", ": ") if indent is not None else (", ", ": ")
    item_sep, key_sep = separators
    if not isinstance(value, _CONTAINERS):
        return _scalar(value, default)
    pads = {}

    def pad(depth):
        text = pads.get(depth)
        if text is None:
            text = pads[depth] = "\n" + " " * (
                indent * min(depth, MAX_INDENT_LEVELS))
        return text

    parts = []
    append = parts.append
    active = set()

    def open_(container, depth):
        if id(container) in active:
            raise ValueError("Circular reference detected")
        active.add(id(container))
        is_dict = isinstance(container, dict)
        append("{" if is_dict else "[")
        items = iter(container.items()) if is_dict else iter(container)
        return [items, is_dict, depth, True, container]

    stack = [open_(value, 0)]
    while stack:
        frame = stack[-1]
        items, is_dict, depth, first, container = frame
        try:
            item = next(items)
        except StopIteration:
            stack.pop()
            active.discard(id(container))
            if indent is not None and not first:
                append(pad(depth))
            append("}" if is_dict else "]")
            continue
        if not first:
            append(item_sep)
        frame[3] = False
        if indent is not None:
            append(pad(depth + 1))
        if is_dict:
            key, item = item
            append(_key(key))
            append(key_sep)
        if isinstance(item, _CONTAINERS):
            if not item:
                append("{}" if isinstance(item, dict) else "[]")
            else:
                stack.append(open_(item, depth + 1))
        else:
            append(_scalar(item, default))
    return "".join(parts)
