"""The agent's local endpoint: one thread, one selector, many services.

Transport, chosen by measurement (``benchmarks/agent_throughput.py
transport``, this 2-core machine, kernel defaults ``rmem_default`` 208 KiB,
``wmem_max``/``rmem_max`` 4 MiB, ``net.unix.max_dgram_qlen`` 10).  A
sender pushes a burst of 10,000 points (250 bytes each, 10 per message)
with non-blocking sends at a receiver that needs 10 us per point, like the
agent:

    ======================  ===================  ===========
    transport               buffer               points lost
    ======================  ===================  ===========
    Unix datagram           default              94 %
    Unix datagram           8 MiB SO_RCVBUF      96 %
    UDP loopback            default              93 %
    UDP loopback            8 MiB SO_RCVBUF      0 %
    Unix stream             default              95 %
    Unix stream             4 MiB SO_SNDBUF      0 %
    ======================  ===================  ===========

Unix datagrams are capped by the queue length (10 datagrams here) whatever
the buffer size.  UDP with a large receive buffer survives the burst, but
loses silently once the buffer fills and the sender never learns that the
agent is gone.  A Unix stream with a 4 MiB send buffer survived it too, the
sender learns at once when the agent dies or restarts (EPIPE, then
reconnect), frames can be large (fewer syscalls), and the socket file's
mode and group say which services may send.  So ``unix://`` stream is the
default and the recommendation; TCP and UDP on loopback are there for
containers that share the network namespace but not a filesystem.

Everything that arrives is checked (``protocol``): a bad frame is dropped
and counted by reason, a connection whose byte stream cannot be trusted any
more (bad magic, announced length above ``max_frame_bytes``) is closed, and
the listener keeps serving everyone else.

Hostile or broken clients cannot make it spin, flood the log or grow
without bound (``Limits``):

* connections: at most ``max_connections``, never more than the descriptor
  limit leaves room for (the agent raises its soft ``RLIMIT_NOFILE`` to the
  hard one at start and keeps a reserve for spool files, backends and the
  status endpoints).  When full, the connection idle the longest is closed
  to make room (a service reconnects on its next batch); only when every
  connection is busy is the new one refused.  If ``accept`` still hits the
  descriptor limit (EMFILE), a reserved descriptor is given up to take the
  pending connection off the queue and close it, and accepting pauses
  briefly: no busy loop;
* time: a connection silent for ``idle_timeout`` seconds, or that began a
  frame and has not finished it ``frame_timeout`` seconds later, is closed;
* memory: partial frames held for all connections together stay under
  ``max_buffered_bytes`` (the oldest partial frames are given up first),
  and every read goes into one preallocated buffer; after a burst of such
  closes the freed memory is handed back to the system (``malloc_trim``);
* every refusal is counted by reason (``refused``) and logged at most once
  per ``log_interval``.
"""

import collections
import ctypes
import ctypes.util
import errno
import grp
import logging
import os
import resource
import selectors
import socket
import stat
import threading
import time

from stacktrail.agent import protocol
from stacktrail.agent import trust
from stacktrail.common import logtext

LOG = logging.getLogger(__name__)

RECV_BYTES = 1 << 20
RECV_BUFFER = 8 << 20
MAX_CONNECTIONS = 1024
# Descriptors kept free for everything but service connections: spool
# segments, offsets, the dead-letter files, backend connections, the
# status and metrics endpoints.
FD_RESERVE = 128
# A connection idle for less than this is never closed to make room.
EVICT_MIN_IDLE = 1.0
# Pause of the accept loop after the descriptor limit was hit.
ACCEPT_PAUSE = 0.2
HOUSEKEEPING = 0.5
TRIM_AFTER_BYTES = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

Limits = collections.namedtuple(
    "Limits", "max_connections idle_timeout frame_timeout "
              "max_buffered_bytes log_interval")
DEFAULT_LIMITS = Limits(MAX_CONNECTIONS, 300.0, 30.0, 64 << 20, 60.0)


ListenError = trust.UnsafePath
check_private_dir = trust.check_private_dir


