"""Where did the time go: critical path and self time of a report.

Both work on the report dicts (not on messages), so they also annotate a
report loaded from JSON, including one written by osprofiler (which has
only millisecond times: ``normalize`` fills in the microsecond keys).

Critical path: the chain of spans that determined the total time.  Walking
back from the end of a span, the child that finished last bounds it; before
that child started, the child that finished last before that moment bounds
it, and so on.  A child running concurrently with a later-finishing sibling
is therefore on the path only if part of it was not covered by that
sibling.  This is the usual definition (as in Jaeger); it sorts only the
children of spans on the path.

Self time: a span's duration minus the time covered by at least one child
(the union of the children's intervals, clipped to the span), i.e. time the
span spent in its own code or in calls nobody traced.
"""

import heapq

TOP_SELF_TIME = 10


def walk(report):
    """(node, depth) for every span, parents before children, no recursion."""
    stack = [(child, 0) for child in reversed(report.get("children", []))]
    pop, push = stack.pop, stack.extend
    while stack:
        node, depth = pop()
        yield node, depth
        children = node.get("children")  # a loaded leaf may have none
        if children:
            push([(c, depth + 1) for c in reversed(children)])


def normalize(report):
    """Give every node ``started_us``/``finished_us`` (osprofiler reports
    only have milliseconds) so the analyses can read them directly."""
    nodes = [report] + [node for node, _ in walk(report)]
    for node in nodes:
        info = node["info"]
        if info.get("started_us") is None:
            info["started_us"] = (info.get("started") or 0) * 1000
        if info.get("finished_us") is None:
            finished = info.get("finished")
            info["finished_us"] = (info["started_us"] if finished is None
                                   else finished * 1000)
        info.setdefault("duration_us",
                        info["finished_us"] - info["started_us"])
        node.setdefault("children", [])
    report["info"].setdefault("span_count", len(nodes) - 1)
    return report


def _entry(node, depth, **extra):
    info = node["info"]
    entry = {
        "trace_id": node.get("trace_id"),
        "name": info.get("name"),
        "detail": info.get("detail") or "",
        "service": info.get("service"),
        "host": info.get("host"),
        "depth": depth,
        "started_us": info["started_us"],
        "finished_us": info["finished_us"],
        "duration_us": info["finished_us"] - info["started_us"],
        "error": bool(info.get("error")),
        "open": bool(info.get("open")),
    }
    entry.update(extra)
    return entry


def _end(node):
    return node["info"]["finished_us"]


def _by_end(node):
    return iter(sorted(node["children"], key=_end, reverse=True))


def critical_path(report):
    """Spans on the critical path, in time order, each with the time it
    spent on the path (``critical_us``).  Marks ``info["critical"]``."""
    path = []
    # A frame is [node, its children by end time descending, the end of
    # the window still to explain, depth]; the explicit stack keeps deep
    # traces clear of the recursion limit.
    stack = [[report, _by_end(report), _end(report), -1]]
    while stack:
        frame = stack[-1]
        node, kids, limit, depth = frame
        for child in kids:
            info = child["info"]
            start = info["started_us"]
            if start < limit:
                child_limit = min(info["finished_us"], limit)
                frame[2] = start
                info["critical"] = True
                on_path = child_limit - max(start, node["info"]["started_us"])
                path.append(_entry(child, depth + 1,
                                   critical_us=max(0, on_path)))
                stack.append([child, _by_end(child), child_limit, depth + 1])
                break
        else:
            stack.pop()
    path.sort(key=lambda e: (e["started_us"], e["depth"]))
    return path


def covered_us(start, end, intervals):
    """Time in [start, end] covered by at least one interval (the union,
    clipped); ``intervals`` are (start, end) pairs sorted by start."""
    covered = 0
    run_start = run_end = None
    for lo, hi in intervals:
        if lo < start:
            lo = start
        if hi > end:
            hi = end
        if hi <= lo:
            continue
        if run_end is not None and lo <= run_end:
            if hi > run_end:
                run_end = hi
            continue
        if run_end is not None:
            covered += run_end - run_start
        run_start, run_end = lo, hi
    if run_end is not None:
        covered += run_end - run_start
    return covered


def self_time_us(node):
    """Duration not covered by any child (children clipped to the span)."""
    info = node["info"]
    start, end = info["started_us"], info["finished_us"]
    # Children are sorted by start in built reports; sorting sorted input
    # is linear, and a loaded report may not be sorted.
    intervals = sorted((c["info"]["started_us"], c["info"]["finished_us"])
                       for c in node["children"])
    return max(0, end - start - covered_us(start, end, intervals))


def rank_self_time(report, scored, limit=TOP_SELF_TIME):
    """Entries for the ``limit`` biggest of (self_us, depth, node)."""
    info = report["info"]
    total = max(1, info["finished_us"] - info["started_us"])
    best = heapq.nlargest(limit, scored, key=_first)
    return [_entry(node, depth, self_us=own, share=round(own / total, 4))
            for own, depth, node in best]


def _first(item):
    return item[0]


def top_self_time(report, limit=TOP_SELF_TIME):
    """The spans with the most self time; sets ``info["self_us"]`` on all
    and clears ``info["critical"]`` (critical_path sets it again)."""
    scored = []
    for node, depth in walk(report):
        info = node["info"]
        if node["children"]:
            own = self_time_us(node)
        else:  # most spans are leaves: skip the call
            own = max(0, info["finished_us"] - info["started_us"])
        info["self_us"] = own
        info["critical"] = False
        scored.append((own, depth, node))
    return rank_self_time(report, scored, limit)


def annotate(report, scored=None):
    """Add ``critical_path`` and ``top_self_time`` to a report in place.

    ``scored``, from ``tree.build``, is (self_us, depth, node) for every
    span whose ``*_us``, ``self_us`` and ``critical`` are already set.
    """
    if scored is None:
        normalize(report)
        report["top_self_time"] = top_self_time(report)
    else:
        report["top_self_time"] = rank_self_time(report, scored)
    report["critical_path"] = critical_path(report)
    return report
