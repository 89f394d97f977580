"""The agent's on-disk spool: an append-only log with one offset per backend.

Every frame the agent accepts is appended here before any backend sees it,
so a backend outage, an agent crash or a restart loses nothing the agent
has accepted.  Layout of ``spool_dir``::

    seg-<first offset, 20 digits>.log   records, appended, never rewritten
    ack-<backend key>                   the offset that backend acknowledged
    lock                                flock: one agent per spool

A record is ``length, crc32, received_ms, n_points`` (20 bytes) and the
frame's JSON payload.  Offsets are byte positions in the log as a whole,
so they only grow.  A backend's offset moves only after its driver
returned from the write (the store acknowledged); a segment is deleted
only when every backend's offset is past its end.

Durability (fsync policy): each record is written with one ``write()``, so
it is in the page cache and survives an agent crash or SIGKILL at once.
The log is fsync-ed every ``spool_fsync_interval`` seconds (default 1 s)
and at shutdown; that interval is what a power loss may cost.  Offset files
are replaced atomically (write + rename) and not fsync-ed: after a power
loss an offset can only go backwards, which means a point written twice,
never a point lost.  A torn record at the end of the log (power loss in the
middle of a write) is found by its crc at start and cut off.
"""

import bisect
import collections
import fcntl
import os
import re
import struct
import threading
import time
import zlib

RECORD = struct.Struct(">IIqI")
SEGMENT_BYTES = 16 << 20
_SEGMENT = re.compile(r"^seg-(\d{20})\.log$")

Record = collections.namedtuple(
    "Record", "start end received_ms n_points payload decoded")


class SpoolLocked(RuntimeError):
    pass


class Spool:
    """Append from the listener, read and acknowledge from the writers."""

    def __init__(self, directory, max_bytes, segment_bytes=SEGMENT_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 << 10, min(segment_bytes,
                                               max_bytes // 8))
        self.corrupt = 0
        self._lock = threading.Lock()
        self._starts = []     # first offset of each segment, ascending
        self._fd = None       # the last segment, open for append
        self._head = 0
        self._unsynced = False
        os.makedirs(directory, exist_ok=True)
        self._take_lock()
        self._recover()

    # --- opening ---------------------------------------------------------

    def _take_lock(self):
        self._lock_fd = os.open(os.path.join(self.directory, "lock"),
                                os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked("spool %s is used by another stacktrail-agent"
                              % self.directory) from None

    def _path(self, start):
        return os.path.join(self.directory, "seg-%020d.log" % start)

    def _recover(self):
        starts = sorted(int(m.group(1)) for m in
                        map(_SEGMENT.match, os.listdir(self.directory)) if m)
        if not starts:
            starts = [0]
        self._starts = starts
        last = starts[-1]
        path = self._path(last)
        valid = self._valid_length(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o600)
        if os.fstat(self._fd).st_size != valid:
            os.ftruncate(self._fd, valid)  # cut a torn tail
        self._head = last + valid

    @staticmethod
    def _valid_length(path):
        """Bytes of whole, crc-checked records at the start of a file."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return 0
        pos = 0
        while pos + RECORD.size <= len(data):
            length, crc, _, _ = RECORD.unpack_from(data, pos)
            end = pos + RECORD.size + length
            if end > len(data) or zlib.crc32(
                    data[pos + RECORD.size:end]) != crc:
                break
            pos = end
        return pos

    # --- state -----------------------------------------------------------

    @property
    def head(self):
        """Offset just past the last record."""
        return self._head

    @property
    def oldest(self):
        return self._starts[0]

    @property
    def size(self):
        """Bytes on disk (acknowledged records of the oldest segment too)."""
        return self._head - self._starts[0]

    # --- append (listener thread) ----------------------------------------

    def append(self, payload, n_points, received_ms=None):
        """(start, end) of the new record, or None when the spool is full."""
        if received_ms is None:
            received_ms = int(time.time() * 1000)
        data = RECORD.pack(len(payload), zlib.crc32(payload), received_ms,
                           n_points) + payload
        with self._lock:
            if self.size + len(data) > self.max_bytes:
                return None
            if self._head - self._starts[-1] >= self.segment_bytes:
                self._roll()
            os.write(self._fd, data)
            start = self._head
            self._head = start + len(data)
            self._unsynced = True
        return start, start + len(data)

    def _roll(self):
        os.fsync(self._fd)
        os.close(self._fd)
        self._starts.append(self._head)
        self._fd = os.open(self._path(self._head),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def sync(self):
        with self._lock:
            if self._unsynced and self._fd is not None:
                os.fsync(self._fd)
                self._unsynced = False

    # --- read (writer threads) -------------------------------------------

    def read(self, offset, max_points, max_bytes=8 << 20):
        """Whole records from ``offset``: at least one when there is one."""
        out = []
        points = size = 0
        while offset < self._head and points < max_points \
                and size < max_bytes:
            with self._lock:
                index = bisect.bisect_right(self._starts, offset) - 1
                if index < 0:
                    offset = self._starts[0]
                    continue
                start = self._starts[index]
                limit = (self._starts[index + 1]
                         if index + 1 < len(self._starts) else self._head)
            got, offset = self._read_segment(start, offset, limit,
                                             max_points - points,
                                             max_bytes - size)
            out.extend(got)
            points += sum(r.n_points for r in got)
            size += sum(r.end - r.start for r in got)
            if not got and offset < limit:
                break
        return out

    def _read_segment(self, start, offset, limit, max_points, max_bytes):
        out = []
        points = size = 0
        try:
            f = open(self._path(start), "rb")
        except FileNotFoundError:  # deleted under us: skip to the next
            return out, limit
        with f:
            f.seek(offset - start)
            while offset < limit and points < max_points and size < max_bytes:
                head = f.read(RECORD.size)
                if len(head) < RECORD.size:
                    break
                length, crc, received_ms, n_points = RECORD.unpack(head)
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    self.corrupt += 1   # unreadable: skip the segment's rest
                    return out, limit
                end = offset + RECORD.size + length
                out.append(Record(offset, end, received_ms, n_points,
                                  payload, None))
                offset = end
                points += n_points
                size += RECORD.size + length
        return out, offset

    # --- acknowledgements ------------------------------------------------

    def _ack_path(self, key):
        return os.path.join(self.directory, "ack-" + key)

    def load_ack(self, key):
        """A backend's acknowledged offset; a new backend starts at the
        oldest record kept, so nothing in the spool is skipped."""
        try:
            with open(self._ack_path(key)) as f:
                offset = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            offset = self.oldest
        return min(max(offset, self.oldest), self._head)

    def save_ack(self, key, offset):
        path = self._ack_path(key)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % offset)
        os.replace(tmp, path)

    def forget(self, keep_keys):
        """Remove offsets of backends no longer configured."""
        for name in os.listdir(self.directory):
            if name.startswith("ack-") and not name.endswith(".tmp") \
                    and name[4:] not in keep_keys:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass

    def collect(self, acked):
        """Delete segments wholly below ``acked`` (the slowest backend)."""
        doomed = []
        with self._lock:
            while len(self._starts) > 1 and self._starts[1] <= acked:
                doomed.append(self._starts.pop(0))
        for start in doomed:
            try:
                os.unlink(self._path(start))
            except OSError:
                pass
        return len(doomed)

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        os.close(self._lock_fd)