def _set_rcvbuf(sock, size):
    """Raise the receive buffer; as root past rmem_max (SO_RCVBUFFORCE)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass


def _prepare_unix_path(path):
    """The socket's directory exists and is safe; no stale socket is left.

    A socket file nobody answers on (a dead agent's) is removed; a live one
    is refused; anything else at the path (a regular file, a symbolic link,
    a directory) is an error and is left alone.
    """
    directory = os.path.dirname(path) or "/"
    if not os.path.lexists(directory):
        os.makedirs(directory, mode=0o755)
    check_private_dir(directory, "directory of the listen socket",
                      allow_root_owner=True, mode_hint=0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError("%s exists and is not a socket (%s); the agent "
                          "does not remove it: move it away or choose "
                          "another listen path" % (path, _kind(st.st_mode)))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)   # a dead agent's socket
        return
    finally:
        probe.close()
    raise ListenError("another agent is listening on %s" % path)


def _kind(mode):
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a socket"


def bind(address, mode=0o600, group=""):
    """A bound (and, for streams, listening) non-blocking socket."""
    sock = socket.socket(address.family, address.socktype)
    try:
        if address.kind == "unix":
            _prepare_unix_path(address.target)
            old = os.umask(0o177)  # no window where others may connect
            try:
                sock.bind(address.target)
            finally:
                os.umask(old)
            if group:
                os.chown(address.target, -1, grp.getgrnam(group).gr_gid,
                         follow_symlinks=False)
            os.chmod(address.target, mode)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.target)
        _set_rcvbuf(sock, RECV_BUFFER)
        if address.is_stream:
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        bound = address.kind == "unix" and sock.getsockname()
        sock.close()
        if bound:   # ours, half set up (chown/chmod failed): no leftover
            os.unlink(address.target)
        raise
    return sock


def connection_budget(wanted, extra_fds=0):
    """How many service connections fit under the descriptor limit.

    Raises the soft limit to the hard one first (the unit sets
    ``LimitNOFILE``; without it the soft limit is often 1024).  Returns
    (connections, soft limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted, soft
    reserve = min(FD_RESERVE + extra_fds, soft // 2)
    return max(8, min(wanted, soft - reserve)), soft


_libc = None


def _trim_memory():
    """Give freed heap memory back to the system (glibc), when possible."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        _libc = False


class Waker:
    """A pipe a selector watches: a thread blocked in ``select`` with no
    timeout (an idle server sleeps instead of polling) is woken to stop.

    ``close`` and ``wake`` take a lock: a late ``wake`` never writes to a
    descriptor number that was closed and given to another file."""

    def __init__(self):
        self._lock = threading.Lock()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def watch(self, selector):
        selector.register(self._read, selectors.EVENT_READ, self)

    def wake(self):
        with self._lock:
            if self._write is not None:
                try:
                    os.write(self._write, b"\0")
                except OSError:   # full: a wake-up is pending anyway
                    pass

    def drain(self):
        try:
            os.read(self._read, 4096)
        except OSError:
            pass

    def close(self):
        with self._lock:
            if self._write is not None:
                os.close(self._read)
                os.close(self._write)
                self._read = self._write = None


class _Conn:
    """One service connection: its frame reader and its timings."""

    __slots__ = ("sock", "reader", "last", "since")

    def __init__(self, sock, reader, now):
        self.sock = sock
        self.reader = reader
        self.last = now      # last byte received (monotonic)
        self.since = None    # when the partial frame in ``reader`` began


class Listener:
    """Reads frames and hands ``(payload, decoded, n_points)`` to a callback.

    ``dropped`` (reason -> count of frames or points) and ``refused``
    (reason -> count of connections) are owned by this thread.
    """

    def __init__(self, address, on_frame, max_frame, mode=0o600, group="",
                 limits=DEFAULT_LIMITS, max_connections=None):
        self.address = address
        self.on_frame = on_frame
        self.max_frame = max_frame
        self.limits = limits
        self.max_connections = max_connections or limits.max_connections
        self.dropped = {}
        self.refused = {}
        self.frames = 0
        self.hellos = 0            # services that asked for the wire version
        self.buffered = 0          # bytes of partial frames, all connections
        self._conns = collections.OrderedDict()   # fd -> _Conn, LRU first
        self._partial = {}         # fd -> _Conn holding a partial frame
        self._recv = bytearray(RECV_BYTES)
        self._view = memoryview(self._recv)
        self._throttle = logtext.Throttle(limits.log_interval)
        self._accept_paused_until = 0.0
        self._next_housekeeping = 0.0
        self._freed = 0
        self._reserve = self._open_reserve()
        self._sock = bind(address, mode, group)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._waker = Waker()
        self._waker.watch(self._selector)
        self._listening = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stacktrail-listener")

    @property
    def connections(self):
        return len(self._conns)

    def start(self):
        self._thread.start()

    def _drop(self, reason, count=1):
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def _refuse(self, reason, message, *args):
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._throttle.log(LOG, logging.WARNING, reason,
                           "refused: " + message, *args)

    @staticmethod
    def _open_reserve():
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    # --- loop ------------------------------------------------------------

    def _run(self):
        while not self._stop.is_set():
            self._poll(self._timeout())
            self._housekeeping()
        # Shutting down: no new data (a Unix-socket sender gets EPIPE and
        # keeps its batch for the next agent), read whatever the kernel
        # still holds, then close.
        self._stop_reading()
        while self._poll(0):
            pass
        self._close_all()

    def _timeout(self):
        """Seconds until housekeeping has work (None: nothing can time
        out): an idle listener sleeps in ``select`` instead of waking
        every round only to find nothing to do."""
        due = []
        if not self._listening:
            due.append(self._accept_paused_until)
        if self._partial or self._freed >= TRIM_AFTER_BYTES:
            due.append(self._next_housekeeping)
        elif self._conns and self.limits.idle_timeout:
            oldest = next(iter(self._conns.values()))   # least recent
            due.append(max(oldest.last + self.limits.idle_timeout,
                           self._next_housekeeping))
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _poll(self, timeout):
        """One round; True when anything was read."""
        busy = False
        events = self._selector.select(timeout)
        now = time.monotonic()
        for key, _ in events:
            try:
                if key.data is self._waker:
                    self._waker.drain()
                elif key.data is None:
                    busy |= self._on_listen_socket(now)
                else:
                    busy |= self._on_connection(key.data, now)
            except Exception as exc:  # never let one input stop the listener
                self._drop("internal_error")
                if self._throttle.ready("internal_error")[0]:
                    LOG.exception("listener error: %s", logtext.one_line(exc))
        return busy

    def _on_listen_socket(self, now):
        if not self.address.is_stream:
            return self._on_datagrams()
        accepted = False
        for _ in range(64):   # several per round, bounded
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                 errno.ENOMEM):
                    self._shed(now, exc)
                    return True
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            if len(self._conns) >= self.max_connections \
                    and not self._make_room(now):
                conn.close()
                self._refuse("too_many_connections",
                             "%d connections open (the limit) and none idle "
                             "for %.0f s", len(self._conns), EVICT_MIN_IDLE)
                continue
            conn.setblocking(False)
            state = _Conn(conn, protocol.FrameReader(self.max_frame), now)
            self._conns[conn.fileno()] = state
            self._selector.register(conn, selectors.EVENT_READ, state)
            accepted = True
        return accepted

    def _make_room(self, now):
        """Close the connection idle the longest, if it is idle at all."""
        fd, oldest = next(iter(self._conns.items()))
        if now - oldest.last < EVICT_MIN_IDLE:
            return False
        self._close(oldest, "evicted")
        self._throttle.log(LOG, logging.WARNING, "evicted",
                           "%d connections open (the limit): closed the one "
                           "idle the longest to serve a new one",
                           len(self._conns) + 1)
        return True

    def _shed(self, now, exc):
        """accept() hit the descriptor limit: refuse without spinning."""
        self._refuse("fd_limit", "descriptor limit reached (%s) with %d "
                     "connections open", exc.strerror, len(self._conns))
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                conn, _ = self._sock.accept()
                conn.close()
            except OSError:
                pass
            self._reserve = self._open_reserve()
        # Serve at most what fits now, and stop watching the listen socket
        # for a moment: its queue stays readable, select would spin.
        self.max_connections = max(8, min(self.max_connections,
                                          len(self._conns)))
        if self._listening:
            self._selector.unregister(self._sock)
            self._listening = False
        self._accept_paused_until = now + ACCEPT_PAUSE

    def _on_datagrams(self):
        busy = False
        for _ in range(256):  # bounded, so a flood cannot starve shutdown
            try:
                data, sender = self._sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            busy = True
            try:
                self._handle(protocol.split_datagram(data, self.max_frame),
                             self._sock, sender)
            except protocol.ProtocolError as exc:
                self._drop(exc.reason)
        return busy

    def _on_connection(self, state, now):
        try:
            size = state.sock.recv_into(self._recv)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            size = 0
        if not size:
            self._close(state, None)
            return True
        state.last = now
        fd = state.sock.fileno()
        self._conns.move_to_end(fd)
        reader = state.reader
        before = len(reader.buffer)
        try:
            payloads = reader.feed(self._view[:size])
        except protocol.ProtocolError as exc:
            self._drop(exc.reason)   # counted once, not also as truncated
            reader.buffer = bytearray()
            self.buffered -= before
            self._freed += before
            self._close(state, None)
            return True
        after = len(reader.buffer)
        self.buffered += after - before
        if after:
            if payloads or state.since is None:
                state.since = now      # a new frame began
                self._partial[fd] = state
        elif state.since is not None:
            state.since = None
            self._partial.pop(fd, None)
        for payload in payloads:
            try:
                self._handle(payload, state.sock)
            except Exception as exc:  # one frame's failure is its own
                self._drop("internal_error")
                if self._throttle.ready("internal_error")[0]:
                    LOG.exception("listener error on a frame: %s",
                                  logtext.one_line(exc))
        if self.buffered > self.limits.max_buffered_bytes:
            self._shrink()
        return True

    def _shrink(self):
        """Give up the oldest partial frames until under the memory cap."""
        for state in sorted(self._partial.values(), key=lambda c: c.since):
            if self.buffered <= self.limits.max_buffered_bytes:
                break
            self._close(state, "memory_limit")
        self._throttle.log(
            LOG, logging.WARNING, "memory_limit",
            "refused: partial frames held more than %d bytes "
            "(max_buffered_bytes): closed the connections that waited "
            "longest", self.limits.max_buffered_bytes)

    def _handle(self, payload, sock=None, sender=None):
        if payload == protocol.HELLO_PAYLOAD:
            self._answer_hello(sock, sender)
            return
        try:
            decoded, n_points = protocol.decode_payload(payload)
        except protocol.ProtocolError as exc:
            self._drop(exc.reason)
            return
        self.frames += 1
        self.on_frame(payload, decoded, n_points)

    def _answer_hello(self, sock, sender):
        """A service asks which wire versions we read (see ``protocol``):
        answer at once, never blocking; a sender that does not read its
        answer simply gets version 1 from itself."""
        self.hellos += 1
        if sock is None:
            return
        try:
            if sender is not None:
                sock.sendto(protocol.HELLO_REPLY, sender)
            else:
                sock.send(protocol.HELLO_REPLY)
        except OSError:
            pass

    def _housekeeping(self):
        now = time.monotonic()
        if not self._listening and now >= self._accept_paused_until \
                and not self._stop.is_set() and self._sock is not None:
            self._selector.register(self._sock, selectors.EVENT_READ, None)
            self._listening = True
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + HOUSEKEEPING
        limits = self.limits
        if limits.idle_timeout:
            idle = []
            for state in self._conns.values():   # least recent first
                if now - state.last < limits.idle_timeout:
                    break
                idle.append(state)
            for state in idle:
                self._close(state, "idle_timeout")
            if idle:
                self._throttle.log(LOG, logging.INFO, "idle_timeout",
                                   "closed %d connection(s) idle for %.0f s",
                                   len(idle), limits.idle_timeout)
        if limits.frame_timeout:
            slow = [c for c in self._partial.values()
                    if now - c.since >= limits.frame_timeout]
            for state in slow:
                self._close(state, "slow_frame")
            if slow:
                self._throttle.log(
                    LOG, logging.WARNING, "slow_frame",
                    "refused: closed %d connection(s) that began a frame "
                    "and did not finish it within %.0f s", len(slow),
                    limits.frame_timeout)
        if self._freed >= TRIM_AFTER_BYTES and not self._partial:
            self._freed = 0
            _trim_memory()

    def _close(self, state, reason):
        """Close one connection; ``reason`` counts it as refused."""
        sock = state.sock
        fd = sock.fileno()
        pending = len(state.reader.buffer)
        if pending:
            self._drop("truncated")   # a frame that never completed
            self.buffered -= pending
            self._freed += pending
            state.reader.buffer = bytearray()
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        self._partial.pop(fd, None)
        self._conns.pop(fd, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _stop_reading(self):
        """Stop taking data: connections waiting in the listen queue are
        taken in first (what they sent is read), then the listen socket is
        closed (a Unix path removed), so that no sender can connect to a
        socket nobody will read; every connection is shut for reading,
        which makes a Unix-socket sender's next send fail (EPIPE) and keep
        its batch for the next agent."""
        if self.address.is_stream:
            now = time.monotonic()
            self.max_connections = max(self.max_connections,
                                       len(self._conns) + 64)
            for _ in range(16):   # a bounded number of rounds
                if not self._on_listen_socket(now):
                    break
        if self._listening:
            self._selector.unregister(self._sock)
            self._listening = False
        self._close_listen_socket()
        for state in list(self._conns.values()):
            try:
                state.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def _close_listen_socket(self):
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        if self.address.kind == "unix":
            try:
                st = os.lstat(self.address.target)
                if stat.S_ISSOCK(st.st_mode):
                    os.unlink(self.address.target)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def _close_all(self):
        for state in list(self._conns.values()):
            self._close(state, None)
        if self._listening:
            self._selector.unregister(self._sock)
            self._listening = False
        self._close_listen_socket()
        self._selector.close()
        self._waker.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def stop(self, timeout=5.0):
        """Stop accepting; frames already queued in the kernel are read.
        Never started (the agent refused to start): just close."""
        self._stop.set()
        if self._thread.ident is None:
            self._close_all()
            return
        self._waker.wake()
        self._thread.join(timeout)
