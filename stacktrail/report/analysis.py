"""Where did the time go: critical path and self time of a report.

Both work on the report dicts (not on messages), so they also annotate a
report loaded from JSON, including one written by osprofiler (which has
only millisecond times: ``normalize`` fills in the microsecond keys).

End to end.  In OpenStack the expensive work often runs after the request
that started it has answered: an RPC cast is served by another service
later, a notification is handled later, a greenthread is spawned and the
API returns 202.  Such work is still part of the user's operation (the
volume is not there until the driver has made it), so a span's *done*
time is the end of everything it started, itself and its descendants,
whether or not they outlived it, and the end-to-end time of a trace runs
to the done time of its top-level spans.  The response time is when the
top-level spans themselves returned.

Critical path: the chain of spans that set the end-to-end time.  Walking
back from the done time of a span, the child whose work was done last
held it up; before that child started, the child done last before that
moment, and so on.  Children are not clipped to a parent that returned:
the path follows a cast into the service that served it.  A child
running concurrently with a later-finishing sibling is on the path only
if part of it was not covered by that sibling.  This is the usual
definition (as in Jaeger) with "finished" read as "done"; it sorts only
the children of spans on the path.

Each span on the path gets the time it kept the operation from finishing
(``contribution_us``): the time on the path spent in the span itself
rather than in a child on the path, plus ``queued_us``, the time between
the return of the span that started it and its own start while nothing
else on the path ran (an RPC cast waiting in the message queue or for a
worker, a spawned greenthread waiting to run).  The contributions and the
top-level gaps (``untraced_us``) add up to the end-to-end time exactly.

Noise: transaction statements (``BEGIN``, ``COMMIT``, ``ROLLBACK``,
savepoints) and pings are a third of the ``db`` spans of a Cinder or Nova
request and never the bottleneck on their own.  They are marked
(``info["noise"]``), kept out of the rankings, and their time is folded
into a neighbour: the statement a ``BEGIN`` opens, the one a ``COMMIT``
closes, else the span that ran them.  Renderers show them on request.

Self time: a span's duration minus the time covered by at least one child
(the union of the children's intervals, clipped to the span), i.e. time the
span spent in its own code or in calls nobody traced.
"""

import heapq
import re

from stacktrail.common import kinds

TOP_SELF_TIME = 10
RAW = "meta.raw_payload."

# Statements that only open, close or probe: (first words, label, which
# neighbour takes their time: +1 the next span, -1 the previous one).
_NOISE_SQL = re.compile(
    r"(?:(?P<open>BEGIN|START\s+TRANSACTION|SAVEPOINT|SET\s+(?:SESSION\s+)?"
    r"TRANSACTION|SET\s+AUTOCOMMIT|XA\s+START)"
    r"|(?P<close>COMMIT|ROLLBACK|RELEASE|END|XA\s+(?:END|PREPARE|COMMIT|"
    r"ROLLBACK)))\b"
    r"|(?P<ping>SELECT\s+1(?:\s+FROM\s+DUAL)?\s*;?\s*$)",
    re.IGNORECASE)
_NOISE_COMMANDS = {
    # Redis
    "PING": ("ping", 1), "MULTI": ("transaction", 1),
    "EXEC": ("transaction", -1), "DISCARD": ("transaction", -1),
    "WATCH": ("transaction", 1), "UNWATCH": ("transaction", -1),
    # MongoDB
    "ping": ("ping", 1), "hello": ("ping", 1), "isMaster": ("ping", 1),
    "ismaster": ("ping", 1), "endSessions": ("ping", -1),
    "startTransaction": ("transaction", 1),
    "commitTransaction": ("transaction", -1),
    "abortTransaction": ("transaction", -1),
}
_NOISE_CACHE = {}   # detail -> (label, direction) or None
_NOISE_CACHE_SIZE = 4096
_UNSEEN = object()


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


# --- noise -------------------------------------------------------------------

