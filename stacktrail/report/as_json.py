"""The report as JSON (osprofiler's structure plus our keys).

``json.dumps`` recurses once per nesting level, and with ``indent`` it is
the pure-Python encoder, whose generators pass every chunk up through each
level: a trace nested a few hundred spans deep fails with RecursionError
(after seconds of quadratic work).  ``dumps_deep`` writes the same text
with a loop and an explicit stack, in linear time, at any depth; past
SPINE_INDENT_LEVELS levels of nodes the indentation stops growing so that
the output stays linear in size.  With the compiled codec (orjson, the
``fast`` extra) each node but its children is written by one call of it.
"""

import json
from json import encoder as _encoder
import re

from stacktrail.drivers import codec

# The key whose values ``dumps_deep`` walks itself (a node's children):
# only these nest as deep as the trace.
SPINE_KEY = "children"
# Deep traces: the nodes' indentation stops growing at this level, so that
# the output stays linear in size (and not mostly blanks); no line is
# indented deeper than MAX_INDENT_LEVELS.
SPINE_INDENT_LEVELS = 12
MAX_INDENT_LEVELS = 40
# (indent, separators) the compiled codec writes: json.dumps(indent=2)'s
# and the compact one.
_FAST_LAYOUTS = ((2, (",", ": ")), (None, (",", ":")))
_CONTAINERS = (dict, list, tuple)
_quote = _encoder.encode_basestring_ascii


def render(report, show_noise=False, out=None):
    """The whole report.  Every span is in it whatever ``show_noise`` says:
    transaction statements and pings are flagged (``info["noise"]``) and
    folded into their neighbours in ``critical_path`` (``folded``).

    With ``out`` (a file's ``write``) the text goes there piece by piece
    and None is returned: a million-point report is never held whole."""
    # Raw payloads may hold what a store handed back (datetimes, bytes):
    # those become text rather than failing the whole report.
    text = dumps_deep(report, indent=2, default=str, out=out) + "\n"
    if out is None:
        return text
    out(text)
    return None


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


def dumps_deep(value, indent=None, separators=None, default=str, out=None):
    """``json.dumps(value, indent=..., separators=..., default=...)``
    without recursion: any nesting depth, linear time.

    The spine (the top value, lists in it and the values under SPINE_KEY:
    a report's nodes and their children lists) is walked here, and its
    indentation stops growing at SPINE_INDENT_LEVELS; the values hanging
    off it are indented from there, up to MAX_INDENT_LEVELS in all.  Those
    values (a span's info, the stats, the critical path) are shallow: when
    the compiled codec is on and writes the layout asked for, each goes to
    it in one call (a node with all but its children); what it refuses is
    walked here.  With ``out``, the text is handed to ``out`` in pieces
    as it is made but its last piece, which is returned."""
    if separators is None:
        separators = (",", ": ") if indent is not None else (", ", ": ")
    if not isinstance(value, _CONTAINERS):
        return _scalar(value, default)
    return _Writer(indent, separators, default, out).write(value)


# Pieces of text a writer with ``out`` gathers before handing them on.
_OUT_PIECES = 1 << 14


