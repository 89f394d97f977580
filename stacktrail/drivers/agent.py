"""``agent://``: hand trace points to the node's stacktrail-agent.

    agent:///run/stacktrail/agent.sock         Unix stream socket (default)
    agent://127.0.0.1:6832                     TCP on loopback
    agent://127.0.0.1:6832?transport=udp       UDP on loopback
    ...?timeout=0.25                           seconds one send may wait

The request thread never sees this module: it only appends the raw point to
the BufferedSink (``make_sink``).  The sink's flusher thread calls
``write_points`` with a batch; this driver encodes it in the binary,
columnar wire format (version 2: ids and nanoseconds as integers, names
and labels once per frame, infos encoded once per batch, see
``stacktrail.agent.protocol``) and sends it with a short timeout.  All
formatting (UUID text, timestamps, osprofiler messages) is the agent's.

Each new connection begins with the hello: an agent that reads version 2
says so and gets version 2; an older agent says nothing and gets version 1
(``wire_version`` tells which), so services and agent can be upgraded in
either order.

When the agent is down, restarting or too slow, the connection is closed
and retried later with a growing, jittered pause, and ``write_points``
raises ``AgentUnavailable`` naming the points it did not hand over
(``unsent``: a frame torn by the failure is discarded by the agent, so it
is unsent too).  Those can be sent again without a duplicate
(``retry_safe``), so the sink keeps them and its flusher retries them: an
agent restart costs nothing while the service's buffer has room.
``stats()`` counts the points each call failed to hand over.  Nothing here
ever blocks longer than the send timeout, and never on the request thread.

Before each batch the connection is checked for an end of file (one
non-blocking peek): an agent that closed an idle connection, or stopped,
is noticed before a frame is written into a socket nobody reads.

Why a Unix *stream* socket by default: see ``stacktrail.agent.listener``
(measured: datagrams lose most of a burst at this machine's default queue
limits; a stream with a larger send buffer lost none, and tells the sender
at once when the agent is gone).

Forked workers reconnect on their own (``after_fork``); under eventlet the
original, unpatched socket module is used, because the flusher is a real OS
thread.  Stdlib only.
"""

import errno
import os
import random
import threading
import time

from stacktrail.agent import protocol
from stacktrail.common import unpatched
from stacktrail.drivers import base

WRITE_ONLY = ("agent:// is write-only: read traces from the store the agent "
              "writes to (its [agent] connection_string)")
SEND_BUFFER = 4 << 20
# Longest a send may wait for a slow agent.  Only the flusher thread waits
# (the request thread never does); the in-process buffer absorbs the pause.
SEND_TIMEOUT = 0.25
RETRY_MIN = 0.05
RETRY_MAX = 1.0
# Longest wait for the agent's answer to the hello; no answer: version 1.
HELLO_TIMEOUT = 0.25


class AgentUnavailable(OSError):
    """Points could not be handed to the agent; ``unsent`` lists them."""

    reason = "agent_unavailable"
    lost = 0

    def __init__(self, code, text, unsent=()):
        super().__init__(code, text)
        self.unsent = list(unsent)


