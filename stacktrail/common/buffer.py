"""The in-process buffer between the request thread and the trace store.

``put`` is on the request path: one length check and one ``deque.append``
(atomic in CPython, no lock).  A daemon thread drains the deque in batches
and hands them to ``driver.write_points``; formatting and I/O happen there.

What the buffer promises the service:

* bounded: past ``max_points`` new points are dropped and counted;
* never raises and never blocks: store errors are counted, logged once per
  burst of failures, and the failed batch is dropped;
* one flusher per process: after ``fork()`` the child starts with an empty
  buffer (the parent still owns and flushes what it had) and starts its own
  flusher lazily on its first point, so every uwsgi / oslo.service worker
  delivers its own points;
* a real OS thread even under eventlet, so a slow store never stalls the hub;
* points left at interpreter exit get a short deadline to reach the store.
"""

import atexit
import collections
import logging
import os
import sys
import threading
import time
import weakref

from stacktrail.common import logtext
from stacktrail.common import points
from stacktrail.common import sink

LOG = logging.getLogger(__name__)

EXIT_DEADLINE = 2.0
# Pause after a failed write, doubling while the store keeps failing: a dead
# store is not hammered, and points arriving meanwhile overflow and count.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# While the store keeps failing, remind the operator at most this often.
REMIND_EVERY = 60.0

_SINKS = weakref.WeakSet()


def real_threading():
    """The ``threading`` module backed by OS threads, even under eventlet.

    Resolved at use time: a sink may be created before eventlet patches.
    """
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return patcher.original("threading")
    return threading


def _real_sleep():
    """``time.sleep`` that blocks only the calling OS thread."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("time"):
        return patcher.original("time").sleep
    return time.sleep




class BufferedSink(sink.Sink):
    """A bounded buffer of raw points drained by a background flusher."""

    def __init__(self, driver, max_points=100_000, batch_size=500,
                 interval=0.2):
        self.driver = driver
        self.max_points = max_points
        self.batch_size = batch_size
        self.interval = interval
        self._reset()
        _SINKS.add(self)

    def _reset(self):
        """Fresh state: at creation, and in a forked child."""
        real = real_threading()
        self._buffer = collections.deque()
        self._wake = real.Event()
        self._flush_lock = real.Lock()   # one writer at a time
        self._start_lock = real.Lock()   # one flusher thread per process
        self._drop_lock = real.Lock()    # taken only when the buffer is full
        self._thread = None
        self._generation = 0   # a flusher runs while its generation is current
        self._pid = os.getpid()
        self._taken = 0
        self.written = 0
        self.errors = 0
        self._dropped_full = 0
        self._dropped_failed = 0
        self._failing_since = None
        self._lost_before = 0  # ``dropped`` when the current outage began
        self._last_reminder = 0.0
        self._backoff = 0.0

    # counters

    @property
    def queued(self):
        """Points accepted so far (written, failed or still buffered)."""
        return self._taken + len(self._buffer)

    @property
    def dropped(self):
        """Points lost: buffer full, sink closed or the store refused them."""
        return self._dropped_full + self._dropped_failed

    def stats(self):
        return {"queued": self.queued, "written": self.written,
                "dropped": self.dropped, "errors": self.errors,
                "buffered": len(self._buffer)}

    # request path

    def put(self, point):
        buffer = self._buffer
        if len(buffer) >= self.max_points:
            self._count_drop()
            return
        buffer.append(point)
        if self._thread is None:
            self._start()
        # Wake the flusher only for a full batch; otherwise it wakes on its
        # interval.  is_set() keeps the common case free of Event.set calls.
        if len(buffer) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def __call__(self, info, context=None):
        """osprofiler's notifier door: a formatted message dict."""
        try:
            self.put(points.from_message(info))
        except Exception:  # a malformed message must not reach the caller
            self._count_drop()

    def _count_drop(self):
        with self._drop_lock:
            self._dropped_full += 1

    def _start(self):
        with self._start_lock:
            if self._thread is not None:
                return
            self._generation += 1
            thread = real_threading().Thread(
                target=self._run, args=(self._generation,),
                name="stacktrail-flusher", daemon=True)
            self._thread = thread
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: flush at exit
                pass

    # flusher thread

    def _run(self, generation):
        sleep = _real_sleep()
        while generation == self._generation:
            if len(self._buffer) < self.batch_size:
                self._wake.wait(self.interval)
            self._wake.clear()
            if self._backoff:
                sleep(self._backoff)
            with self._flush_lock:
                self._drain(None)

    def _drain(self, deadline):
        """Write batches until empty (caller holds ``_flush_lock``).

        Returns False when a batch failed or the deadline passed.
        """
        ok = True
        while self._buffer:
            if deadline is not None and time.monotonic() > deadline:
                return False
            ok = self._write(self._take()) and ok
            if not ok and self._backoff and deadline is None:
                break  # the flusher pauses; explicit flushes keep going
        return ok

    def _take(self):
        batch = []
        popleft = self._buffer.popleft
        try:
            for _ in range(self.batch_size):
                batch.append(popleft())
        except IndexError:
            pass
        self._taken += len(batch)
        return batch

    def _write(self, batch):
        dropped = self.dropped   # a hung store fills the buffer meanwhile
        try:
            self.driver.write_points(batch)
        except Exception as exc:  # a store error never reaches the service
            self._failed(batch, exc, dropped)
            return False
        self.written += len(batch)
        if self._failing_since is not None:
            LOG.warning("stacktrail: %s store is back; %d points were lost",
                        self.driver.get_name(), self._lost_in_outage())
            self._failing_since = None
        self._backoff = 0.0
        return True

    def _failed(self, batch, exc, dropped_before):
        self.errors += 1
        self._dropped_failed += len(batch)
        self._backoff = min(max(self._backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._last_reminder = now
            self._lost_before = dropped_before
            LOG.warning("stacktrail: cannot write trace points to the %s "
                        "store, dropping them until it answers: %s",
                        self.driver.get_name(), logtext.one_line(exc))
        elif now - self._last_reminder > REMIND_EVERY:
            self._last_reminder = now
            LOG.warning("stacktrail: %s store still failing, %d points "
                        "lost so far: %s", self.driver.get_name(),
                        self._lost_in_outage(), logtext.one_line(exc))

    def _lost_in_outage(self):
        """Points lost since the store began failing: the failed batches
        and the points refused meanwhile because the buffer was full (the
        flusher backs off, so a long outage loses most points that way)."""
        return self.dropped - self._lost_before

    # control

    def flush(self, timeout=None):
        """Write everything buffered now; True when it all reached the store.

        Runs on the caller's thread (tests, shutdown, the CLI), waiting at
        most ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if os.getpid() != self._pid:  # forked without the at-fork hook
            self._after_fork()
        if not self._acquire(deadline):
            return False
        try:
            return self._drain(deadline) and not self._buffer
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
        try:
            self.driver.close()
        except Exception as exc:  # closing must not fail the caller either
            LOG.debug("stacktrail: closing %s: %s", self.driver.get_name(),
                      logtext.one_line(exc))
        return drained

    def _stop_flusher(self, wait):
        with self._start_lock:
            thread, self._thread = self._thread, None
            self._generation += 1
        self._wake.set()
        if thread is not None and thread.is_alive() \
                and thread is not real_threading().current_thread():
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


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