class _Writer:
    """One ``dumps_deep`` call: the text so far and the open containers."""

    def __init__(self, indent, separators, default, out=None):
        self.out = out
        self.indent = indent
        self.item_sep, self.key_sep = separators
        self.default = default
        self.fast = codec.FAST and (indent, separators) in _FAST_LAYOUTS
        self.parts = []
        self.stack = []
        self.active = set()     # ids of the open containers: cycles
        self.pads = {}
        self.heads = {}         # (key, line) -> the text before its value
        self.capped = {}        # room -> (the pad at the cap, its regex)

    def pad(self, level):
        text = self.pads.get(level)
        if text is None:
            text = self.pads[level] = (
                "" if self.indent is None else
                "\n" + " " * (self.indent * level))
        return text

    def head(self, key, line):
        text = self.heads.get((key, line))
        if text is None:
            text = self.heads[key, line] = line + _key(key) + self.key_sep
        return text

    def open(self, container, level, spine, owner=None, after=""):
        """Start a container at an indentation level; ``owner`` is the
        node whose children it holds, ``after`` the text that ends it."""
        if id(container) in self.active:
            raise ValueError("Circular reference detected")
        self.active.add(id(container))
        is_dict = isinstance(container, dict)
        self.parts.append("{" if is_dict else "[")
        items = iter(container.items()) if is_dict else iter(container)
        # Nodes in a children list stop moving right at the spine's cap.
        cap = SPINE_INDENT_LEVELS if spine and not is_dict \
            else MAX_INDENT_LEVELS
        self.stack.append([items, is_dict, level, True, container, spine,
                           min(level + 1, cap), owner, after])

    def write(self, value):
        append = self.parts.append
        item_sep, default, pad = self.item_sep, self.default, self.pad
        fast = self.fast
        self.open(value, 0, True)
        stack = self.stack
        parts, out = self.parts, self.out
        while stack:
            if out is not None and len(parts) > _OUT_PIECES:
                out("".join(parts))
                parts.clear()   # the same list: ``append`` still fills it
            frame = stack[-1]
            items, is_dict, level, first, container, spine, inner = frame[:7]
            line = pad(inner)
            # The items of this container up to the next one to walk.
            for item in items:
                if first:
                    first = False
                else:
                    append(item_sep)
                if is_dict:
                    key, item = item
                    append(self.head(key, line))
                else:
                    append(line)
                cls = item.__class__
                if cls is str:
                    append(_quote(item))
                elif cls is not dict and cls is not list and not isinstance(
                        item, _CONTAINERS):
                    append(_scalar(item, default))
                elif not item:
                    append("{}" if isinstance(item, dict) else "[]")
                elif not fast:
                    frame[3] = False
                    self.open(item, inner,
                              spine and (not is_dict or key == SPINE_KEY))
                    break
                elif not spine:
                    frame[3] = False
                    self.open(item, inner, False)
                    break
                elif is_dict and key != SPINE_KEY:
                    text = self.encode(item, inner)
                    if text is None:
                        frame[3] = False
                        self.open(item, inner, False)
                        break
                    append(text)
                elif not is_dict and self.node(item, inner):
                    if stack[-1] is not frame:
                        frame[3] = False
                        break
                else:
                    frame[3] = False
                    self.open(item, inner, True)
                    break
            else:
                stack.pop()
                self.active.discard(id(container))
                if not first:
                    append(pad(level))
                append("}" if is_dict else "]")
                if frame[7] is not None:
                    self.active.discard(id(frame[7]))
                    append(frame[8])
        return "".join(self.parts)

    def node(self, node, level):
        """Write a node of a children list but its children through the
        codec in one call, and open its children list when it has some;
        False when it is not a dict whose last key is SPINE_KEY holding a
        list, or the codec refuses the rest."""
        if node.__class__ is not dict or len(node) < 2:
            return False
        last = next(reversed(node))
        kids = node[last]
        if last != SPINE_KEY or kids.__class__ is not list:
            return False
        if id(node) in self.active:
            raise ValueError("Circular reference detected")
        rest = node.copy()
        del rest[last]
        text = self.encode(rest, level)
        if text is None:
            return False
        end = self.pad(level) + "}"   # the codec's text ends so
        self.parts.append(text[:-len(end)] + self.item_sep
                          + self.head(last, self.pad(level + 1)))
        if not kids:
            self.parts.append("[]" + end)
            return True
        self.active.add(id(node))
        self.open(kids, level + 1, True, owner=node, after=end)
        return True

    def encode(self, value, level):
        """The compiled codec's text of a container at an indentation
        level, its lines capped as the walk caps them; None when the
        codec refuses it."""
        text = codec.dumps_text(value, self.default, self.indent is not None)
        if text is None or self.indent is None:
            return text
        room = MAX_INDENT_LEVELS - level   # levels left for its lines
        cap = self.capped.get(room)
        if cap is None:
            cap = self.capped[room] = (
                "\n" + "  " * room, re.compile("\n {%d,}" % (2 * room + 1)))
        if cap[0] + " " in text:  # rare: a value nested that deep
            # JSON text has no raw newline but between lines.
            text = cap[1].sub(cap[0], text)
        return text.replace("\n", self.pad(level)) if level else text
