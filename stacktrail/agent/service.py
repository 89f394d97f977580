"""The agent daemon: wire listener, spool and writers; handle signals.

Threads: the listener (reads sockets, appends to the spool, offers each
record to every writer), one writer per backend, the status/metrics
servers, and the main thread, which only handles signals and housekeeping
(fsync, deleting acknowledged segments).  No thread polls: each sleeps
until its next deadline (an fsync due, a partial batch's flush, a
connection's timeout) or until woken, so an idle agent uses no CPU.

SIGTERM/SIGINT: stop listening (frames already in the kernel are still
read), let every writer drain for at most ``shutdown_timeout`` seconds,
fsync the spool and exit 0; undelivered records stay in the spool and are
replayed by the next start.  SIGHUP: re-read the config files and apply
the mutable options (backends, batch size, intervals, spool limit).
"""

import gc
import logging
import os
import signal
import threading
import time

from stacktrail.agent import listener as listener_mod
from stacktrail.agent import metrics
from stacktrail.agent import opts
from stacktrail.agent import policy as policy_mod
from stacktrail.agent import protocol
from stacktrail.agent import spool as spool_mod
from stacktrail.agent import tail as tail_mod
from stacktrail.agent import trust
from stacktrail.agent import writer as writer_mod
from stacktrail.drivers import base

LOG = logging.getLogger("stacktrail.agent")

HOUSEKEEPING = 0.5
# Young-generation threshold of the cyclic GC in the agent process (the
# interpreter's default is 700 allocations).
GC_THRESHOLD = (20000, 20, 20)


def _copy(counts):
    """A copy of a dict another thread may be adding keys to."""
    while True:
        try:
            return dict(counts)
        except RuntimeError:
            continue


class ConfigError(ValueError):
    """A configuration the agent refuses to start with (one clear line)."""


def _reason(exc):
    """An OSError as its message alone ("Address already in use"), without
    the "[Errno 98]" prefix; other errors as they print."""
    return getattr(exc, "strerror", None) or str(exc)


