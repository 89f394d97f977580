"""The report as one self-contained HTML page: an interactive waterfall.

The page works offline: its CSS and JS come from ``assets/`` and are
inlined, nothing is fetched (a Content-Security-Policy forbids it anyway).
The report travels as JSON in a ``<script type="application/json">``
block with ``<``, ``>`` and ``&`` written as ``\\u003c``-style escapes, so
no string in the trace can close the block or start markup; the script
builds the DOM with ``textContent`` only.
"""

import json
import pathlib
import re

from stacktrail.drivers import codec
from stacktrail.report import aggregate
from stacktrail.report import as_json
from stacktrail.report import text

ASSETS = pathlib.Path(__file__).with_name("assets")
_SLOT = re.compile(r"/\*STACKTRAIL_(CSS|JS|DATA|NOISE)\*/")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(value):
    """JSON text that is inert inside an HTML script element (any depth:
    a trace nested thousands of spans deep is written without
    recursion)."""
    # One call to the compiled codec, unless it is off or refuses the
    # value (nested deeper than it goes); then the stdlib's, which
    # recurses further but is slower than dumps_deep with the compiled
    # codec; what both refuse (a key JSON has no text for) is walked.
    dumped = codec.dumps_text(value, str)
    if dumped is None and not codec.FAST:
        try:
            dumped = json.dumps(value, default=str, separators=(",", ":"))
        except (RecursionError, TypeError):
            pass
    if dumped is None:
        dumped = as_json.dumps_deep(value, separators=(",", ":"))
    # Outside strings JSON has none of these: escape them all.
    for char, escape in _JSON_ESCAPES.items():
        if char in dumped:
            dumped = dumped.replace(char, escape)
    return dumped


def _asset(name):
    return (ASSETS / name).read_text(encoding="utf-8")


def _inline(name):
    body = _asset(name)
    # Inlined verbatim: it must not be able to end its own element.
    if re.search(r"</(script|style)", body, re.IGNORECASE):
        raise ValueError("asset %s contains a closing tag" % name)
    return body


def render(report, show_noise=False, other=None):
    """The page; transaction statements and pings are hidden until asked
    for (a toolbar button), or shown from the start with ``show_noise``.
    With ``other`` (a second trace's report) the page also compares the
    two: what got slower, per service and span kind."""
    text.ensure_analysis(report)
    data = report
    if other is not None:
        # Only the comparison travels, not the other trace's spans.
        data = dict(report, comparison=aggregate.compare(
            report, text.ensure_analysis(other)))
    parts = {"CSS": _inline("report.css"), "JS": _inline("report.js"),
             "DATA": embed_json(data),
             "NOISE": "true" if show_noise else "false"}
    # One pass over the template: text inserted for one slot is never
    # scanned for another, whatever the trace contains.
    return _SLOT.sub(lambda m: parts[m.group(1)], _asset("template.html"))


def render_analysis(answer):
    """``stacktrail analyze`` as one offline page: latency histogram,
    where the critical path went (stacked shares) and, with a baseline,
    each kind's part in the change (diverging bars)."""
    parts = {"CSS": _inline("analyze.css"), "JS": _inline("analyze.js"),
             "DATA": embed_json(answer)}
    return _SLOT.sub(lambda m: parts[m.group(1)], _asset("analyze.html"))
