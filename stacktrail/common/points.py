"""Trace points: the raw record made on the request path and its message.

The request thread builds only a tuple of ints, the point name and its info
dict::

    (name, phase, base_id, parent_id, trace_id, time_ns, info)

``phase`` is START or STOP; the ids are ints from ``common.ids`` (or text
when a peer sent a non-UUID id).  ``to_message`` turns it, off the request
path, into osprofiler's notification dict.
"""

import os

from stacktrail.common import clock
from stacktrail.common import ids

START = 0
STOP = 1
SUFFIX = ("-start", "-stop")
HOST = os.uname().nodename  # gethostname() without importing socket


def to_message(point, host=HOST, project=None, service=None):
    """osprofiler's message for a point; stores pass project and service."""
    name, phase, base_id, parent_id, trace_id, ns, info = point
    info = dict(info) if info else {}
    info.setdefault("host", host)
    message = {
        "name": name + SUFFIX[phase],
        "base_id": ids.to_uuid(base_id),
        "trace_id": ids.to_uuid(trace_id),
        "parent_id": ids.to_uuid(parent_id),
        "timestamp": clock.format_timestamp(ns),
        "info": info,
    }
    if project is not None:
        message["project"] = project
    if service is not None:
        message["service"] = service
    return message


def from_message(message):
    """The raw point of an osprofiler message (inverse of ``to_message``)."""
    full = message["name"]
    phase = STOP if full.endswith("-stop") else START
    name = (full[: -len(SUFFIX[phase])] if full.endswith(SUFFIX[phase])
            else full)
    return (name, phase, message["base_id"], message["parent_id"],
            message["trace_id"], clock.parse_timestamp(message["timestamp"]),
            message.get("info") or {})


class Batch(list):
    """Raw points decoded from a version 2 wire frame, with their columns.

    A list of raw point tuples like any batch (every consumer can iterate,
    slice or clean it), whose ids are the UUID text of the integers the
    service sent (``ids.to_uuid`` and ``ids.to_int`` treat both alike).
    ``columns`` holds the same points as parallel sequences, so that the
    stores format a whole batch with C-level passes instead of a Python
    loop per point:

        names, phases (bytes), bases, parents, traces (UUID text),
        times (ns), infos (dict or None)

    A slice or a cleaned copy is a plain list: it takes the general path.
    """

    __slots__ = ("columns",)

    @classmethod
    def from_columns(cls, names, phases, bases, parents, traces, times,
                     infos):
        batch = cls(zip(names, phases, bases, parents, traces, times, infos))
        batch.columns = (names, phases, bases, parents, traces, times, infos)
        return batch

    @classmethod
    def concat(cls, batches):
        """One batch of several (their columns joined); a plain list when
        one of them has no columns."""
        if len(batches) == 1:
            return batches[0]
        if not all(type(b) is cls for b in batches):
            return [p for b in batches for p in b]
        batch = cls()
        for part in batches:
            batch.extend(part)
        columns = [list(c) for c in batches[0].columns]
        columns[1] = bytearray(batches[0].columns[1])
        for part in batches[1:]:
            for mine, theirs in zip(columns, part.columns):
                mine.extend(theirs)
        columns[1] = bytes(columns[1])
        batch.columns = tuple(columns)
        return batch