# glibc malloc: keep up to this much freed memory instead of handing it
# back at every free (M_TRIM_THRESHOLD), and serve blocks below this size
# from the heap rather than fresh mmap()s (M_MMAP_THRESHOLD).
MALLOC_TRIM_THRESHOLD = 128 << 20
MALLOC_MMAP_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc():
    """Stop glibc from giving memory back to the system after every batch.

    Each batch the agent formats allocates and frees thousands of message
    texts and a few large buffers; with glibc's defaults the freed top of
    the heap is returned at once and faulted in again for the next batch
    (measured here: about 1.9 us per kept 1 KiB object instead of 0.1 us).
    Retained memory stays bounded by MALLOC_TRIM_THRESHOLD, and the
    listener still calls ``malloc_trim`` after a burst of partial frames.
    Only for the daemon process; a no-op without glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def tune_gc():
    """Make the cyclic garbage collector (and malloc, ``tune_malloc``)
    cheap for the agent's workload.

    Every frame decodes into hundreds of small lists and dicts, none of them
    in a cycle (reference counting frees them), yet with the default
    thresholds each frame triggered collections, and every full collection
    walked the ~40,000 objects the imports left behind (oslo.config,
    redis-py, stevedore).  Freezing what exists after start-up takes those
    out of every collection, and a higher young threshold collects less
    often: together 20-25 % more points/s in the throughput benchmark.
    Only for the daemon process: never called in a service.
    """
    tune_malloc()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def yield_cpu(nice):
    """Let the services on this node run before the agent (``[agent]
    nice``): a nice value of at least ``nice`` and SCHED_BATCH, so that a
    frame arriving does not preempt the service that sent it and, on a
    node short of CPU, the agent falls behind (its spool holds the points)
    rather than the requests.

    Set before any thread starts (threads inherit both); a kernel that
    refuses either leaves the agent as it was.
    """
    if nice <= 0:
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (OSError, AttributeError) as exc:
        LOG.debug("agent priority left as it was: %s", exc)


def share_with_group(directory, gid):
    """``socket_group`` may reach status.sock: the spool directory becomes
    0750 with that group (its files stay 0600, the agent's alone)."""
    os.chown(directory, -1, gid, follow_symlinks=False)
    os.chmod(directory, 0o750, follow_symlinks=False)


def check_backends(connection_strings):
    if not connection_strings:
        raise ConfigError("no backend: set [agent] connection_string "
                          "(e.g. redis://127.0.0.1:6379)")
    for text in connection_strings:
        try:
            base.scheme_of(text)
            driver = base.get_driver(text)
        except base.DriverError as exc:
            raise ConfigError("bad [agent] connection_string: %s" % exc)
        except Exception as exc:
            # A store that is down is not a config error: the spool holds
            # the points until it answers.
            LOG.debug("backend %s not ready yet: %s", text, exc)
            continue
        try:
            driver.close()
        except Exception:
            pass


class Agent:

    def __init__(self, conf):
        """Check the whole configuration, then take the spool and bind
        every socket; no thread runs before ``run``, so a refused
        configuration (ConfigError, one line) leaves nothing behind."""
        self.conf = conf
        group = conf.agent
        try:
            self.address = protocol.parse_listen(group.listen)
            mode = opts.socket_mode(group.socket_mode, group.socket_group)
            gid = opts.socket_gid(group.socket_group)
            if group.metrics_listen:
                metrics.metrics_address(group.metrics_listen)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_backends(group.connection_string)
        if self.address.kind == "unix" and mode & 0o002:
            LOG.warning("socket_mode %s lets every local user send trace "
                        "points to the agent; prefer 0660 with "
                        "socket_group", group.socket_mode)
        self.started = time.time()
        self.received = 0
        self.spool_refused = {}   # reason -> points the spool did not take
        self._wake = threading.Event()
        self._stopping = False
        self._reload = False
        self._sleeping = False   # the main thread waits with no timeout
        self._fsync_every = conf.agent.spool_fsync_interval
        self.writers = {}
        self.listener = self.status_socket = self.metrics = None
        self.policy = self.tail = None
        try:
            self.spool = spool_mod.Spool(group.spool_dir,
                                         group.spool_max_bytes,
                                         log_interval=group.log_interval)
        except (spool_mod.SpoolLocked, trust.UnsafePath) as exc:
            raise ConfigError(str(exc)) from None
        except OSError as exc:
            raise ConfigError("cannot use spool_dir %s: %s"
                              % (group.spool_dir, _reason(exc))) from None
        try:
            self._bind(group, mode, gid)
        except ConfigError:
            self._abort()
            raise
        self._apply_backends(group.connection_string)
        # optional tail sampling: frames wait in the tail stage, which
        # hands the traces it keeps to _spool_frame
        try:
            self.tail = tail_mod.create(group, self._spool_frame, self.policy)
        except (ImportError, ValueError) as exc:
            self._abort()
            raise ConfigError("cannot use tail_sampling: %s"
                              % _reason(exc)) from None

    def _bind(self, group, mode, gid):
        """The listen socket, status.sock and the metrics port."""
        self.max_connections, self.nofile = listener_mod.connection_budget(
            group.max_connections,
            extra_fds=8 * len(set(group.connection_string)))
        limits = listener_mod.Limits(
            self.max_connections, group.idle_timeout, group.frame_timeout,
            group.max_buffered_bytes, group.log_interval)
        try:
            self.listener = listener_mod.Listener(
                self.address, self._on_frame, group.max_frame_bytes,
                mode=mode, group=group.socket_group, limits=limits)
        except trust.UnsafePath as exc:
            raise ConfigError(str(exc)) from None
        except (OSError, RuntimeError, KeyError) as exc:
            raise ConfigError("cannot listen on %s: %s"
                              % (self.address, _reason(exc))) from None
        try:
            if gid is not None:
                share_with_group(group.spool_dir, gid)
            self.status_socket = metrics.StatusSocket(
                opts.status_socket_path(group.spool_dir), self.snapshot,
                gid=gid)
        except (OSError, trust.UnsafePath) as exc:
            raise ConfigError("cannot serve the status socket: %s"
                              % _reason(exc)) from None
        try:
            self.policy = policy_mod.serve(group, self.address, mode)
        except (OSError, ValueError, trust.UnsafePath) as exc:
            raise ConfigError("cannot serve the sampling policy: %s"
                              % _reason(exc)) from None
        if group.metrics_listen:
            try:
                self.metrics = metrics.MetricsServer(group.metrics_listen,
                                                     self.snapshot)
            except OSError as exc:
                raise ConfigError("cannot serve metrics_listen %s: %s"
                                  % (group.metrics_listen,
                                     _reason(exc))) from None
        if self.max_connections < group.max_connections:
            LOG.warning("serving at most %d connections (max_connections "
                        "%d): the descriptor limit is %s; raise LimitNOFILE",
                        self.max_connections, group.max_connections,
                        self.nofile)

    def _abort(self):
        """Undo a start that failed: sockets closed, files removed."""
        self.close_servers()
        if self.listener is not None:
            self.listener.stop()
        for writer in list(self.writers.values()):
            writer.stop()
        self.spool.close()

    # --- data path (listener thread) -------------------------------------

    def _on_frame(self, payload, decoded, n_points):
        self.received += n_points
        if self.tail is not None:
            self.tail.offer(decoded)
            return
        self._spool_frame(payload, decoded, n_points)

    def _spool_frame(self, payload, decoded, n_points):
        now_ms = int(time.time() * 1000)
        place = self.spool.append(payload, n_points, now_ms)
        if self._sleeping:   # the main thread: an fsync (or a full disk's
            self._sleeping = False   # new segment) is due later
            self._wake.set()
        if place is None:
            reason = self.spool.refusal or "spool_error"
            self.spool_refused[reason] = \
                self.spool_refused.get(reason, 0) + n_points
            return
        if not self._fsync_every:
            self.spool.sync()
        record = spool_mod.Record(place[0], place[1], now_ms, n_points,
                                  None, decoded)
        for writer in list(self.writers.values()):
            writer.offer(record)

    # --- backends --------------------------------------------------------

    def _apply_backends(self, connection_strings):
        group = self.conf.agent
        wanted = list(dict.fromkeys(connection_strings))
        for text in list(self.writers):
            if text not in wanted:
                LOG.info("backend %s removed", self.writers[text].name)
                self.writers.pop(text).stop()
        for text in wanted:
            writer = self.writers.get(text)
            if writer is None:
                writer = writer_mod.Writer(
                    text, self.spool, group.batch_size, group.flush_interval,
                    group.retry_max_interval,
                    dead_letter_max=group.dead_letter_max_bytes,
                    log_interval=group.log_interval)
                self.writers[text] = writer
                writer.start()
            writer.batch_size = group.batch_size
            writer.flush_interval = group.flush_interval
            writer.retry_max = group.retry_max_interval
            writer.dead_letter_max = group.dead_letter_max_bytes
        self.spool.forget({w.key for w in self.writers.values()})

    def reload(self):
        """SIGHUP: re-read the config files, apply what may change live."""
        try:
            self.conf.reload_config_files()
            check_backends(self.conf.agent.connection_string)
        except Exception as exc:
            LOG.error("config reload failed, keeping the old one: %s", exc)
            return False
        self.spool.max_bytes = self.conf.agent.spool_max_bytes
        self._apply_backends(self.conf.agent.connection_string)
        LOG.info("config reloaded: %d backend(s)", len(self.writers))
        return True

    # --- status ----------------------------------------------------------

    def snapshot(self):
        backends = [w.status() for w in list(self.writers.values())]
        listener = getattr(self, "listener", None)
        dropped = _copy(listener.dropped) if listener is not None else {}
        for reason, count in _copy(self.spool_refused).items():
            dropped[reason] = dropped.get(reason, 0) + count
        spool = self.spool
        if spool.corrupt:
            # points of damaged records when their header said, else one
            # per damaged record
            dropped["spool_corrupt"] = max(spool.corrupt_points,
                                           spool.corrupt)
        poison = sum(b["poison_dropped"] for b in backends)
        if poison:
            dropped["poison"] = poison
        if self.tail is not None:
            dropped.update(self.tail.drops())
        refused = _copy(listener.refused) if listener is not None else {}
        for server in (getattr(self, "status_socket", None),
                       getattr(self, "metrics", None)):
            if server is not None and server.refused:
                refused[server.refused_reason] = server.refused
        healthy = all(b["state"] == "ok" for b in backends) \
            and spool.state == "ok"
        return {
            "status": "ok" if healthy else "degraded",
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "listen": str(self.address),
            "received": self.received,
            "written": sum(b["written"] for b in backends),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "spooled": sum(b["spooled"] for b in backends),
            "backend_errors": sum(b["backend_errors"] for b in backends),
            "sanitized": sum(b["sanitized"] for b in backends),
            "dead_lettered": sum(b["dead_lettered"] for b in backends),
            "lag": max([b["lag"] for b in backends] or [0.0]),
            "spool_bytes": spool.size,
            "spool_state": spool.state,
            "spool_error": spool.last_error if spool.disk_full else "",
            "spool_corrupt_records": spool.corrupt,
            "spool_quarantined": spool.quarantined,
            "connections": listener.connections if listener is not None
            else 0,
            "max_connections": getattr(self, "max_connections", 0),
            "buffered_bytes": listener.buffered if listener is not None
            else 0,
            "nofile": getattr(self, "nofile", None),
            "backends": backends,
            "sampling_policy": self.policy.status() if self.policy else None,
            "tail_sampling": self.tail.status() if self.tail else None,
        }

    # --- main loop -------------------------------------------------------

    def install_signals(self):
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum, frame):
        self._stopping = True
        self._wake.set()

    def _on_hup(self, signum, frame):
        self._reload = True
        self._wake.set()

    def stop(self):
        self._on_stop_signal(None, None)

    def run(self):
        for server in (self.listener, self.status_socket, self.metrics,
                       self.policy, self.tail):
            if server is not None:
                server.start()
        from stacktrail import __version__
        LOG.info("stacktrail-agent %s listening on %s, writing to %s%s",
                 __version__, self.address, ", ".join(
                     w.status()["connection_string"]
                     for w in self.writers.values()),
                 ", metrics on %s" % self.conf.agent.metrics_listen
                 if self.metrics is not None else "")
        fsync_every = self._fsync_every
        last_sync = time.monotonic()
        while not self._stopping:
            self._wake.wait(self._housekeeping_wait(last_sync))
            self._wake.clear()
            if self._reload:
                self._reload = False
                self.reload()
            now = time.monotonic()
            if now - last_sync >= fsync_every:
                self.spool.sync()
                last_sync = now
            self._collect()
        return self.shutdown()

    def _housekeeping_wait(self, last_sync):
        """Seconds until the next fsync or segment collection is due; None
        when neither can be (nothing unsynced, one segment): an idle agent
        then sleeps until a signal, or the next frame (``_spool_frame``
        wakes it), instead of waking twice a second for nothing."""
        # Raised before looking, so that an append made meanwhile is seen
        # here or wakes us; lowered for a timed wait, which needs no wake.
        self._sleeping = True
        spool = self.spool
        due = []
        if self._fsync_every and spool.unsynced:
            due.append(last_sync + self._fsync_every - time.monotonic())
        if spool.closed_segments or spool.disk_full:
            due.append(HOUSEKEEPING)
        if not due:
            return None
        self._sleeping = False
        return max(0.0, min(due))

    def _collect(self):
        if self.writers:
            self.spool.collect(min(w.acked for w in self.writers.values()))

    def shutdown(self):
        deadline = time.monotonic() + self.conf.agent.shutdown_timeout
        self.listener.stop()
        if self.tail is not None:
            self.tail.close()   # decide what is held, before draining
        for writer in list(self.writers.values()):
            writer._drain_until = deadline
            writer._wake.set()
        for writer in list(self.writers.values()):
            writer.drain(deadline)
        self._collect()
        left = {w.name: w.spool.head - w.acked
                for w in self.writers.values() if not w.caught_up()}
        if left:
            LOG.warning("stopping with undelivered points kept in the spool "
                        "(bytes per backend: %s)", left)
        snapshot = self.snapshot()
        self.close_servers()
        self.spool.close()
        LOG.info("stacktrail-agent stopped: %d points received, %d written, "
                 "%d dropped", snapshot["received"], snapshot["written"],
                 snapshot["dropped_total"])
        return 0

    def close_servers(self):
        if self.policy is not None:
            self.policy.close()
        if self.status_socket is not None:
            self.status_socket.close()
        if self.metrics is not None:
            self.metrics.close()
