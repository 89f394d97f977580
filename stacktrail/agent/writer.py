"""One delivery thread per backend: batch, format, write, acknowledge, retry.

Each backend has its own offset in the spool, so a backend that is down
only makes *its* offset stand still; the others keep writing.  Records
normally reach the writer straight from the listener (``offer``, already
decoded); when the writer is behind (backend down, or the live queue
overflowed) it reads them back from the spool instead, in order.

Formatting (UUID text, timestamps, osprofiler message dicts) happens here,
in the agent: records are grouped in runs of one origin (project, service,
host) and each run goes to that origin's driver as raw points, in one
``driver.write_points`` call (one round trip for Redis).  The offset moves
only when that call returned; any exception is a failed write: the same
records are retried after an exponential pause with jitter, and the driver
is rebuilt.  A retry sends exactly the run that failed (not one topped up
with newer records), so a store with idempotent batches (Redis) recognises
it and stores it once.

A backend that refuses a point for its content (a NUL byte or a lone
surrogate PostgreSQL or BSON cannot hold, a key of the wrong type) would
otherwise be retried for ever and stall every later point of that
backend.  ``base.deliver`` cleans the batch, then splits it until each
refused point stands alone; those points are set aside in the backend's
dead-letter file in the spool directory (``dead-letter-<key>.jsonl``, one
JSON line per point with the reason) and counted, and the backend moves
on.  A record read back from the spool that is not a valid frame is
counted as damage and skipped the same way.
"""

import collections
import hashlib
import json
import logging
import random
import threading
import time

from stacktrail.agent import protocol
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.common import points
from stacktrail.drivers import base

LOG = logging.getLogger(__name__)

# Points decoded records may hold in a writer's live queue; past it new
# records are not kept there (they stay in the spool and are read back
# when their turn comes), so memory is bounded whatever the input rate.
LIVE_POINTS = 100_000
MAX_ORIGINS = 256
RETRY_MIN = 0.25
DEAD_LETTER_BYTES = 16 << 20
# What a record that is not a valid frame decodes to: no points to write.
_NOTHING = protocol.EMPTY


def backend_key(connection_string):
    return hashlib.sha1(connection_string.encode()).hexdigest()[:12]


def _leading_run(records):
    """The first records of ``records`` that share one origin."""
    origin = records[0].decoded.origin
    end = 1
    while end < len(records) and records[end].decoded.origin == origin:
        end += 1
    return records[:end]


def _run_batch(run):
    """The raw points of a run of records, in order: one ``points.Batch``
    (formatted from its columns) when every record is version 2."""
    return points.Batch.concat([record.decoded.points() for record in run])


def _point_for_letter(point):
    """A refused point as the dead-letter file shows it: ids the service
    sent as integers (version 2 carries them as UUID text) are integers
    again."""
    if point is None:
        return None
    point = list(point)
    for slot in (2, 3, 4):
        if len(point) > slot:
            number = ids.canonical_int(point[slot])
            if number is not None:
                point[slot] = number
    return point