def _classify(detail):
    """(label, direction) of a span detail that is a transaction statement
    or a ping, else None."""
    command = _NOISE_COMMANDS.get(detail.split(" ", 1)[0])
    if command is not None and (" " not in detail or detail.split(" ", 1)[1]
                                in ("", "admin", "$cmd")):
        return command
    found = _NOISE_SQL.match(detail)
    if found is None:
        return None
    if found.group("open"):
        return ("transaction", 1)
    if found.group("close"):
        return ("transaction", -1)
    return ("ping", 1)


def _noise_detail(detail):
    found = _NOISE_CACHE.get(detail, _UNSEEN)
    if found is _UNSEEN:
        found = _classify(detail)
        if len(_NOISE_CACHE) >= _NOISE_CACHE_SIZE:
            _NOISE_CACHE.clear()
        _NOISE_CACHE[detail] = found
    return found


def _is_db(info):
    """The span records a database statement or command (the ``db``
    kind): by its point name ("db", "redis", "mongodb"...), else by the
    kind its start info records."""
    name = info.get("name")
    if name.__class__ is not str:
        return False
    named = kinds.named(name)
    if named is not None and named[0] is kinds.DB:
        return True
    raw = info.get(RAW + name + "-start")
    start = raw.get("info") if raw.__class__ is dict else None
    return start.__class__ is dict and kinds.of(start) is kinds.DB


# --- done times --------------------------------------------------------------

def _done_times(nodes_postorder):
    """Done times and noise of every span; ``nodes_postorder`` has
    children before parents.

    Returns (done, noise, parents): done maps id(node) to the end of the
    node and of all the work it started; noise maps id(node) to (label,
    direction) for transaction statements and pings; parents lists the
    nodes with such children.  Marks ``info["async_finished_us"]`` where
    the work outlived the node and ``info["noise"]`` on noise spans.
    """
    done = {}
    noise = {}
    parents = []
    cache = _NOISE_CACHE
    for node in nodes_postorder:
        info = node["info"]
        finished = end = info["finished_us"]
        children = node["children"]
        if children:
            has_noise = False
            for child in children:
                key = id(child)
                child_done = done[key]
                if child_done > end:
                    end = child_done
                if key in noise:
                    has_noise = True
            if has_noise:
                parents.append(node)
            if end > finished:
                info["async_finished_us"] = end
            elif "async_finished_us" in info:
                del info["async_finished_us"]
        else:
            detail = info.get("detail")
            found = None
            if detail and detail.__class__ is str:
                found = cache.get(detail, _UNSEEN)
                if found is _UNSEEN:
                    found = _noise_detail(detail)
                if found is not None and not _is_db(info):
                    found = None
            if found is not None:
                noise[id(node)] = found
                info["noise"] = found[0]
            elif "noise" in info:
                del info["noise"]
        done[id(node)] = end
    return done, noise, parents


# --- critical path -----------------------------------------------------------

def _entry(node, depth):
    """What the path and the rankings say of a span."""
    info = node["info"]
    get = info.get
    started, finished = info["started_us"], info["finished_us"]
    return {
        "trace_id": node.get("trace_id"),
        "parent_id": node.get("parent_id"),
        "name": get("name"),
        "detail": get("detail") or "",
        "service": get("service"),
        "host": get("host"),
        "depth": depth,
        "started_us": started,
        "finished_us": finished,
        "duration_us": finished - started,
        "error": bool(get("error")),
        "open": bool(get("open")),
    }


