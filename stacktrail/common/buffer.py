"""The in-process buffer between the request thread and the trace store.

``put`` is on the request path: one length check and one ``deque.append``
(atomic in CPython, no lock).  A daemon thread drains the deque in batches
and hands them to ``driver.write_points``; formatting and I/O happen there.

What the buffer promises the service:

* bounded: past ``max_points`` new points are dropped and counted;
* never raises and never blocks: store errors are counted by reason and
  logged once per outage (with what that outage cost when the store is
  back, and a reminder every REMIND_EVERY seconds meanwhile);
* a batch the store can be given again without storing anything twice
  (``driver.retry_safe``: the points an ``agent://`` send did not hand
  over) is kept and retried by the flusher instead of being dropped, so an
  agent restart costs nothing while the buffer has room;
* one poison point (a NUL byte or a lone surrogate a store refuses) never
  takes its batch with it: the batch is cleaned, then split until the
  refused point stands alone, and only that point is dropped
  (``base.deliver``);
* every drop is counted by reason (``status()["drops"]``: buffer_full,
  store_error, store_timeout, agent_unavailable, rejected, ...), and the
  counters leave the process: a log line every ``status_interval`` seconds
  when points were dropped meanwhile, and with ``status_dir`` a JSON file
  per process that ``stacktrail status`` reads;
* one flusher per process: after ``fork()`` the child starts with an empty
  buffer (the parent still owns and flushes what it had) and starts its own
  flusher lazily on its first point, so every uwsgi / oslo.service worker
  delivers its own points;
* a real OS thread even under eventlet, so a slow store never stalls the hub;
* between traces the flusher sleeps until the next point (or until the
  status file is due) instead of waking every interval: a service traced
  now and then pays for it only while it traces;
* points left at interpreter exit get a short deadline to reach the store.
"""

import atexit
import collections
import itertools
import json
import logging
import operator
import os
import sys
import threading
import time
import weakref

from stacktrail.common import logtext
from stacktrail.common import points
from stacktrail.common import sink
from stacktrail.common import unpatched

LOG = logging.getLogger(__name__)

EXIT_DEADLINE = 2.0
# The documented default of ``[profiler] buffer_size``.
DEFAULT_MAX_POINTS = 10_000
# Pause after a failed write, doubling while the store keeps failing: a dead
# store is not hammered, and points arriving meanwhile overflow and count.
# Short enough that a store (or agent) coming back is used within a second.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
# While the store keeps failing, remind the operator at most this often.
REMIND_EVERY = 60.0
DEFAULT_STATUS_INTERVAL = 60.0

_SINKS = weakref.WeakSet()
_call = operator.call