class AgentDriver(base.Driver):
    """Sends batches of raw points to the local agent."""

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, **kwargs):
        super().__init__(connection_str, project=project, service=service,
                         host=host, conf=conf, **kwargs)
        try:
            self.address, options = protocol.parse_agent_url(connection_str)
            self.timeout = float(options.get("timeout", SEND_TIMEOUT))
        except ValueError as exc:
            raise base.DriverError(str(exc)) from None
        self.max_frame = (protocol.MAX_DATAGRAM if self.address.kind == "udp"
                          else protocol.MAX_FRAME)
        wire = str(options.get("wire", "auto")).lower()
        if wire not in ("auto", "1", "2"):
            raise base.DriverError("agent:// wire must be auto, 1 or 2, got "
                                   "%r" % wire)
        self.wire = wire
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._sock = None
        self.wire_version = None   # agreed on each connection
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._pause = 0.0
        # Why the last connect failed, for the outage's log line: a socket
        # that does not exist is not one that refused.
        self._refusal = (errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        self.sent = 0
        self.frames = 0
        self.dropped = 0
        self.drops = {}

    # counters

    def stats(self):
        return {"sent": self.sent, "frames": self.frames,
                "dropped": self.dropped, "drops": dict(self.drops),
                "connected": self._sock is not None}

    def _drop(self, reason, count):
        if count:
            self.dropped += count
            self.drops[reason] = self.drops.get(reason, 0) + count

    # write side (flusher thread)

    def retry_safe(self, exc):
        return isinstance(exc, AgentUnavailable)

    def write_points(self, batch):
        if os.getpid() != self._pid:
            self.after_fork()
        with self._lock:
            sock = self._connect()
            if sock is None:
                # Nothing encoded, nothing sent: all of it is kept.
                raise self._unavailable([(None, 0, batch)], 0)
            frames, lost = protocol.encode_batch(
                batch, self.project, self.service, self.host,
                self.max_frame, parts=True, version=self.wire_version)
            self._drop("unencodable", lost)
            try:
                self._send_frames(sock, frames)
            except AgentUnavailable as exc:
                exc.lost = lost   # neither sent nor to be retried
                raise
        if lost:
            # Sent the rest; tell the sink which reason the lost ones count
            # under (encode_batch says how many, not which).
            raise base.Rejected("%d trace point(s) could not be encoded"
                                % lost, [(None, "unencodable")] * lost)

    def _send_frames(self, sock, frames):
        for index, (data, count, _) in enumerate(frames):
            if sock is None:
                raise self._unavailable(frames, index)
            try:
                sock.sendall(data)
            except OSError:
                # A stream may now hold half a frame: only a new connection
                # is safe (the agent discards the torn tail on close).
                self._disconnect()
                raise AgentUnavailable(
                    errno.EPIPE, "stacktrail agent at %s did not take the "
                    "batch" % self.address,
                    self._unsent(frames, index)) from None
            self.sent += count
            self.frames += 1
        self._pause = 0.0

    def _unavailable(self, frames, index):
        code, why = self._refusal
        return AgentUnavailable(
            code, "stacktrail agent at %s unavailable: %s (is "
            "stacktrail-agent running?)" % (self.address, why),
            self._unsent(frames, index))

    def _unsent(self, frames, index):
        """The points of ``frames[index:]``, counted as not handed over."""
        unsent = [p for _, _, part in frames[index:] for p in part]
        self._drop("agent_unavailable", len(unsent))
        return unsent

    def _connect(self):
        if self._sock is not None:
            if self._alive(self._sock):
                return self._sock
            self._disconnect(retry=False)
        now = time.monotonic()
        if now < self._retry_at:
            return None
        socket = unpatched.module("socket")
        sock = socket.socket(self.address.family, self.address.socktype)
        try:
            sock.settimeout(self.timeout)
            if self.address.is_stream:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                SEND_BUFFER)
            sock.connect(self.address.target)
            self.wire_version = self._hello(sock)
        except OSError as exc:
            self._refusal = (exc.errno or errno.ECONNREFUSED,
                             exc.strerror or str(exc) or type(exc).__name__)
            sock.close()
            self._schedule_retry(now)
            return None
        self._sock = sock
        return sock

    def _hello(self, sock):
        """The wire version for this connection: ask the agent which it
        reads (``protocol`` describes the exchange); no answer within
        HELLO_TIMEOUT means an agent that only reads version 1."""
        if self.wire != "auto":
            return int(self.wire)
        sock.sendall(protocol.HELLO)
        deadline = time.monotonic() + min(self.timeout, HELLO_TIMEOUT)
        select = unpatched.module("select").select
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return 1
            readable, _, _ = select([sock], [], [], left)
            if not readable:
                return 1
            chunk = sock.recv(protocol.MAX_HELLO_REPLY)
            if not chunk:
                raise ConnectionResetError("agent closed the connection")
            data += chunk
            versions = protocol.parse_hello_reply(data)
            if versions:
                return 2 if 2 in versions else 1
            if len(data) >= protocol.HEADER.size + protocol.MAX_HELLO_REPLY:
                return 1

    def _schedule_retry(self, now):
        """Pause before the next connect: doubling, with jitter so that the
        workers of a node do not all knock at the same instant."""
        self._pause = min(max(self._pause * 2, RETRY_MIN), RETRY_MAX)
        self._retry_at = now + self._pause * random.uniform(0.5, 1.0)

    def _alive(self, sock):
        """False when the agent closed the connection (idle timeout, stop,
        restart): sending into it would lose the frame without an error."""
        if not self.address.is_stream:
            return True
        try:
            select = unpatched.module("select").select
            readable, _, _ = select([sock], [], [], 0)
            if not readable:
                return True   # nothing to read: the usual, healthy case
            socket = unpatched.module("socket")
            # A late answer to the hello is read and dropped; end of file
            # means the agent is gone.
            return sock.recv(4096, socket.MSG_DONTWAIT) != b""
        except (BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError):
            return False

    def _disconnect(self, retry=True):
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if retry:
            self._schedule_retry(time.monotonic())

    def after_fork(self):
        """In a forked child: never share the parent's connection."""
        sock = self._sock
        self._lock = threading.Lock()
        self._reset()
        if sock is not None:
            # Closing the child's copy of the descriptor leaves the parent's
            # connection open: the agent sees EOF only when both close it.
            try:
                sock.close()
            except OSError:
                pass

    def notify(self, info, **kwargs):
        from stacktrail.common import points
        self.write_points([points.from_message(info)])

    def close(self):
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # read side

    def get_messages(self, base_id):
        raise base.DriverError(WRITE_ONLY)

    def list_traces(self, fields=None):
        raise base.DriverError(WRITE_ONLY)

    def list_error_traces(self):
        raise base.DriverError(WRITE_ONLY)
