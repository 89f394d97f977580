"""The agent's on-disk spool: an append-only log with one offset per backend.

Every frame the agent accepts is appended here before any backend sees it,
so a backend outage, an agent crash or a restart loses nothing the agent
has accepted.  Layout of ``spool_dir``::

    seg-<first offset, 20 digits>.log   records, appended, never rewritten
    ack-<backend key>                   the offset that backend acknowledged
    dead-letter-<backend key>.jsonl     points that backend refused for good
    lock                                flock: one agent per spool

A record is ``length, crc32, received_ms, n_points`` (20 bytes) and the
frame's payload as it came (either wire version, see ``protocol``).
Offsets are byte positions in the log as a whole, so they only grow.  A
backend's offset moves only after its driver returned from the write (the
store acknowledged); a segment is deleted only when every backend's offset
is past its end.

Durability (fsync policy): each record is written with one ``write()``, so
it is in the page cache and survives an agent crash or SIGKILL at once.
The log is fsync-ed every ``spool_fsync_interval`` seconds (default 1 s)
and at shutdown; that interval is what a power loss may cost.  Offset files
are created atomically (write + rename), then rewritten in place (one
``pwrite`` of a few bytes at offset 0, never torn for a reader or by a
crash of the agent), and not fsync-ed: after a power loss an offset can
only go backwards, which means a point written twice, never a point lost.

Damage is contained, counted and never silent:

* a write the disk cannot take whole (ENOSPC, a short write) is cut back
  to where the record began, so the log never holds half a record in the
  middle; the frame is refused (``refusal`` says "disk_full") and counted
  by the caller.  While the disk is full the housekeeping starts a new
  segment, so that the old one is deleted, and its space freed, as soon as
  every backend has acknowledged it;
* a record whose crc does not match is skipped on its own: the reader
  finds the next whole record after it and goes on, counting each record
  (and its points, when its header can still be read) in ``corrupt`` and
  ``corrupt_points``; at start only a torn tail (nothing valid after it)
  is cut off;
* segments that do not continue the log (a stray file with a far offset,
  not a regular file, not ours) are moved aside as ``quarantine-*`` at
  start instead of being trusted;
* the directory is private (see ``trust``) and no file in it is opened
  through a symbolic link.
"""

import bisect
import collections
import errno
import fcntl
import logging
import os
import re
import stat
import struct
import threading
import time
import zlib

from stacktrail.agent import trust
from stacktrail.common import logtext

LOG = logging.getLogger(__name__)

RECORD = struct.Struct(">IIqI")
SEGMENT_BYTES = 16 << 20
_SEGMENT = re.compile(r"^seg-(\d{20})\.log$")
# What a real record header looks like, to find the next one after damage.
_MIN_MS = 10 ** 12          # 2001
_MAX_MS = 10 ** 13          # 2286
_MAX_POINTS = 10 ** 7
_MAX_SEEN = 100_000
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

Record = collections.namedtuple(
    "Record", "start end received_ms n_points payload decoded")


class SpoolLocked(RuntimeError):
    pass


def _plausible(data, pos):
    """(end, n_points) of a whole, crc-checked record at ``pos`` or None."""
    if pos + RECORD.size > len(data):
        return None
    length, crc, received_ms, n_points = RECORD.unpack_from(data, pos)
    end = pos + RECORD.size + length
    if end > len(data) or not _MIN_MS <= received_ms < _MAX_MS \
            or n_points > _MAX_POINTS:
        return None
    if zlib.crc32(memoryview(data)[pos + RECORD.size:end]) != crc:
        return None
    return end, n_points


# The first byte of a payload: "[" (wire version 1, JSON) or 0x02 (wire
# version 2, see ``protocol``).
_PAYLOAD_START = re.compile(rb"[\[\x02]")


def _next_record(data, pos):
    """The offset of the first whole record after ``pos``, or None.

    A payload begins with "[" (version 1) or the byte 0x02 (version 2), so
    a record starts 20 bytes before one of those.
    """
    search = _PAYLOAD_START.search
    at = pos + 1 + RECORD.size
    while True:
        found = search(data, at)
        if found is None:
            return None
        at = found.start()
        start = at - RECORD.size
        if _plausible(data, start) is not None:
            return start
        at += 1