class Writer:
    """Delivers the spool to one backend."""

    def __init__(self, connection_string, spool, batch_size, flush_interval,
                 retry_max, make_driver=base.get_driver,
                 dead_letter_max=DEAD_LETTER_BYTES, log_interval=60.0):
        self.connection_string = connection_string
        self.name = "%s-%s" % (base.scheme_of(connection_string),
                               backend_key(connection_string)[:6])
        self.key = backend_key(connection_string)
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_max = retry_max
        self.make_driver = make_driver
        self.acked = spool.load_ack(self.key)
        self.live = collections.deque()
        self.live_points = max(LIVE_POINTS, 4 * batch_size)
        self._live_points = 0
        self._live_lock = threading.Lock()
        self.held = []          # records read but not yet acknowledged
        self.written = 0
        self.writes = 0         # store calls: written / writes = batch size
        self.backend_errors = 0
        # points that waited in the spool for this backend (it failed, or
        # they were read back from disk after a restart or an overflow)
        self.spooled = 0
        self.sanitized = 0       # points cleaned (NUL, lone surrogates)
        self.dead_lettered = 0   # points set aside in the dead-letter file
        self.poison_dropped = 0  # refused points the dead-letter file could
        #                          not take (full): lost, counted
        self.dead_letter_max = dead_letter_max
        self._throttle = logtext.Throttle(log_interval)
        # (first record's offset, records, points already handled) of a
        # run whose write failed: the retry sends that run again.
        self._retry = None
        self.state = "ok"
        self.last_error = ""
        self._attempt = 0
        self._drivers = {}
        self._wake = threading.Event()
        # Points that would fill the batch the writer waits for (None: not
        # waiting for one; every offer wakes it)
        self._room = None
        self._stop = threading.Event()
        self._drain_until = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stacktrail-writer-" + self.name)

    def start(self):
        self._thread.start()

    # --- listener side ---------------------------------------------------

    def offer(self, record):
        live = self.live
        with self._live_lock:
            # Full: the record waits in the spool alone.  Not the oldest
            # forgotten instead: the writer takes those first, and would
            # read (and decode) every record back from disk once behind.
            if not live or self._live_points + record.n_points <= \
                    self.live_points:
                live.append(record)
                self._live_points += record.n_points
        room = self._room
        if (room is None or self._live_points >= room) and \
                not self._wake.is_set():
            self._wake.set()

    def _live_take(self, expected):
        """The live record that begins at ``expected`` (older ones are
        discarded), or None."""
        live = self.live
        with self._live_lock:
            while live and live[0].end <= expected:
                self._live_points -= live.popleft().n_points
            if live and live[0].start == expected:
                record = live.popleft()
                self._live_points -= record.n_points
                return record
        return None

    # --- status ----------------------------------------------------------

    @property
    def lag(self):
        """Seconds the oldest unacknowledged point has waited."""
        if self.held:
            oldest = self.held[0].received_ms
        elif self.acked < self.spool.head:
            try:
                oldest = self.live[0].received_ms
            except IndexError:
                return 0.0
        else:
            return 0.0
        return max(0.0, time.time() - oldest / 1000.0)

    def status(self):
        return {"name": self.name,
                "connection_string": logtext.mask_passwords(
                    self.connection_string),
                "state": self.state, "written": self.written,
                "writes": self.writes,
                "backend_errors": self.backend_errors,
                "spooled": self.spooled, "lag": round(self.lag, 3),
                "sanitized": self.sanitized,
                "dead_lettered": self.dead_lettered,
                "poison_dropped": self.poison_dropped,
                "pending_bytes": self.spool.head - self.acked,
                "last_error": self.last_error}

    # --- delivery thread -------------------------------------------------

    def _run(self):
        while not self._stop.is_set():
            if self._drain_until is not None and \
                    time.monotonic() > self._drain_until:
                return
            if not self._fill():
                if self._drain_until is not None:
                    return   # drained: nothing left for this backend
                self._wake.wait(self._idle_wait())
                self._wake.clear()
                continue
            if not self._batch_ready():
                continue
            if self._write():
                self._attempt = 0
            else:
                self._pause()

    def _idle_wait(self):
        """How long to wait with nothing held: until woken (every record
        appended is ``offer``-ed, and that wakes us) when caught up, so an
        idle writer does not poll; a spool record that could not be read
        back is tried again after a short pause."""
        if self.acked >= self.spool.head:
            return None
        return self.flush_interval or 0.05

    def _batch_ready(self):
        """Wait for a fuller batch, at most ``flush_interval`` after the
        oldest held point arrived (no wait when draining or replaying)."""
        if self._drain_until is not None:
            return True
        held_points = sum(r.n_points for r in self.held)
        if held_points >= self.batch_size:
            return True
        wait = (self.held[0].received_ms / 1000.0 + self.flush_interval
                - time.time())
        if wait <= 0:
            return True
        # Records that cannot fill the batch need not wake us: they are
        # taken when the wait ends (one wake-up per batch, not per frame).
        self._room = self.batch_size - held_points
        self._wake.wait(min(wait, self.flush_interval))
        self._room = None
        self._wake.clear()
        self._fill()
        return False

    def _fill(self):
        """Top up ``held`` with the next records; False when none."""
        expected = self.held[-1].end if self.held else self.acked
        count = sum(r.n_points for r in self.held)
        while count < self.batch_size:
            record = self._live_take(expected)
            if record is not None:
                if self.state != "ok":
                    self.spooled += record.n_points
            elif expected < self.spool.head:
                record = self._from_disk(expected)
                if record is None:
                    break
                self.spooled += record.n_points
            else:
                break
            self.held.append(record)
            expected = record.end
            count += record.n_points
        return bool(self.held)

    def _from_disk(self, offset):
        """The record at ``offset`` read back from the spool, decoded
        (damaged records are skipped: it may begin past ``offset``)."""
        records = self.spool.read(offset, 1)
        if not records:
            return None
        record = records[0]
        try:
            decoded, n_points = protocol.decode_payload(record.payload)
        except protocol.ProtocolError:
            # A whole record (its crc matched) that is no frame of ours:
            # it can never be written; count it and move past it.
            self.spool.count_bad_record(record)
            return record._replace(decoded=_NOTHING, n_points=0)
        return record._replace(decoded=decoded, n_points=n_points)

    def _next_run(self):
        """The records to write next: the run that failed last time, or
        the leading run of one origin."""
        run = _leading_run(self.held)
        retry = self._retry
        if retry is not None and retry[0] == run[0].start:
            return run[:retry[1]], retry[2]
        self._retry = None
        return run, 0

    def _write(self):
        """Write ``held`` in runs of one origin; True when all acknowledged.

        Each run is acknowledged as soon as its store call returns, so a
        failure part-way never makes the retry write a run twice.
        """
        origin = None
        while self.held:
            run, skip = self._next_run()
            origin = run[0].decoded.origin
            batch = _run_batch(run)
            try:
                if len(batch) > skip:
                    # A slice is a plain list: slice only when needed, so
                    # that a whole ``points.Batch`` keeps its columns.
                    outcome = base.deliver(self._driver_for(origin),
                                           batch[skip:] if skip else batch)
                    self._account(origin, outcome)
            except base.Interrupted as exc:   # part stored, then failed
                self._account(origin, exc.outcome)
                self._retry = (run[0].start, len(run), skip + exc.handled)
                return self._failed_write(exc.cause, origin)
            except Exception as exc:  # any failure: keep the records, retry
                self._retry = (run[0].start, len(run), skip)
                return self._failed_write(exc, origin)
            self._retry = None
            del self.held[:len(run)]
            self.acked = run[-1].end
            self.writes += 1
        self._save_ack()
        if self.state != "ok":
            LOG.warning("backend %s is back", self.name)
        self.state = "ok"
        return True

    def _failed_write(self, exc, origin):
        self._failed(exc, origin)
        self._save_ack()
        return False

    def _account(self, origin, outcome):
        self.written += outcome.written
        self.sanitized += outcome.sanitized
        if outcome.rejected:
            self._dead_letter(origin, outcome.rejected)

    def _dead_letter(self, origin, rejected):
        """Set refused points aside, one JSON line each, and count them."""
        now = time.time()
        lines = []
        for point, reason in rejected:
            lines.append(json.dumps(
                {"time": round(now, 3), "backend": self.name,
                 "reason": reason, "origin": list(origin),
                 "point": _point_for_letter(point)},
                default=repr))
        if self.spool.dead_letter(self.key, lines, self.dead_letter_max):
            self.dead_lettered += len(rejected)
            where = self.spool.dead_letter_path(self.key)
        else:
            self.poison_dropped += len(rejected)
            where = "nowhere (the dead-letter file is full)"
        self._throttle.log(
            LOG, logging.WARNING, "poison",
            "backend %s refused %d point(s) for their content, set aside "
            "in %s; the others were written: %s", self.name, len(rejected),
            where, rejected[0][1])

    def _driver_for(self, origin):
        """One driver per (project, service, host): stores take those from
        the driver, and formatting raw points there is the fast path."""
        driver = self._drivers.get(origin)
        if driver is None:
            if len(self._drivers) >= MAX_ORIGINS:
                self._close_driver(next(iter(self._drivers)))
            project, service, host = origin
            driver = self.make_driver(self.connection_string,
                                      project=project, service=service,
                                      host=host or points.HOST)
            self._drivers[origin] = driver
        return driver

    def _close_driver(self, origin):
        driver = self._drivers.pop(origin, None)
        if driver is not None:
            try:
                driver.close()
            except Exception:
                pass

    def _save_ack(self):
        try:
            self.spool.save_ack(self.key, self.acked)
        except OSError as exc:
            LOG.warning("cannot save offset of %s: %s", self.name, exc)

    def _failed(self, exc, origin):
        self.backend_errors += 1
        self.last_error = ("%s: %s" % (type(exc).__name__, exc))[:300]
        if self.state == "ok":
            LOG.warning("backend %s failed, spooling until it answers: %s",
                        self.name, self.last_error)
        if self.state == "ok":   # what it held now waits in the spool
            self.spooled += sum(r.n_points for r in self.held)
        self.state = "retrying"
        self._close_driver(origin)   # rebuilt (reconnected) on the retry

    def _pause(self):
        """Exponential backoff with jitter (half fixed, half random)."""
        self._attempt += 1
        delay = min(self.retry_max, RETRY_MIN * 2 ** min(self._attempt, 20))
        delay = delay / 2 + random.uniform(0, delay / 2)
        if self._drain_until is not None:
            delay = min(delay, max(0.0, self._drain_until - time.monotonic()))
            if delay <= 0:
                self._stop.set()
                return
        self._stop.wait(delay)

    # --- control -----------------------------------------------------------

    def drain(self, deadline):
        """Write what is left until caught up or ``deadline`` (monotonic)."""
        self._drain_until = deadline
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.stop()

    def stop(self):
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and \
                self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for origin in list(self._drivers):
            self._close_driver(origin)
        self._save_ack()

    def caught_up(self):
        return not self.held and self.acked >= self.spool.head
