"""The report as a readable text tree for a terminal.

    span                                   duration  @start(ms)  where
    total                                120.000 ms  @0.000
    └─ * wsgi  POST /servers -> 202      120.000 ms  @0.000       api@c1
       ├─   db  SELECT uuid FROM i…        2.000 ms  @1.000       api@c1
       └─ * rpc  call conductor.build    110.000 ms  @5.000       cnd@c2  ! bad

Each span is its point name and, after it, what it did
(``stacktrail.report.describe``).  ``*`` marks the critical path, ``!`` an
error; a span that started after its parent had returned (an RPC cast
served later, a spawned greenthread) says how much later.  Then the
critical path, the spans that held the operation up the longest (the
bottleneck) and those with the most self time are listed.  Transaction
statements and pings are folded into their neighbours unless
``show_noise``.
"""

from stacktrail.report import analysis
from stacktrail.report import describe
from stacktrail.report import tree

MAX_INDENT = 60
LEGEND = ("* on the critical path   ! error   ~ open (no stop recorded)   "
          "async +T: started T after its parent returned")


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


def _flags(info, parent=None):
    flags = []
    if info.get("error"):
        flags.append("! " + clean(info.get("error_message") or "error"))
    if info.get("open"):
        flags.append("~ open: no stop recorded")
    if info.get("missing_start"):
        flags.append("no start recorded")
    if info.get("orphan"):
        flags.append("parent not found")
    if parent is not None:
        late = info["started_us"] - parent.get("finished_us", 0)
        if late > 0 and parent.get("name") != "total":
            flags.append("async +%s" % fmt_us(late))
    if info.get("noise"):
        flags.append("(%s, folded)" % clean(info["noise"]))
    return "  ".join(flags)


def hidden(node, show_noise):
    """A noise leaf (BEGIN, COMMIT, a ping) the text tree and the DOT graph
    leave out."""
    return (not show_noise and node["info"].get("noise")
            and not node.get("children"))


def _tree_lines(report, show_noise=False):
    """One line per span, drawn with box characters, without recursion."""
    lines = []
    # Each stack entry: node, the prefix for its line, the prefix for its
    # children's lines, its parent's info.
    stack = []

    def push(children, inner, parent):
        if not show_noise:
            children = [c for c in children if not hidden(c, False)]
        if not children:
            return
        if len(inner) > MAX_INDENT:   # a deep trace: only the tail shows
            inner = inner[-MAX_INDENT:]
        # The last child is drawn apart; the others share their prefixes.
        stack.append((children[-1], inner + "└─ ", inner + "   ", parent))
        middle, middle_inner = inner + "├─ ", inner + "│  "
        stack.extend([(child, middle, middle_inner, parent)
                      for child in reversed(children[:-1])])

    push(report.get("children", []), "", None)
    while stack:
        node, prefix, inner, parent = stack.pop()
        info = node["info"]
        mark = "*" if info.get("critical") else " "
        if len(prefix) > MAX_INDENT:  # very deep traces: keep lines usable
            prefix = "…" + prefix[-(MAX_INDENT - 1):]
        label = "%s%s %s" % (prefix, mark, named(info))
        lines.append((label, info, parent))
        kids = node.get("children")
        if kids:
            push(kids, inner, info)
    return lines


def _span_lines(report, show_noise=False):
    """The column header, the total, then one line per span."""
    info = report["info"]
    rows = [("span", None, None), ("total", info, None)] + _tree_lines(
        report, show_noise)
    width = min(max((len(label) for label, _, _ in rows), default=10), 80)
    out = []
    for label, info, parent in rows:
        if info is None:
            out.append("%-*s  %12s  %-11s %s" % (width, label, "duration",
                                                 "@start(ms)", "where"))
            continue
        columns = ["%-*s" % (width, label),
                   "%12s" % fmt_us(info.get("duration_us")),
                   "@%-10s" % ("%.3f" % (info["started_us"] / 1000)),
                   where(info)]
        flags = _flags(info, parent)
        if flags:
            columns.append(flags)
        out.append("  ".join(columns).rstrip())
    return out