def scan(data):
    """Walk the records of a segment's bytes.

    Returns (end of the last whole record, list of damaged stretches as
    (start, end, n_points or None)).  A damaged stretch ends where the
    next whole record begins; damage with nothing whole after it is a torn
    tail and not listed.
    """
    pos = 0
    damaged = []
    valid_end = 0
    while pos + RECORD.size <= len(data):
        found = _plausible(data, pos)
        if found is not None:
            pos = valid_end = found[0]
            continue
        following = _next_record(data, pos)
        if following is None:
            break
        length, _, _, n_points = RECORD.unpack_from(data, pos)
        # The header was intact when the damage is the payload alone.
        known = n_points if (pos + RECORD.size + length == following
                             and n_points <= _MAX_POINTS) else None
        damaged.append((pos, following, known))
        pos = following
    return valid_end, damaged


class Spool:
    """Append from the listener, read and acknowledge from the writers."""

    def __init__(self, directory, max_bytes, segment_bytes=SEGMENT_BYTES,
                 log_interval=60.0):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 << 10, min(segment_bytes,
                                               max_bytes // 8))
        self.corrupt = 0          # damaged records skipped
        self.corrupt_points = 0   # their points, when their header said
        self.quarantined = 0      # files moved aside at start
        self.disk_full = False
        self.refusal = None       # why the last append returned None
        self.last_error = ""
        self._seen = set()        # damaged offsets already counted
        self._throttle = logtext.Throttle(log_interval)
        self._lock = threading.Lock()
        self._starts = []     # first offset of each segment, ascending
        self._fd = None       # the last segment, open for append
        self._head = 0
        self._unsynced = False
        self._ack_files = {}  # backend key -> (open offset file, length)
        self._ack_lock = threading.Lock()
        trust.make_private_dir(directory, "spool_dir")
        self._take_lock()
        self._recover()

    # --- opening ---------------------------------------------------------

    def _take_lock(self):
        self._lock_fd = trust.open_file(os.path.join(self.directory, "lock"),
                                        os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked("spool %s is used by another stacktrail-agent"
                              % self.directory) from None

    def _path(self, start):
        return os.path.join(self.directory, "seg-%020d.log" % start)

    def _quarantine(self, name, why):
        self.quarantined += 1
        try:
            os.rename(os.path.join(self.directory, name),
                      os.path.join(self.directory, "quarantine-" + name))
        except OSError:
            pass
        LOG.warning("spool: %s moved aside as quarantine-%s: %s",
                    name, name, why)

    def _segments(self):
        """(start, size) of the files that may be segments, ascending."""
        euid = os.geteuid()
        found = []
        for name in os.listdir(self.directory):
            match = _SEGMENT.match(name)
            if not match:
                continue
            st = os.lstat(os.path.join(self.directory, name))
            if not stat.S_ISREG(st.st_mode) or st.st_uid != euid:
                self._quarantine(name, "not a regular file of the agent's")
                continue
            found.append((int(match.group(1)), st.st_size))
        return sorted(found)

    def _raw_acks(self):
        acks = []
        for name in os.listdir(self.directory):
            if name.startswith("ack-") and not name.endswith(".tmp"):
                value = self._read_ack_file(os.path.join(self.directory,
                                                         name))
                if value is not None:
                    acks.append(value)
        return acks

    def _recover(self):
        segments = self._segments()
        # Runs of segments that continue each other.  A later segment may
        # begin inside the previous one's file when a cut-back failed.
        runs = []
        for start, size in segments:
            if runs:
                last_start, last_size = runs[-1][-1]
                if last_start < start <= last_start + last_size:
                    runs[-1].append((start, size))
                    continue
            runs.append([(start, size)])
        if len(runs) > 1:
            acks = self._raw_acks()
            floor = min(acks) if acks else None

            def holds_ack(run):
                return floor is not None and \
                    run[0][0] <= floor <= run[-1][0] + run[-1][1]

            keep = next((r for r in runs if holds_ack(r)), None) or max(
                runs, key=lambda r: r[-1][0] + r[-1][1] - r[0][0])
            for run in runs:
                if run is not keep:
                    for start, _ in run:
                        self._quarantine(
                            os.path.basename(self._path(start)),
                            "it does not continue the spool's log")
            runs = [keep]
        starts = [start for start, _ in runs[0]] if runs else [0]
        self._starts = starts
        last = starts[-1]
        path = self._path(last)
        valid = self._valid_length(path)
        self._fd = trust.open_file(path, os.O_WRONLY | os.O_CREAT
                                   | os.O_APPEND)
        if os.fstat(self._fd).st_size != valid:
            os.ftruncate(self._fd, valid)  # cut a torn tail
        self._head = last + valid

    @staticmethod
    def _valid_length(path):
        """Bytes up to the end of the last whole record of a file."""
        try:
            fd = trust.open_file(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        return scan(data)[0]

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

    @property
    def unsynced(self):
        """Records were appended since the last fsync."""
        return self._unsynced

    @property
    def closed_segments(self):
        """Segments before the one appended to (``collect`` may delete)."""
        return len(self._starts) - 1

    @property
    def state(self):
        return "disk_full" if self.disk_full else "ok"

    # --- append (listener thread) ----------------------------------------

    def append(self, payload, n_points, received_ms=None):
        """(start, end) of the new record, or None when it was refused
        (``refusal``: "spool_full", "disk_full" or "spool_error")."""
        if received_ms is None:
            received_ms = int(time.time() * 1000)
        data = RECORD.pack(len(payload), zlib.crc32(payload), received_ms,
                           n_points) + payload
        with self._lock:
            if self._fd is None:
                self.refusal = "spool_error"
                return None
            if self.size + len(data) > self.max_bytes:
                self.refusal = "spool_full"
                return None
            if self._head - self._starts[-1] >= self.segment_bytes:
                self._roll()
            start = self._head
            try:
                self._write_all(data)
            except OSError as exc:
                self._refused_write(start, exc)
                return None
            self._head = start + len(data)
            self._unsynced = True
            if self.disk_full:
                self.disk_full = False
                LOG.warning("spool: writing again after the disk was full")
        return start, start + len(data)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]

    def _refused_write(self, start, exc):
        """Cut a partly written record back off (caller holds the lock)."""
        try:
            os.ftruncate(self._fd, start - self._starts[-1])
        except OSError:
            # Cannot cut: begin a new segment at ``start`` so that nothing
            # is ever appended after the torn bytes (readers stop at the
            # next segment's start).
            self._roll(force=True)
        disk = exc.errno in _DISK_ERRORS
        self.refusal = "disk_full" if disk else "spool_error"
        self.disk_full = self.disk_full or disk
        self.last_error = logtext.one_line(exc)
        self._throttle.log(LOG, logging.WARNING, self.refusal,
                           "spool: cannot append to %s (%s): refusing new "
                           "points until it can", self.directory,
                           self.last_error)

    def _roll(self, force=False):
        """Begin a new segment at the head (caller holds the lock)."""
        if self._head == self._starts[-1] and not force:
            return True
        try:
            os.fsync(self._fd)
        except OSError:
            pass
        path = self._path(self._head)
        try:
            try:
                fd = trust.open_file(path, os.O_WRONLY | os.O_CREAT
                                     | os.O_EXCL | os.O_APPEND)
            except FileExistsError:
                self._quarantine(os.path.basename(path),
                                 "it was in the way of a new segment")
                fd = trust.open_file(path, os.O_WRONLY | os.O_CREAT
                                     | os.O_EXCL | os.O_APPEND)
        except OSError as exc:
            self._throttle.log(LOG, logging.WARNING, "roll",
                               "spool: cannot begin a new segment: %s",
                               logtext.one_line(exc))
            return False
        os.close(self._fd)
        self._fd = fd
        if self._starts[-1] != self._head:
            self._starts.append(self._head)
        return True

    def sync(self):
        with self._lock:
            if self._unsynced and self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self._throttle.log(LOG, logging.WARNING, "fsync",
                                       "spool: fsync failed: %s",
                                       logtext.one_line(exc))
                    return
                self._unsynced = False

    # --- read (writer threads) -------------------------------------------

    def read(self, offset, max_points, max_bytes=8 << 20):
        """Whole records from ``offset``: at least one when there is one.

        Damaged records are skipped and counted; the offset of the first
        record returned can therefore be past ``offset``.
        """
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
            fd = trust.open_file(self._path(start), os.O_RDONLY)
        except FileNotFoundError:  # deleted under us: skip to the next
            return out, limit
        with os.fdopen(fd, "rb") as f:
            f.seek(offset - start)
            while offset < limit and points < max_points and size < max_bytes:
                head = f.read(RECORD.size)
                if len(head) < RECORD.size:
                    if offset < limit:   # the file ends before the log does
                        self._count_damage(offset, None)
                        return out, limit
                    break
                length, crc, received_ms, n_points = RECORD.unpack(head)
                end = offset + RECORD.size + length
                payload = f.read(length) if end <= limit else b""
                if end > limit or len(payload) < length or \
                        zlib.crc32(payload) != crc:
                    offset = self._skip_damage(f, start, offset, limit)
                    continue
                out.append(Record(offset, end, received_ms, n_points,
                                  payload, None))
                offset = end
                points += n_points
                size += RECORD.size + length
        return out, offset

    def _skip_damage(self, f, start, offset, limit):
        """The offset of the next whole record after damage at ``offset``
        (``limit`` when none is left in the segment); counts the damage."""
        f.seek(offset - start)
        data = f.read(limit - offset)
        following = _next_record(data, 0)
        if following is None:
            self._count_damage(offset, None)
            return limit
        length, _, _, n_points = RECORD.unpack_from(data, 0) \
            if len(data) >= RECORD.size else (None, 0, 0, 0)
        known = n_points if (length is not None and RECORD.size + length
                             == following and n_points <= _MAX_POINTS) \
            else None
        self._count_damage(offset, known)
        f.seek(offset + following - start)
        return offset + following

    def _count_damage(self, offset, n_points):
        """Count a damaged record once, whichever writer met it first."""
        with self._lock:
            if offset in self._seen:
                return
            if len(self._seen) < _MAX_SEEN:
                self._seen.add(offset)
            self.corrupt += 1
            self.corrupt_points += n_points or 0
        self._throttle.log(LOG, logging.WARNING, "corrupt",
                           "spool: skipped a damaged record at offset %d "
                           "(%s points); %d damaged records so far",
                           offset, "?" if n_points is None else n_points,
                           self.corrupt)

    def count_bad_record(self, record):
        """A whole record whose payload is not a valid frame (a writer
        found out while decoding it): counted like damage."""
        self._count_damage(record.start, record.n_points)

    # --- acknowledgements ------------------------------------------------

    def _ack_path(self, key):
        return os.path.join(self.directory, "ack-" + key)

    @staticmethod
    def _read_ack_file(path):
        try:
            fd = trust.open_file(path, os.O_RDONLY)
            with os.fdopen(fd) as f:
                return int(f.read(64).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def load_ack(self, key):
        """A backend's acknowledged offset; a new backend starts at the
        oldest record kept, so nothing in the spool is skipped."""
        offset = self._read_ack_file(self._ack_path(key))
        if offset is None:
            offset = self.oldest
        return min(max(offset, self.oldest), self._head)

    def save_ack(self, key, offset):
        """Record a backend's offset.  The first time, the file is replaced
        atomically (whatever was at its path, a link included, goes); then
        the same file is rewritten in place: one ``pwrite`` instead of five
        file-system calls after every batch a writer delivers."""
        text = b"%d\n" % offset
        # The lock: a writer that outlived its stop never writes through a
        # descriptor ``forget`` or ``close`` just closed (and the system
        # may have given to another file).
        with self._ack_lock:
            held = self._ack_files.get(key)
            if held is not None:
                fd, length = held
                os.pwrite(fd, text, 0)
                if len(text) < length:   # an offset that went backwards
                    os.ftruncate(fd, len(text))
                self._ack_files[key] = (fd, len(text))
                return
            self._replace_ack(key, text)
            self._ack_files[key] = (trust.open_file(self._ack_path(key),
                                                    os.O_WRONLY), len(text))

    def _close_ack(self, key):
        with self._ack_lock:
            held = self._ack_files.pop(key, None)
            if held is not None:
                os.close(held[0])

    def _replace_ack(self, key, text):
        path = self._ack_path(key)
        tmp = path + ".tmp"
        try:
            os.unlink(tmp)   # whatever is there, a link included, goes
        except FileNotFoundError:
            pass
        fd = trust.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def forget(self, keep_keys):
        """Remove offsets of backends no longer configured."""
        for name in os.listdir(self.directory):
            if name.startswith("ack-") and not name.endswith(".tmp") \
                    and name[4:] not in keep_keys:
                self._close_ack(name[4:])
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass

    # --- dead letters ----------------------------------------------------

    def dead_letter_path(self, key):
        return os.path.join(self.directory, "dead-letter-%s.jsonl" % key)

    def dead_letter(self, key, lines, max_bytes):
        """Append JSON lines to a backend's dead-letter file; False when it
        would grow past ``max_bytes`` or cannot be written."""
        data = "".join(line + "\n" for line in lines).encode()
        try:
            fd = trust.open_file(self.dead_letter_path(key),
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size + len(data) > max_bytes:
                return False
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    # --- space -----------------------------------------------------------

    def collect(self, acked):
        """Delete segments wholly below ``acked`` (the slowest backend).

        While the disk is full, the last segment is closed too (a new one
        begins), so that once acknowledged it can go as well.
        """
        doomed = []
        with self._lock:
            if self.disk_full and self._head > self._starts[-1]:
                self._roll()
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
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass
                os.close(self._fd)
                self._fd = None
        for key in list(self._ack_files):
            self._close_ack(key)
        os.close(self._lock_fd)
