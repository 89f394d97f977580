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
"""

import errno
import grp
import logging
import os
import selectors
import socket
import threading

from stacktrail.agent import protocol

LOG = logging.getLogger(__name__)

RECV_BYTES = 1 << 20
RECV_BUFFER = 8 << 20
MAX_CONNECTIONS = 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _set_rcvbuf(sock, size):
    """Raise the receive buffer; as root past rmem_max (SO_RCVBUFFORCE)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass


def _remove_stale_socket(path):
    """Unlink a socket file left by a dead agent; refuse a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise RuntimeError("another agent is listening on %s" % path)


def bind(address, mode=0o600, group=""):
    """A bound (and, for streams, listening) non-blocking socket."""
    sock = socket.socket(address.family, address.socktype)
    try:
        if address.kind == "unix":
            os.makedirs(os.path.dirname(address.target), exist_ok=True)
            _remove_stale_socket(address.target)
            old = os.umask(0o177)  # no window where others may connect
            try:
                sock.bind(address.target)
            finally:
                os.umask(old)
            if group:
                os.chown(address.target, -1, grp.getgrnam(group).gr_gid)
            os.chmod(address.target, mode)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.target)
        _set_rcvbuf(sock, RECV_BUFFER)
        if address.is_stream:
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Reads frames and hands ``(payload, decoded, n_points)`` to a callback.

    ``counters`` is a dict reason -> count owned by this thread.
    """

    def __init__(self, address, on_frame, max_frame, mode=0o600, group=""):
        self.address = address
        self.on_frame = on_frame
        self.max_frame = max_frame
        self.dropped = {}
        self.connections = 0
        self.frames = 0
        self._sock = bind(address, mode, group)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stacktrail-listener")

    def start(self):
        self._thread.start()

    def _drop(self, reason, count=1):
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    # --- loop ------------------------------------------------------------

    def _run(self):
        while not self._stop.is_set():
            self._poll(0.2)
        # Shutting down: read whatever the kernel still holds, then close.
        while self._poll(0):
            pass
        self._close_all()

    def _poll(self, timeout):
        """One round; True when anything was read."""
        busy = False
        for key, _ in self._selector.select(timeout):
            try:
                if key.data is None:
                    busy |= self._on_listen_socket()
                else:
                    busy |= self._on_connection(key.fileobj, key.data)
            except Exception:  # never let one input stop the listener
                LOG.exception("listener error")
                self._drop("internal_error")
        return busy

    def _on_listen_socket(self):
        if not self.address.is_stream:
            return self._on_datagrams()
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        if self.connections >= MAX_CONNECTIONS:
            self._drop("too_many_connections")
            conn.close()
            return True
        conn.setblocking(False)
        self.connections += 1
        self._selector.register(conn, selectors.EVENT_READ,
                                protocol.FrameReader(self.max_frame))
        return True

    def _on_datagrams(self):
        busy = False
        for _ in range(256):  # bounded, so a flood cannot starve shutdown
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            busy = True
            try:
                self._handle(protocol.split_datagram(data, self.max_frame))
            except protocol.ProtocolError as exc:
                self._drop(exc.reason)
        return busy

    def _on_connection(self, conn, reader):
        try:
            data = conn.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            if reader.buffer:
                self._drop("truncated")   # sender died mid-frame
            self._close(conn)
            return True
        try:
            payloads = reader.feed(data)
        except protocol.ProtocolError as exc:
            self._drop(exc.reason)
            self._close(conn)
            return True
        for payload in payloads:
            self._handle(payload)
        return True

    def _handle(self, payload):
        try:
            decoded, n_points = protocol.decode_payload(payload)
        except protocol.ProtocolError as exc:
            self._drop(exc.reason)
            return
        self.frames += 1
        self.on_frame(payload, decoded, n_points)

    def _close(self, conn):
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
        self.connections -= 1

    def _close_all(self):
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self._close(key.fileobj)
        self._selector.unregister(self._sock)
        self._sock.close()
        self._selector.close()
        if self.address.kind == "unix":
            try:
                os.unlink(self.address.target)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def stop(self, timeout=5.0):
        """Stop accepting; frames already queued in the kernel are read."""
        self._stop.set()
        self._thread.join(timeout)