def critical_path(report, done=None, noise=None):
    """Spans on the critical path, in time order, each with the time it
    spent on the path including its children (``critical_us``) and the
    time it alone held the operation up (``contribution_us``, of which
    ``queued_us`` before it started and ``folded_us`` of transaction
    statements next to it).  Marks ``info["critical"]`` and sets the
    report's ``end_to_end_us``, ``response_us``, ``async_us`` and
    ``untraced_us``."""
    if done is None:
        nodes = [node for node, _ in walk(report)]
        nodes.reverse()
        done, noise, _ = _done_times(nodes)
    noise = noise or {}
    top = report.get("children") or []
    rinfo = report["info"]
    first = min((c["info"]["started_us"] for c in top), default=0)
    end = max([rinfo["finished_us"]] + [done[id(c)] for c in top])
    path = []
    parents = []   # per path entry: the entry of its parent (None: top)
    noisy = []     # per path entry: its noise (label, direction) or None
    untraced = 0
    # A frame: [node, children by done time descending, the end of the
    # window still to explain, the start of its window, depth, its entry,
    # the entry of the child whose window began at that end].  The
    # explicit stack keeps deep traces clear of the recursion limit.
    stack = [[report, _by_done(report, done), end, first, -1, None, None]]
    while stack:
        frame = stack[-1]
        node, kids, limit, low, depth, entry, _ = frame
        for child in kids:
            info = child["info"]
            start = info["started_us"]
            if start >= limit:
                continue
            child_end = done[id(child)]
            if child_end > limit:
                child_end = limit
            if limit > child_end:
                untraced += _gap(frame, child_end, limit)
            child_low = start if start > low else low
            frame[2] = limit = child_low
            info["critical"] = True
            # Its window on the path: the HTML paints only what it held up.
            info["critical_from_us"] = child_low
            info["critical_to_us"] = child_end
            child_entry = _path_entry(child, depth + 1,
                                      child_end - child_low)
            path.append(child_entry)
            parents.append(entry)
            if noise:
                noisy.append(noise.get(id(child)))
            frame[6] = child_entry
            if child["children"]:
                stack.append([child, _by_done(child, done), child_end,
                              child_low, depth + 1, child_entry, None])
                break
            # A leaf ran through its whole window (a leaf is done when it
            # finishes): all of it is its own.
            child_entry["contribution_us"] = child_entry["critical_us"]
        else:
            if limit > low:
                untraced += _gap(frame, low, limit)
            stack.pop()
    order = sorted(range(len(path)), key=lambda i: (path[i]["started_us"],
                                                    path[i]["depth"]))
    path = [path[i] for i in order]
    if noise and any(noisy):
        path = _fold(path, [parents[i] for i in order],
                     [noisy[i] for i in order])
    rinfo["end_to_end_us"] = end - first
    response = max((c["info"]["finished_us"] for c in top), default=first)
    rinfo["response_us"] = response - first
    rinfo["async_us"] = max(0, end - max(response, first))
    rinfo["untraced_us"] = untraced
    rinfo["noise_count"] = len(noise)
    return path


def _path_entry(node, depth, critical):
    entry = _entry(node, depth)
    entry["critical_us"] = critical if critical > 0 else 0
    entry["contribution_us"] = entry["queued_us"] = 0
    return entry


def _gap(frame, low, high):
    """Give the window [low, high] of a frame's node, in which none of its
    children on the path ran, to whoever held the operation up then: the
    node while it ran, the child that started at ``high`` while it waited
    to start after the node returned.  Returns the untraced part (the gaps
    between top-level spans)."""
    node, entry, after = frame[0], frame[5], frame[6]
    if entry is None:
        return high - low
    finished = node["info"]["finished_us"]
    own = (high if high < finished else finished) - low
    if own < 0:
        own = 0
    waited = (high - low) - own
    if waited and after is not None:
        after["queued_us"] += waited
        after["contribution_us"] += waited
    else:
        own += waited
    entry["contribution_us"] += own
    return 0


def _by_done(node, done):
    return iter(sorted(node["children"], key=lambda c: done[id(c)],
                       reverse=True))


def _fold(path, parents, noisy):
    """The path without transaction statements and pings, each folded
    into a neighbour entry (``folded_us``, ``folded``); ``parents`` and
    ``noisy`` are per entry."""
    siblings = {}
    for index, parent in enumerate(parents):
        siblings.setdefault(id(parent), []).append(index)
    gone = set()
    for group in siblings.values():
        if not any(noisy[i] for i in group):
            continue
        targets = _fold_targets(group, [noisy[i] for i in group],
                                [path[i]["name"] for i in group])
        for index, target in targets:
            e = path[index]
            target = path[target] if target is not None else parents[index]
            if target is None:
                continue   # a top-level statement: nothing to fold into
            target["contribution_us"] += e["contribution_us"]
            target["folded_us"] = target.get("folded_us", 0) + \
                e["contribution_us"]
            target.setdefault("folded", []).append({
                "trace_id": e["trace_id"], "name": e["name"],
                "detail": e["detail"], "noise": noisy[index][0],
                "contribution_us": e["contribution_us"],
                "started_us": e["started_us"],
                "duration_us": e["duration_us"]})
            gone.add(index)
    return [e for i, e in enumerate(path) if i not in gone]


