"""The report as a readable text tree for a terminal.

    span                                   duration  @start(ms)  where
    total                                120.000 ms  @0.000
    └─ * wsgi  POST /servers -> 202      120.000 ms  @0.000       api@c1
       ├─   db  SELECT uuid FROM i…        2.000 ms  @1.000       api@c1
       └─ * rpc  call conductor.build    110.000 ms  @5.000       cnd@c2  ! bad

Each span is its point name and, after it, what it did
(``stacktrail.report.describe``).  ``*`` marks the critical path, ``!`` an
error; then the critical path and the spans with the most self time (the
bottleneck) are listed.
"""

from stacktrail.report import analysis
from stacktrail.report import describe

MAX_INDENT = 60
LEGEND = "* on the critical path   ! error   ~ open (no stop recorded)"


def fmt_us(us):
    """Milliseconds with microsecond precision, seconds when long."""
    if us is None:
        return "?"
    if abs(us) >= 10_000_000:
        return "%.3f s" % (us / 1e6)
    return "%.3f ms" % (us / 1000)


def clean(value):
    """Text safe for a terminal: control characters (newlines, escape
    sequences from a hostile span name) are shown escaped, not obeyed."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def where(info):
    service, host = info.get("service"), info.get("host")
    if service and host:
        return "%s@%s" % (clean(service), clean(host))
    return clean(service or host or "")


def named(info):
    """The point name, then what the span did when that is known."""
    name = clean(info.get("name"))
    detail = info.get("detail")
    return "%s  %s" % (name, clean(detail)) if detail else name


def _count(number, noun):
    return "%d %s%s" % (number, noun, "" if number == 1 else "s")


def _flags(info):
    flags = []
    if info.get("error"):
        flags.append("! " + clean(info.get("error_message") or "error"))
    if info.get("open"):
        flags.append("~ open: no stop recorded")
    if info.get("missing_start"):
        flags.append("no start recorded")
    if info.get("orphan"):
        flags.append("parent not found")
    return "  ".join(flags)


def _tree_lines(report):
    """One line per span, drawn with box characters, without recursion."""
    lines = []
    # Each stack entry: node, the prefix for its line, the prefix for its
    # children's lines.
    stack = []
    children = report.get("children", [])
    for i, child in reversed(list(enumerate(children))):
        last = i == len(children) - 1
        stack.append((child, "└─ " if last else "├─ ",
                      "   " if last else "│  "))
    while stack:
        node, prefix, inner = stack.pop()
        info = node["info"]
        mark = "*" if info.get("critical") else " "
        if len(prefix) > MAX_INDENT:  # very deep traces: keep lines usable
            prefix = "…" + prefix[-(MAX_INDENT - 1):]
        label = "%s%s %s" % (prefix, mark, named(info))
        lines.append((label, info))
        kids = node.get("children", [])
        for i, child in reversed(list(enumerate(kids))):
            last = i == len(kids) - 1
            stack.append((child, inner + ("└─ " if last else "├─ "),
                          inner + ("   " if last else "│  ")))
    return lines


def _span_lines(report):
    """The column header, the total, then one line per span."""
    info = report["info"]
    rows = [("span", None), ("total", info)] + _tree_lines(report)
    width = min(max((len(label) for label, _ in rows), default=10), 80)
    out = []
    for label, info in rows:
        if info is None:
            out.append("%-*s  %12s  %-11s %s" % (width, label, "duration",
                                                 "@start(ms)", "where"))
            continue
        columns = ["%-*s" % (width, label),
                   "%12s" % fmt_us(info.get("duration_us")),
                   "@%-10s" % ("%.3f" % (info["started_us"] / 1000)),
                   where(info)]
        flags = _flags(info)
        if flags:
            columns.append(flags)
        out.append("  ".join(columns).rstrip())
    return out


def _header(report):
    info = report["info"]
    head = "Trace %s" % clean(info.get("base_id") or "?")
    if info.get("started_at"):
        head += "  started %s UTC" % clean(info["started_at"])
    parts = ["total %s" % fmt_us(info.get("finished_us")),
             _count(info.get("span_count", 0), "span")]
    if info.get("error_count"):
        parts.append("%d with errors" % info["error_count"])
    if info.get("open_count"):
        parts.append("%d open" % info["open_count"])
    if info.get("services"):
        parts.append("services: %s" % ", ".join(map(clean,
                                                    info["services"])))
    return [head, "  ".join(parts), LEGEND, ""]


def _entry_line(entry, value):
    flags = " !" if entry.get("error") else ""
    flags += " ~open" if entry.get("open") else ""
    place = where(entry)
    return "%s%s%s  %s" % (named(entry),
                           " [%s]" % place if place else "", flags, value)


def _summary(report):
    total = max(1, report["info"].get("finished_us") or 1)
    path = report["critical_path"]
    # A long path is dominated by a few spans: list those that held the
    # trace up for at least 1 % of its time.
    shown = [e for e in path if len(path) <= 40
             or e.get("critical_us", 0) * 100 >= total]
    lines = ["", "Critical path (%s):" % _count(len(path), "span")]
    for entry in shown:
        depth = entry["depth"]
        indent = "  " * min(depth, 10) + ("[depth %d] " % depth
                                          if depth > 10 else "")
        lines.append("  %s%s" % (indent, _entry_line(
            entry, "%s of %s on the path" % (
                fmt_us(entry.get("critical_us")),
                fmt_us(entry["duration_us"])))))
    if len(shown) < len(path):
        lines.append("  (%d spans under 1 %% of the total not shown; "
                     "--json has them all)" % (len(path) - len(shown)))
    lines += ["", "Bottleneck: spans with the most self time "
              "(time not spent in traced children):"]
    for rank, entry in enumerate(report["top_self_time"][:5], 1):
        if entry["self_us"] <= 0:
            break
        lines.append("  %d. %s" % (rank, _entry_line(
            entry, "%s self (%.1f%% of total), %s in all"
            % (fmt_us(entry["self_us"]), 100.0 * entry["self_us"] / total,
               fmt_us(entry["duration_us"])))))
    return lines


def ensure_analysis(report):
    """Annotate a report that was loaded rather than built (e.g. one saved
    by osprofiler) so every renderer can rely on our keys."""
    describe.ensure(report)
    if ("critical_path" not in report or "top_self_time" not in report
            or report["info"].get("started_us") is None):
        analysis.annotate(report)
    return report


def render(report):
    ensure_analysis(report)
    if not report.get("children"):
        return "Trace %s has no spans.\n" % clean(
            report["info"].get("base_id") or "?")
    lines = _header(report) + _span_lines(report) + _summary(report)
    return "\n".join(lines) + "\n"
