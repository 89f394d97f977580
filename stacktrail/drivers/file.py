"""``file://PATH``: trace points as JSON lines in one append-only file.

Each batch is one ``write`` on a descriptor opened with ``O_APPEND``, so
several processes (workers of one service, or several services on a node)
can share the file without interleaving inside a line.  The file is opened
per batch, which follows log rotation for free.  The read side scans it.

``file:///var/log/stacktrail/traces.jsonl`` is an absolute path;
``file://traces.jsonl`` is relative to the working directory.

A write cut short (disk full) leaves a partial line; it is ended with a
newline (now, or before the next batch when even that byte does not fit),
so the reader skips that one line and never glues two together.
"""

import os

from stacktrail.drivers import base
from stacktrail.drivers import codec


def path_of(connection_string):
    path = connection_string.split("://", 1)[1]
    path = path.split("?", 1)[0]
    if not path:
        raise base.DriverError("file:// needs a path, e.g. "
                               "file:///var/log/stacktrail/traces.jsonl")
    return os.path.expanduser(path)


class FileDriver(base.Driver):

    def __init__(self, connection_str, *args, **kwargs):
        super().__init__(connection_str, *args, **kwargs)
        self.path = path_of(connection_str)
        self._torn = False   # a partial line waits for its newline
        if os.path.isdir(self.path):
            raise base.DriverError("file:// path %s is a directory"
                                   % self.path)

    @classmethod
    def get_name(cls):
        return "file"

    # write side

    def write_points(self, batch):
        self._append(self.format_json(batch))

    def write_messages(self, messages):
        self._append([base.to_json(m) for m in messages])

    def _append(self, lines):
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        if self._torn:
            data = b"\n" + data
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o640)
        try:
            view = memoryview(data)
            started = False
            try:
                while view:  # a short write is rare, but must not cut a line
                    written = os.write(fd, view)
                    if written <= 0:
                        raise OSError(28, os.strerror(28))
                    started = True
                    view = view[written:]
            except OSError:
                if started and view:
                    self._end_torn_line(fd)
                raise
            self._torn = False
        finally:
            os.close(fd)

    def _end_torn_line(self, fd):
        try:
            self._torn = os.write(fd, b"\n") != 1
        except OSError:
            self._torn = True

    def notify(self, info, **kwargs):
        message = dict(info)
        message.setdefault("project", self.project)
        message.setdefault("service", self.service)
        self.write_messages([message])

    # read side

    def _lines(self):
        try:
            with open(self.path, "rb") as f:
                yield from f
        except FileNotFoundError:
            raise base.DriverError("no trace file at %s" % self.path) from None
        except OSError as exc:
            raise base.DriverError("cannot read trace file %s: %s"
                                   % (self.path, exc.strerror)) from None

    def _messages(self, needle=None):
        """Every well-formed message; ``needle`` skips lines cheaply.
        Lines are decoded a few thousand at a time (``codec.loads_each``:
        orjson when installed); a line cut by a crash mid-write is
        skipped."""
        needle = needle.encode() if needle else None
        chunk = []
        for line in self._lines():
            if needle is not None and needle not in line:
                continue
            chunk.append(line)
            if len(chunk) >= READ_CHUNK:
                yield from _well_formed(chunk)
                chunk = []
        yield from _well_formed(chunk)

    def get_messages(self, base_id):
        return [m for m in self._messages(base_id)
                if m["base_id"] == base_id]

    def _first_points(self, only_errors=False):
        """base_id -> the earliest message of each trace, in time order."""
        first = {}
        errors = set()
        for m in self._messages():
            known = first.get(m["base_id"])
            if known is None or m.get("timestamp", "") < known["timestamp"]:
                first[m["base_id"]] = m
            if (m.get("info") or {}).get("etype") is not None:
                errors.add(m["base_id"])
        if only_errors:
            first = {k: v for k, v in first.items() if k in errors}
        return sorted(first.values(), key=lambda m: m["timestamp"])

    def list_traces(self, fields=None):
        fields = set(fields or ("base_id", "timestamp"))
        return [{k: v for k, v in m.items() if k in fields}
                for m in self._first_points()]

    def list_error_traces(self):
        return [{"base_id": m["base_id"], "timestamp": m["timestamp"]}
                for m in self._first_points(only_errors=True)]

    def trace_summaries(self, since_us=None, until_us=None):
        # One pass over the file, not one per trace.
        return base.summarize_all(self._messages(), since_us, until_us)


READ_CHUNK = 4096


def _well_formed(lines):
    values, _ = codec.loads_each(lines)
    for message in values:
        if isinstance(message, dict) and "base_id" in message \
                and "timestamp" in message:
            yield message