def _fold_targets(items, noisy, names):
    """(item, neighbour or None) for each noise item of a time-ordered
    list of siblings.  The neighbour is the nearest sibling that is not
    noise, looked for in the item's direction (``noisy[i][1]``: +1 the
    next, -1 the previous) and then the other way, when it has the same
    point name (a statement beside a statement).  Linear time."""
    count = len(items)
    following = [None] * count
    preceding = [None] * count
    last = None
    for i in range(count - 1, -1, -1):
        following[i] = last
        if not noisy[i]:
            last = i
    last = None
    for i in range(count):
        preceding[i] = last
        if not noisy[i]:
            last = i
    out = []
    for i in range(count):
        found = noisy[i]
        if not found:
            continue
        order = ((following[i], preceding[i]) if found[1] > 0
                 else (preceding[i], following[i]))
        target = None
        for j in order:
            if j is not None and names[j] == names[i]:
                target = items[j]
                break
        out.append((items[i], target))
    return out


# --- self time ---------------------------------------------------------------

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


def _folded_self(parents, noise, ordered=False):
    """{id(node): self time of the noise spans folded into it};
    ``parents`` are the nodes with noise children, whose children are
    in time order when ``ordered`` (a built report's are)."""
    extra = {}
    for node in parents:
        children = node["children"]
        if not ordered:
            children = sorted(children, key=_started)
        targets = _fold_targets(
            children, [noise.get(id(c)) for c in children],
            [c["info"].get("name") for c in children])
        for child, target in targets:
            key = id(target if target is not None else node)
            extra[key] = extra.get(key, 0) + child["info"].get("self_us", 0)
    return extra


def rank_self_time(report, scored, limit=TOP_SELF_TIME, noise=None,
                   folded=None):
    """Entries for the ``limit`` biggest of (self_us, depth, node), the
    noise spans left out and their self time given to their neighbours."""
    info = report["info"]
    total = max(1, info["finished_us"] - info["started_us"])
    if noise:
        folded = folded or {}
        scored = [(own + folded.get(id(node), 0), depth, node)
                  for own, depth, node in scored if id(node) not in noise]
    best = heapq.nlargest(limit, scored, key=_first)
    out = []
    for own, depth, node in best:
        entry = _entry(node, depth)
        entry["self_us"] = own
        entry["share"] = round(own / total, 4)
        if folded and folded.get(id(node)):
            entry["folded_us"] = folded[id(node)]
        out.append(entry)
    return out


def _first(item):
    return item[0]


def _started(node):
    return node["info"]["started_us"]


def top_self_time(report, limit=TOP_SELF_TIME):
    """The spans with the most self time; sets ``info["self_us"]`` on all
    and clears ``info["critical"]`` (critical_path sets it again)."""
    return rank_self_time(report, _score(report), limit)


def _score(report):
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
    return scored


def annotate(report, scored=None):
    """Add ``critical_path`` and ``top_self_time`` to a report in place,
    with the end-to-end and response times in its info.

    ``scored``, from ``tree.build``, is (self_us, depth, node) for every
    span, parents first, whose ``*_us``, ``self_us`` and ``critical`` are
    already set, and whose children are in time order.
    """
    built = scored is not None
    if not built:
        normalize(report)
        scored = _score(report)
    done, noise, parents = _done_times(
        [node for _, _, node in reversed(scored)])
    folded = _folded_self(parents, noise, ordered=built)
    report["top_self_time"] = rank_self_time(report, scored, noise=noise,
                                             folded=folded)
    report["critical_path"] = critical_path(report, done, noise)
    return report