class BufferedSink(sink.Sink):
    """A bounded buffer of raw points drained by a background flusher."""

    def __init__(self, driver, max_points=DEFAULT_MAX_POINTS, batch_size=500,
                 interval=0.2, status_interval=DEFAULT_STATUS_INTERVAL,
                 status_dir=None):
        self.driver = driver
        self.max_points = max_points
        self.batch_size = batch_size
        self.interval = interval
        self.status_interval = status_interval
        self.status_dir = status_dir or None
        # One deque for the sink's life (a forked child empties it), so
        # that ``put``, taken once by the notifier, always holds it.
        self._buffer = collections.deque()
        self._fast_below = 0
        self.put = self._make_put()
        self._reset()
        _SINKS.add(self)

    def _reset(self):
        """Fresh state: at creation, and in a forked child."""
        real = unpatched.module("threading")
        self._buffer.clear()
        self._fast_below = 0     # no flusher yet: the first put starts it
        self._idle = False       # the flusher sleeps until a put wakes it
        self._wake = real.Event()
        self._flush_lock = real.Lock()   # one writer at a time
        self._start_lock = real.Lock()   # one flusher thread per process
        self._thread = None
        self._generation = 0   # a flusher runs while its generation is current
        self._pid = os.getpid()
        self._taken = 0
        # Points of failed writes that may be written again (oldest first);
        # they count against max_points: ``put`` compares with ``_limit``.
        self._held = []
        self._limit = self.max_points
        self.written = 0
        self.errors = 0
        self.sanitized = 0
        # The request path's counter (buffer_full): ``next`` on a C counter
        # is atomic and cheaper than a lock, so a full buffer does not make
        # ``put`` slower.
        self._full = itertools.count()
        self._count_drop = self._full.__next__
        self._drops = {}         # every other reason, counted by the writer
        self._failing_since = None
        self._recovering = False  # the store answers, backlog not out yet
        self._outage_start = {}  # drops by reason when the outage began
        self._last_reminder = 0.0
        self._last_error = ""
        self._backoff = 0.0
        self._throttle = logtext.Throttle(self.status_interval or 60.0)
        self._report_at = time.monotonic()
        self._reported = {}      # drops by reason at the last report
        self._overflow_seen = 0  # buffer_full drops when last warned

    # counters

    @property
    def queued(self):
        """Points accepted so far (written, failed, held or buffered)."""
        return self._taken + len(self._buffer)

    @property
    def dropped(self):
        """Points lost, whatever the reason (see ``drops``)."""
        return self._dropped_full + sum(self._drops.values())

    @property
    def drops(self):
        """Points lost by reason."""
        drops = dict(self._drops)
        if self._dropped_full:
            drops["buffer_full"] = self._dropped_full
        return drops

    def stats(self):
        return {"queued": self.queued, "written": self.written,
                "dropped": self.dropped, "errors": self.errors,
                "buffered": len(self._buffer)}

    def status(self):
        """Every counter, as the status file and ``stacktrail status``
        show them."""
        failing = self._failing_since
        return {
            "pid": self._pid,
            "project": self.driver.project,
            "service": self.driver.service,
            "host": self.driver.host,
            "store": self.driver.get_name(),
            "state": "ok" if failing is None else "failing",
            "failing_for": 0.0 if failing is None
            else round(time.monotonic() - failing, 3),
            "last_error": self._last_error,
            "queued": self.queued,
            "written": self.written,
            "dropped": self.dropped,
            "drops": self.drops,
            "sanitized": self.sanitized,
            "errors": self.errors,
            "buffered": len(self._buffer),
            "held": len(self._held),
            "max_points": self.max_points,
            "updated": round(time.time(), 3),
        }

    # request path

    def _make_put(self):
        """The request path's door, a closure: one length check and one
        append while the buffer holds less than a batch and a flusher runs
        (``_fast_below``); everything else (the first point, a full batch
        to announce, a full buffer) takes ``_put_slowly``."""
        buffer = self._buffer
        append = buffer.append
        slowly = self._put_slowly

        def put(point):
            if len(buffer) < self._fast_below:
                append(point)
            else:
                slowly(point)

        put.__doc__ = BufferedSink.put.__doc__
        return put

    def put(self, point):
        """Enqueue a raw point; never blocks, never raises."""
        self._put_slowly(point)

    def _put_slowly(self, point):
        buffer = self._buffer
        if len(buffer) >= self._limit:
            self._count_drop()
            return
        buffer.append(point)
        if self._thread is None:
            self._start()
        # Wake the flusher for a full batch, or an idle flusher for its
        # first point; otherwise it wakes on its interval.  is_set() keeps
        # the common case free of Event.set calls.
        if (self._idle or len(buffer) >= self.batch_size) and \
                not self._wake.is_set():
            self._wake.set()

    def _set_limit(self, limit):
        """Points the buffer may hold (``max_points`` less held ones)."""
        self._limit = limit
        if self._thread is not None:
            self._fast_below = max(0, min(limit, self.batch_size - 1))

    def __call__(self, info, context=None):
        """osprofiler's notifier door: a formatted message dict."""
        try:
            self.put(points.from_message(info))
        except Exception:  # a malformed message must not reach the caller
            self._count_drop()

    @property
    def _dropped_full(self):
        return int(repr(self._full)[6:-1])   # "count(N)"

    def _start(self):
        # A thread started while the interpreter finalizes (traced code in
        # a finalizer at exit) never runs: Python 3.11 lets it die unseen,
        # so start() would wait for it for ever.  The points stay unsent.
        if sys.is_finalizing():
            return
        with self._start_lock:
            if self._thread is not None:
                return
            self._generation += 1
            try:
                thread = unpatched.module("threading").Thread(
                    target=self._run, args=(self._generation,),
                    name="stacktrail-flusher", daemon=True)
                self._thread = thread
                thread.start()
            except (RuntimeError, ImportError):   # shutting down
                return
            self._set_limit(self._limit)

    # flusher thread

    def _run(self, generation):
        sleep = unpatched.module("time").sleep
        while generation == self._generation:
            if not self._buffer and not self._held:
                self._sleep_until_put()
                self._report()
                continue
            if len(self._buffer) < self.batch_size and not self._held:
                self._wake.wait(self.interval)
            self._wake.clear()
            if self._backoff:
                sleep(self._backoff)
            with self._flush_lock:
                self._drain(None, hold=True)
            self._report()

    def _sleep_until_put(self):
        """Nothing to write: sleep until a point comes (or the status file
        is due) instead of waking every interval, so a service between
        traces pays nothing for its flusher.  Meanwhile every put takes
        the slow path, whose first one wakes the flusher; it then waits an
        interval, as ever, for the rest of the batch."""
        self._idle = True
        self._fast_below = 0
        try:
            if not self._buffer:    # a put may have come before _idle
                self._wake.wait(self.status_interval or None)
        finally:
            self._idle = False
            self._set_limit(self._limit)
        self._wake.clear()

    def _drain(self, deadline, hold=False):
        """Write batches until empty (caller holds ``_flush_lock``).

        Returns False when a batch failed or the deadline passed.  With
        ``hold`` (the flusher), a failed batch that may be retried is kept
        for the next round; an explicit flush gives up on it instead.
        """
        ok = True
        while self._held or self._buffer:
            if deadline is not None and time.monotonic() > deadline:
                return False
            ok = self._write(self._take(), hold) and ok
            if not ok and (hold or (self._backoff and deadline is None)):
                break  # the flusher pauses; explicit flushes keep going
            if self._recovering and len(self._buffer) < self.batch_size \
                    and not self._held:
                self._recovered()
        return ok

    def _take(self):
        if self._held:
            batch, self._held = self._held[:self.batch_size], \
                self._held[self.batch_size:]
            self._set_limit(self.max_points - len(self._held))
            return batch
        # Only the flusher (holding ``_flush_lock``) takes from the deque
        # and puts only add, so ``count`` points are there: popped in one
        # C-level pass.
        count = min(len(self._buffer), self.batch_size)
        batch = list(map(_call, itertools.repeat(self._buffer.popleft,
                                                 count)))
        self._taken += count
        return batch

    def _write(self, batch, hold=False):
        from stacktrail.drivers import base
        # A hung store fills the buffer meanwhile: those drops belong to
        # the outage this write may turn out to start.
        before = self.drops if self._failing_since is None else None
        try:
            outcome = base.deliver(self.driver, batch)
        except base.Interrupted as exc:  # part stored, then the store failed
            self._account(exc.outcome)
            self._failed(batch[exc.handled:], exc.cause, hold, before)
            return False
        except Exception as exc:  # a store error never reaches the service
            self._failed(batch, exc, hold, before)
            return False
        self._account(outcome)
        if self._failing_since is not None:
            self._recovering = True   # announced once the backlog is out
        self._backoff = 0.0
        return True

    def _account(self, outcome):
        self.written += outcome.written
        self.sanitized += outcome.sanitized
        confirm = getattr(self.driver, "take_confirmed", None)
        late = confirm() if confirm is not None else 0
        for reason in ("store_timeout", "store_error"):
            # Points of a batch whose reply was lost, found stored after
            # all: written, not lost.
            moved = min(late, self._drops.get(reason, 0))
            if moved:
                self._drops[reason] -= moved
                self.written += moved
                late -= moved
        if outcome.rejected:
            self._drop("rejected", len(outcome.rejected))
            self._throttle.log(
                LOG, logging.WARNING, "rejected",
                "stacktrail: the %s store refused %d trace point(s) for "
                "their content, dropped them and stored the rest: %s",
                self.driver.get_name(), len(outcome.rejected),
                outcome.rejected[0][1])

    def _drop(self, reason, count):
        if count:
            self._drops[reason] = self._drops.get(reason, 0) + count

    def _failed(self, batch, exc, hold, before=None):
        self.errors += 1
        self._last_error = logtext.one_line(exc)
        self._recovering = False
        now = time.monotonic()
        first = self._failing_since is None
        if first:
            self._failing_since = self._last_reminder = now
            self._outage_start = before if before is not None else self.drops
        lost = batch
        if hold and self.driver.retry_safe(exc):
            unsent = getattr(exc, "unsent", None)
            keep = list(batch if unsent is None else unsent)
            unencodable = getattr(exc, "lost", 0) or 0
            self._drop("unencodable", unencodable)
            # handed over before the failure
            self.written += len(batch) - len(keep) - unencodable
            self._held = keep + self._held
            self._set_limit(self.max_points - len(self._held))
            lost = ()
        self._drop(_reason(exc), len(lost))
        self._backoff = min(max(self._backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
        if first:
            LOG.warning("stacktrail: cannot write trace points to the %s "
                        "store, %s until it answers: %s",
                        self.driver.get_name(),
                        "dropping them" if lost else "holding them",
                        self._last_error)
        elif now - self._last_reminder > REMIND_EVERY:
            self._last_reminder = now
            LOG.warning("stacktrail: %s store still failing after %.0f s, "
                        "%s; %d points held for it: %s",
                        self.driver.get_name(), now - self._failing_since,
                        self._lost_text(), len(self._held), self._last_error)

    def _lost_in_outage(self):
        """Points lost, by reason, since the store began failing: the
        failed batches and the points refused meanwhile because the buffer
        was full (a long outage loses most points that way)."""
        start = self._outage_start
        lost = {}
        for reason, count in self.drops.items():
            if reason in _OUTAGE_REASONS and count > start.get(reason, 0):
                lost[reason] = count - start.get(reason, 0)
        return lost

    def _lost_text(self):
        lost = self._lost_in_outage()
        total = sum(lost.values())
        if not total:
            return "no points lost so far"
        return "%d points lost so far (%s)" % (total, _by_reason(lost))

    def _recovered(self):
        """The store answers again and the backlog is out: say what the
        outage cost (drops while the backlog drained included)."""
        lost = self._lost_in_outage()
        LOG.warning("stacktrail: %s store is back; %d points were lost "
                    "during the %.1f s outage%s",
                    self.driver.get_name(), sum(lost.values()),
                    time.monotonic() - self._failing_since,
                    " (%s)" % _by_reason(lost) if lost else "")
        self._failing_since = None
        self._recovering = False
        # Drops after this line belong to the next report, not this outage.
        self._reported = self.drops

    def _report(self):
        """Every ``status_interval``: a log line when points were dropped
        meanwhile (outside an outage, whose own lines count those), and
        the status file."""
        if not self.status_interval:
            return
        now = time.monotonic()
        failing = self._failing_since is not None
        full = self._dropped_full
        if not failing and full > max(self._overflow_seen,
                                      self._reported.get("buffer_full", 0)):
            self._overflow_seen = full
            self._throttle.log(
                LOG, logging.WARNING, "buffer_full",
                "stacktrail: the trace buffer is full (%d points), new "
                "points are dropped until the flusher catches up",
                self.max_points)
        if now - self._report_at < self.status_interval:
            return
        self._report_at = now
        drops = self.drops
        since = {r: n - self._reported.get(r, 0) for r, n in drops.items()
                 if n > self._reported.get(r, 0)}
        if not failing:
            self._reported = drops
        if since and not failing:
            LOG.warning("stacktrail: %d trace points dropped in the last "
                        "%.3g s (%s); %d written in all, %d buffered",
                        sum(since.values()), self.status_interval,
                        _by_reason(since), self.written, len(self._buffer))
        self.write_status()

    def write_status(self):
        """Write the counters to ``status_dir`` (atomically); never raises."""
        if not self.status_dir or os.getpid() != self._pid:
            return
        try:
            write_status_file(self.status_dir, self.status())
        except Exception as exc:
            self._throttle.log(LOG, logging.WARNING, "status_file",
                               "stacktrail: cannot write the status file "
                               "in %s: %s", self.status_dir,
                               logtext.one_line(exc))

    # control

    def flush(self, timeout=None):
        """Write everything buffered now; True when it all reached the store.

        Runs on the caller's thread (tests, shutdown, the CLI), waiting at
        most ``timeout`` seconds.  What the store does not take is dropped
        and counted, held points included.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if os.getpid() != self._pid:  # forked without the at-fork hook
            self._after_fork()
        if not self._acquire(deadline):
            return False
        try:
            return self._drain(deadline) and not self._buffer \
                and not self._held
        finally:
            self._flush_lock.release()

    def _acquire(self, deadline):
        """Take the flush lock by polling with ``time.sleep``.

        Under eventlet that sleep is green: a greenthread waiting here lets
        the hub run, so it can neither stall the service nor deadlock with
        another greenthread that holds the lock across green I/O.
        """
        while not self._flush_lock.acquire(blocking=False):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout=None):
        """Flush, stop the flusher and release the driver's connections.

        The sink stays usable: the notifier caches sinks per connection
        string, so a later point simply starts a new flusher.
        """
        drained = self.flush(timeout)
        self._stop_flusher(0.5 if timeout is None else min(timeout, 0.5))
        self.write_status()
        try:
            self.driver.close()
        except Exception as exc:  # closing must not fail the caller either
            LOG.debug("stacktrail: closing %s: %s", self.driver.get_name(),
                      logtext.one_line(exc))
        return drained

    def _stop_flusher(self, wait):
        with self._start_lock:
            thread, self._thread = self._thread, None
            self._fast_below = 0
            self._generation += 1
        self._wake.set()
        current = unpatched.module("threading").current_thread()
        if thread is not None and thread.is_alive() and thread is not current:
            thread.join(wait)

    def _after_fork(self):
        """In a forked child: own empty buffer, no inherited thread or lock.

        The parent's buffered points stay with the parent, so nothing is
        written twice; connections inherited from the parent are dropped.
        """
        self._reset()
        try:
            self.driver.after_fork()
        except Exception as exc:
            LOG.debug("stacktrail: %s after fork: %s", self.driver.get_name(),
                      logtext.one_line(exc))


# Reasons a store outage accounts for (the rest are the content's fault).
_OUTAGE_REASONS = frozenset(("buffer_full", "store_error", "store_timeout",
                             "agent_unavailable"))


def _reason(exc):
    """The drop reason of a failed write."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "store_timeout"
    return "store_error"


def _by_reason(counts):
    return ", ".join("%s: %d" % item for item in sorted(counts.items()))


def status_file_name(status):
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in
                    str(status.get("service") or status.get("project")
                        or "process"))[:64]
    return "%s-%d.json" % (label, status["pid"])


def write_status_file(directory, status):
    """``status`` as JSON in ``directory``, replaced atomically; no link in
    the directory is followed."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, status_file_name(status))
    tmp = "%s.%d.tmp" % (path, threading.get_ident())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(status, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _after_fork_in_child():
    for buffered in list(_SINKS):
        buffered._after_fork()


def _flush_at_exit():
    """Give every sink a share of a short deadline, then stop."""
    deadline = time.monotonic() + EXIT_DEADLINE
    for buffered in list(_SINKS):
        if buffered._pid != os.getpid():
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        buffered._stop_flusher(0)
        if not buffered.flush(left) and buffered._buffer:
            LOG.debug("stacktrail: %d trace points unsent at exit",
                      len(buffered._buffer))
        buffered.write_status()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
