"""One line saying what a span did, from what its integration recorded.

    wsgi     GET /v2/queues/q1 -> 201
    http     GET 10.0.0.5:8774/v2.1/servers -> 200
    db       SELECT servers.id FROM servers WHERE servers.uuid = %(uuid_…
    rpc      call compute.build_instance
    redis    GET  /  PIPELINE (3 commands)
    mongodb  find servers
    driver, pool, @profiler.trace: the function or method name

The kind of span is told by the keys of its start info (what each
integration, stacktrail's or osprofiler's, records), not by its point
name, which services choose ("db", "db-query", osprofiler's "https" for
an HTTP call).  The kinds and their one-line describers are declared in
``stacktrail.common.kinds``; third parties add theirs there.

This runs once per span while a report is built, so it is a few dict
lookups and a call.
"""

from stacktrail.common import kinds

SQL_LIMIT = kinds.SQL_LIMIT
sql = kinds.sql_line
# The detail of a span from its start and stop info dicts.
from_infos = kinds.line
_RAW = "meta.raw_payload."


def _payload_info(message):
    info = message.get("info") if message.__class__ is dict else None
    return info if info.__class__ is dict else None


def describe(node_info):
    """The detail of a report node's ``info`` (built or loaded), read from
    its raw start and stop payloads."""
    if node_info.__class__ is not dict:
        return ""
    start = stop = None
    for key, value in node_info.items():
        if key.__class__ is not str or not key.startswith(_RAW):
            continue
        # osprofiler's name rule: a name ending in "stop" is the stop.
        if key.endswith("stop"):
            stop = _payload_info(value)
        elif start is None:
            start = _payload_info(value)
    return from_infos(start, stop)


def ensure(report):
    """Give every node of a loaded report (saved by an older stacktrail or
    by osprofiler) its ``detail``; nodes that have one keep it."""
    stack = list(report.get("children") or ())
    while stack:
        node = stack.pop()
        if node.__class__ is not dict:
            continue
        info = node.get("info")
        if info.__class__ is dict and "detail" not in info:
            info["detail"] = describe(info)
        stack.extend(node.get("children") or ())
    return report