def timing(info):
    """"1.322 s end to end, response 1.175 s (+147.032 ms asynchronous)"."""
    total = info.get("end_to_end_us", info.get("finished_us"))
    text = "%s end to end" % fmt_us(total)
    response = info.get("response_us")
    if response is not None:
        text += ", response %s" % fmt_us(response)
        if info.get("async_us"):
            text += " (+%s asynchronous)" % fmt_us(info["async_us"])
    return text


def _header(report, show_noise=False):
    info = report["info"]
    head = "Trace %s" % clean(info.get("base_id") or "?")
    if info.get("started_at"):
        head += "  started %s UTC" % clean(info["started_at"])
    parts = ["total %s" % timing(info),
             _count(info.get("span_count", 0), "span")]
    if info.get("error_count"):
        parts.append("%d with errors" % info["error_count"])
    if info.get("open_count"):
        parts.append("%d open" % info["open_count"])
    if info.get("services"):
        parts.append("services: %s" % ", ".join(map(clean,
                                                    info["services"])))
    lines = [head, "  ".join(parts), LEGEND]
    if info.get("noise_count") and not show_noise:
        count = info["noise_count"]
        lines.append("%d transaction statement%s and pings folded into their "
                     "neighbours (--show-noise shows them)"
                     % (count, "" if count == 1 else "s"))
    return lines + [""]


def _entry_line(entry, value):
    flags = " !" if entry.get("error") else ""
    flags += " ~open" if entry.get("open") else ""
    place = where(entry)
    return "%s%s%s  %s" % (named(entry),
                           " [%s]" % place if place else "", flags, value)


def _summary(report, show_noise=False):
    info = report["info"]
    total = max(1, info.get("end_to_end_us") or info.get("finished_us")
                or 1)
    path = report["critical_path"]
    # A long path is dominated by a few spans: list those that held the
    # trace up for at least 1 % of its time.
    shown = [e for e in path if len(path) <= 40
             or _held(e) * 100 >= total]
    lines = ["", "Critical path (%s).  Held up: the time a span alone kept "
             "the operation from" % _count(len(path), "span"),
             "finishing; queued: the part before it started, after its "
             "parent had returned:"]
    for entry in shown:
        depth = entry["depth"]
        indent = "  " * min(depth, 10) + ("[depth %d] " % depth
                                          if depth > 10 else "")
        lines.append("  %s%s" % (indent, _entry_line(
            entry, "%s held up%s, ran %s" % (
                fmt_us(_held(entry)), _queued(entry),
                fmt_us(entry["duration_us"])))))
        if show_noise:
            for folded in entry.get("folded") or ():
                lines.append("  %s  + %s  %s folded in" % (
                    indent, named(folded),
                    fmt_us(folded.get("contribution_us"))))
    if len(shown) < len(path):
        lines.append("  (%d spans under 1 %% of the total not shown; "
                     "--json has them all)" % (len(path) - len(shown)))
    lines += ["", "Bottleneck: the spans that held the operation up the "
              "longest (on the critical path, not in a traced child):"]
    ranked = sorted(path, key=_held, reverse=True)
    for rank, entry in enumerate(ranked[:5], 1):
        if _held(entry) <= 0:
            break
        lines.append("  %d. %s" % (rank, _entry_line(
            entry, "%s (%.1f%% of end to end)%s" % (
                fmt_us(_held(entry)), 100.0 * _held(entry) / total,
                _queued(entry)))))
    lines += ["", "Most self time (time not spent in traced children, on "
              "the critical path or not):"]
    for rank, entry in enumerate(report["top_self_time"][:5], 1):
        if entry["self_us"] <= 0:
            break
        lines.append("  %d. %s" % (rank, _entry_line(
            entry, "%s self (%.1f%% of total), %s in all"
            % (fmt_us(entry["self_us"]), 100.0 * entry["self_us"] / total,
               fmt_us(entry["duration_us"])))))
    return lines


