"""Hand-built traces for the report tests: spans in milliseconds."""

import datetime

BASE = "5e2b54c8-0000-4000-8000-000000000000"
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0)


def stamp(ms):
    return (T0 + datetime.timedelta(microseconds=round(ms * 1000))).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")


def point(name, trace_id, parent_id, ms, info=None, service="nova-api",
          project="nova", base_id=BASE):
    return {"name": name, "base_id": base_id, "trace_id": trace_id,
            "parent_id": parent_id, "timestamp": stamp(ms),
            "info": dict(info or {}, host="host-1"),
            "project": project, "service": service}


def span(name, trace_id, parent_id, start_ms, stop_ms, start_info=None,
         stop_info=None, **kw):
    """The start and stop messages of one span."""
    return [point(name + "-start", trace_id, parent_id, start_ms,
                  start_info, **kw),
            point(name + "-stop", trace_id, parent_id, stop_ms,
                  stop_info, **kw)]


def spans(*specs):
    """Messages of several spans: (name, id, parent, start_ms, stop_ms)."""
    out = []
    for spec in specs:
        out += span(*spec)
    return out


def by_id(report):
    """trace_id -> node of a report."""
    found = {}
    stack = list(report["children"])
    while stack:
        node = stack.pop()
        found[node["trace_id"]] = node
        stack.extend(node["children"])
    return found