def _held(entry):
    held = entry.get("contribution_us")
    return entry.get("critical_us", 0) if held is None else held


def _queued(entry):
    queued = entry.get("queued_us")
    if not queued:
        return ""
    return " (%s queued)" % fmt_us(queued)


def ensure_analysis(report):
    """Annotate a report that was loaded rather than built (e.g. one saved
    by osprofiler, or by a stacktrail whose critical path stopped at a
    parent that returned) so every renderer can rely on our keys.  A
    report ``tree.build`` made has them all: it is not walked again."""
    if type(report) is tree.Report:
        return report
    describe.ensure(report)
    if ("critical_path" not in report or "top_self_time" not in report
            or report["info"].get("started_us") is None
            or "end_to_end_us" not in report["info"]):
        analysis.annotate(report)
    return report


def render(report, show_noise=False):
    """The report as text; ``show_noise`` also lists transaction
    statements and pings (folded into their neighbours otherwise)."""
    ensure_analysis(report)
    if not report.get("children"):
        return "Trace %s has no spans.\n" % clean(
            report["info"].get("base_id") or "?")
    lines = (_header(report, show_noise) + _span_lines(report, show_noise)
             + _summary(report, show_noise))
    return "\n".join(lines) + "\n"


# --- many traces (stacktrail analyze) ----------------------------------------

SPARK = " ▁▂▃▄▅▆▇█"
GROUP_ROWS = 15


def _ms(us, signed=False):
    """A duration for the analysis tables: "12.3 ms", "1.234 s"."""
    if us is None:
        return "-"
    if abs(us) < 50:   # shown as 0.0 ms: no sign
        us = 0
    sign = "+" if signed and us > 0 else ("-" if us < 0 else "")
    us = abs(us)
    if us >= 10_000_000:
        return "%s%.2f s" % (sign, us / 1e6)
    if us >= 100_000:
        return "%s%.0f ms" % (sign, us / 1000)
    return "%s%.1f ms" % (sign, us / 1000)


def _pct(value, signed=False):
    if value is None:
        return "-"
    return ("%+.1f%%" if signed else "%.1f%%") % (100.0 * value)


def _kind(row):
    service = clean(row["service"]) or "(no service)"
    return service, clean(row["kind"])


def _sparkline(counts):
    if not counts or not max(counts):
        return ""
    top = max(counts)
    return "".join(SPARK[0] if not c else SPARK[max(1, round(
        c / top * (len(SPARK) - 1)))] for c in counts)


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    out = []
    for row in [header] + rows:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _latency_rows(answer):
    rows = []
    for label, key in (("end to end", "end_to_end"),
                       ("response", "response")):
        numbers = answer["latency"][key]
        rows.append([label, "", _ms(numbers["p50_us"]),
                     _ms(numbers["p90_us"]), _ms(numbers["p99_us"]),
                     _ms(numbers["mean_us"]), _ms(numbers["max_us"])])
        base = answer.get("baseline")
        if base is not None:
            then = base["latency"][key]
            rows[-1][1] = "now"
            rows.append(["", "baseline", _ms(then["p50_us"]),
                         _ms(then["p90_us"]), _ms(then["p99_us"]),
                         _ms(then["mean_us"]), _ms(then["max_us"])])
            change = answer["latency_change"][key]
            rows.append(["", "change"] + [
                _ms(change[k]["change"], True)
                for k in ("p50_us", "p90_us", "p99_us", "mean_us")] + [""])
    return rows


def render_analysis(answer):
    """``stacktrail analyze`` as text: latency, where the critical path
    went, and with a baseline what changed."""
    traces = answer["traces"]
    lines = ["stacktrail analyze  %s" % clean(answer.get("source") or ""),
             "window    %s: %s matched of %s read (%s)%s" % (
                 clean(answer["window"]["description"]),
                 format(traces["matched"], ","), format(traces["read"], ","),
                 clean(answer["filter"]["description"]),
                 ", %s with errors" % format(traces["errors"], ",")
                 if traces["errors"] else "")]
    base = answer.get("baseline")
    if base is not None:
        lines.append("baseline  %s: %s matched of %s read" % (
            clean(base["window"]["description"]),
            format(base["traces"]["matched"], ","),
            format(base["traces"]["read"], ",")))
    lines += ["", "Latency (end to end: the request and the asynchronous "
              "work it started; response: the request alone)"]
    lines += _table(["", "", "p50", "p90", "p99", "mean", "max"],
                    _latency_rows(answer))
    histogram = answer.get("histogram") or {}
    edges = histogram.get("edges_us") or []
    if edges:
        lines.append("  histogram  %s %s  %s" % (
            _ms(edges[0]), _sparkline(histogram.get("window")),
            _ms(edges[-1])))
        if histogram.get("baseline"):
            lines.append("  baseline   %s %s  %s" % (
                _ms(edges[0]), _sparkline(histogram["baseline"]),
                _ms(edges[-1])))

    groups = answer["groups"]
    lines += ["", "Where the critical path went: the share of the end-to-end "
              "time each service and span kind held the traces up,",
              "over all of them and for the traces at each percentile "
              "(queued: waiting to start after the span that started it "
              "returned)"]
    rows = []
    for row in groups[:GROUP_ROWS]:
        rows.append(list(_kind(row)) + [
            _pct(row["share"])] + [_pct(row["at"][b]["share"])
                                   for b in ("p50", "p90", "p99")] + [
            _ms(row["mean_us"]), _ms(row["p99_us"])])
    lines += _table(["service", "kind", "all", "at p50", "at p90", "at p99",
                     "mean/trace", "p99/trace"], rows)
    if len(groups) > GROUP_ROWS:
        rest = sum(r["share"] for r in groups[GROUP_ROWS:])
        lines.append("  (%d more, %s in all; --json has them)"
                     % (len(groups) - GROUP_ROWS, _pct(rest)))

    if base is not None:
        change = answer["latency_change"]
        rank = answer.get("rank", "mean")
        what = ("mean end-to-end time" if rank == "mean" else
                "end-to-end time of the traces at %s" % rank)
        lines += ["", "What changed, ranked by contribution to the change of "
                  "the %s (%s):" % (what, _ms(change["change_ranked_us"],
                                              True))]
        rows = []
        changes = answer["changes"]
        shown = [c for c in changes if c["rank_change_us"] > 0][:GROUP_ROWS]
        shown += [c for c in reversed(changes)
                  if c["rank_change_us"] < 0][:5]
        for entry in shown:
            rows.append(list(_kind(entry)) + [
                _ms(entry["before_us"]), _ms(entry["after_us"]),
                _ms(entry["change_us"], True),
                _pct(entry["share_of_change"])] + [
                _ms(entry["at"][b]["change_us"], True)
                for b in ("p50", "p90", "p99")])
        lines += _table(["service", "kind", "before", "now", "change",
                         "of change", "at p50", "at p90", "at p99"], rows)

    operations = answer.get("operations") or []
    if operations:
        lines += ["", "Operations (first span of each trace):"]
        for op in operations[:8]:
            lines.append("  %8s  %s" % (format(op["count"], ","),
                                        clean(op["operation"])))
        if len(operations) > 8:
            lines.append("  (%d more)" % (len(operations) - 8))
    slowest = answer.get("slowest") or []
    if slowest:
        lines += ["", "Slowest traces (stacktrail trace show ID):"]
        for trace in slowest[:5]:
            lines.append("  %s  %s" % (_ms(trace["end_to_end_us"]).rjust(9),
                                       clean(trace["base_id"])))
    return "\n".join(lines) + "\n"
