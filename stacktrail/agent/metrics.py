"""The agent's health: a status dict, as JSON and as Prometheus text.

Counters are plain ints, each owned by one thread (the listener owns
received/dropped, each writer its own), so nothing here takes a lock on the
hot path; ``snapshot`` only reads them.

Two read-only endpoints serve the same snapshot:

* ``status.sock`` in the spool directory (always on): a Unix stream socket
  that answers with one JSON document and closes.  ``stacktrail agent
  status --config-file F`` finds it from the config file alone.
* ``metrics_listen`` (optional, loopback only): HTTP, ``/metrics`` in
  Prometheus text format, ``/status`` as JSON.

Both are served by one thread each, with a selector: at most
MAX_CONNECTIONS connections at once, each closed after TIMEOUT seconds
whatever it does, so a flood of idle or slow clients costs a bounded
number of descriptors and no thread per connection; the ones turned away
are counted (``refused``: ``status_busy``, ``metrics_busy``).
"""

import json
import logging
import os
import selectors
import socket
import stat
import threading
import time

from stacktrail.agent import listener as listener_mod
from stacktrail.agent import protocol
from stacktrail.common import logtext

LOG = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
TIMEOUT = 2.0
MAX_REQUEST = 8192

PREFIX = "stacktrail_agent_"


def prometheus(snapshot):
    """Prometheus text exposition (version 0.0.4) of a status snapshot."""
    lines = []

    def metric(name, kind, help_text, samples):
        full = PREFIX + name
        lines.append("# HELP %s %s" % (full, help_text))
        lines.append("# TYPE %s %s" % (full, kind))
        for labels, value in samples:
            text = ",".join('%s="%s"' % (k, _escape(v))
                            for k, v in sorted(labels.items()))
            lines.append("%s%s %s" % (full, "{%s}" % text if text else "",
                                      _number(value)))

    backends = snapshot["backends"]
    metric("backend_info", "gauge",
           "A configured backend: its connection string, passwords "
           "masked.",
           [({"backend": b["name"],
              "connection_string": b["connection_string"]}, 1)
            for b in backends])
    metric("received_total", "counter", "Trace points accepted.",
           [({}, snapshot["received"])])
    metric("dropped_total", "counter",
           "Trace points (or unparsable frames) dropped, by reason.",
           [({"reason": r}, n) for r, n in snapshot["dropped"].items()])
    metric("written_total", "counter",
           "Trace points acknowledged by a backend.",
           [({"backend": b["name"]}, b["written"]) for b in backends])
    metric("spooled_total", "counter",
           "Trace points a backend received from the on-disk spool.",
           [({"backend": b["name"]}, b["spooled"]) for b in backends])
    metric("backend_errors_total", "counter", "Failed backend writes.",
           [({"backend": b["name"]}, b["backend_errors"]) for b in backends])
    metric("lag_seconds", "gauge",
           "Age of the oldest point a backend has not acknowledged.",
           [({"backend": b["name"]}, b["lag"]) for b in backends])
    metric("spool_bytes", "gauge", "Bytes in the on-disk spool.",
           [({}, snapshot["spool_bytes"])])
    metric("connections", "gauge", "Open service connections.",
           [({}, snapshot["connections"])])
    metric("max_connections", "gauge",
           "Service connections the agent holds at most.",
           [({}, snapshot.get("max_connections", 0))])
    metric("refused_total", "counter",
           "Connections refused or closed by the agent, by reason.",
           [({"reason": r}, n)
            for r, n in snapshot.get("refused", {}).items()])
    metric("sanitized_total", "counter",
           "Points a backend refused until NUL bytes and lone surrogates "
           "were replaced.",
           [({"backend": b["name"]}, b.get("sanitized", 0))
            for b in backends])
    metric("dead_lettered_total", "counter",
           "Points a backend refused for their content, set aside in its "
           "dead-letter file.",
           [({"backend": b["name"]}, b.get("dead_lettered", 0))
            for b in backends])
    metric("spool_corrupt_records_total", "counter",
           "Damaged spool records skipped.",
           [({}, snapshot.get("spool_corrupt_records", 0))])
    metric("spool_disk_full", "gauge",
           "1 while the spool cannot write (disk full).",
           [({}, int(snapshot.get("spool_state") == "disk_full"))])
    metric("up", "gauge", "1 while the agent runs.", [({}, 1)])
    return "\n".join(lines) + "\n"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"') \
        .replace("\n", "\\n")


def _number(value):
    return repr(float(value)) if isinstance(value, float) else str(value)


class _SmallServer:
    """One thread and one selector answer short requests on a listening
    socket: bounded connections, each with a deadline."""

    refused_reason = "busy"

    def __init__(self, sock, name, log_interval=60.0):
        self._sock = sock
        self._sock.setblocking(False)
        self.refused = 0
        self._throttle = logtext.Throttle(log_interval)
        self._conns = {}
        self._stop = threading.Event()
        self._waker = listener_mod.Waker()
        self._paused_until = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=name)

    def start(self):
        self._thread.start()

    # subclasses: the reply to a request (``None`` for a server that
    # answers at once, before reading anything)
    wants_request = False

    def reply(self, request):
        raise NotImplementedError

    def _run(self):
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ, None)
        self._waker.watch(selector)
        listening = True
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if not listening and now >= self._paused_until:
                    selector.register(self._sock, selectors.EVENT_READ, None)
                    listening = True
                events = selector.select(self._timeout(listening))
                now = time.monotonic()   # select may have slept for long
                for key, _ in events:
                    if key.data is self._waker:
                        self._waker.drain()
                    elif key.data is None:
                        if not self._accept(selector, now):
                            selector.unregister(self._sock)
                            listening = False
                            self._paused_until = now + 0.2
                    else:
                        self._serve(selector, key.data)
                now = time.monotonic()
                for state in [c for c in self._conns.values()
                              if c[3] <= now]:
                    self._close(selector, state)
        finally:
            for state in list(self._conns.values()):
                self._close(selector, state)
            selector.close()

    def _timeout(self, listening):
        """Seconds until a connection's deadline or the end of a pause;
        None when there is neither: idle, the thread sleeps until a client
        (or ``close``) wakes it instead of polling."""
        due = [state[3] for state in self._conns.values()]
        if not listening:
            due.append(self._paused_until)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _accept(self, selector, now):
        """False when the descriptor limit stops accepting for a while."""
        for _ in range(MAX_CONNECTIONS):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if len(self._conns) >= MAX_CONNECTIONS:
                self.refused += 1
                conn.close()
                self._throttle.log(
                    LOG, logging.WARNING, "busy", "refused: %s has %d "
                    "connections open (the limit), each closed after "
                    "%.0f s", self._thread.name, MAX_CONNECTIONS, TIMEOUT)
                continue
            conn.setblocking(False)
            # [socket, request bytes, reply still to send, deadline]
            state = [conn, bytearray(), None, now + TIMEOUT]
            self._conns[conn.fileno()] = state
            if self.wants_request:
                selector.register(conn, selectors.EVENT_READ, state)
            else:
                state[2] = self._reply_bytes(b"")
                selector.register(conn, selectors.EVENT_WRITE, state)
        return True

    def _reply_bytes(self, request):
        try:
            return memoryview(self.reply(bytes(request)))
        except Exception:   # a broken snapshot must not stop the server
            LOG.exception("status endpoint failed")
            return memoryview(self.failure())

    def failure(self):
        return b""

    def _serve(self, selector, state):
        conn = state[0]
        try:
            if state[2] is None:
                data = conn.recv(4096)
                if not data:
                    self._close(selector, state)
                    return
                state[1] += data
                if b"\r\n\r\n" not in state[1] and b"\n\n" not in state[1] \
                        and len(state[1]) < MAX_REQUEST:
                    return
                state[2] = self._reply_bytes(state[1][:MAX_REQUEST])
                selector.modify(conn, selectors.EVENT_WRITE, state)
                return
            sent = conn.send(state[2])
            state[2] = state[2][sent:]
            if not state[2]:
                self._close(selector, state)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(selector, state)

    def _close(self, selector, state):
        conn = state[0]
        self._conns.pop(conn.fileno(), None)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    # the Unix socket file a server removes when it closes (None: TCP)
    path = None

    def close(self):
        self._stop.set()
        self._waker.wake()
        if self._thread.ident is not None:
            self._thread.join(2.0)
        self._waker.close()
        self._sock.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def metrics_address(listen):
    """The ``metrics_listen`` address; ValueError unless loopback
    HOST:PORT."""
    url = listen if "://" in listen else "tcp://" + listen
    try:
        address = protocol.parse_listen(url)
    except ValueError as exc:
        raise ValueError("metrics_listen %s: %s" % (listen, exc)) from None
    if address.kind != "tcp":
        raise ValueError("metrics_listen must be HOST:PORT on loopback, "
                         "not %s" % listen)
    return address


class MetricsServer(_SmallServer):
    """Loopback HTTP: /metrics (Prometheus) and /status (JSON)."""

    refused_reason = "metrics_busy"
    wants_request = True

    def __init__(self, listen, snapshot):
        address = metrics_address(listen)
        self.snapshot = snapshot
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.target)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        self.address = sock.getsockname()
        super().__init__(sock, "stacktrail-metrics")

    def reply(self, request):
        line = request.split(b"\n", 1)[0].decode("latin-1").split()
        method = line[0] if line else ""
        path = line[1].split("?", 1)[0] if len(line) > 1 else ""
        if method not in ("GET", "HEAD"):
            return _http(405, "text/plain", b"method not allowed\n")
        if path == "/metrics":
            body = prometheus(self.snapshot()).encode()
            kind = "text/plain; version=0.0.4; charset=utf-8"
        elif path == "/status":
            body = json.dumps(self.snapshot(), indent=2).encode()
            kind = "application/json"
        else:
            return _http(404, "text/plain", b"not found\n")
        return _http(200, kind, body, head=method == "HEAD")

    def failure(self):
        return _http(500, "text/plain", b"internal error\n")


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error"}


def _http(code, kind, body, head=False):
    header = ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
              "Connection: close\r\n\r\n" % (code, _REASONS[code], kind,
                                             len(body)))
    return header.encode() + (b"" if head else body)


class StatusSocket(_SmallServer):
    """status.sock: connect, read one JSON document.  Mode 0600, or 0660
    owned by group ``gid`` (``[agent] socket_group``)."""

    refused_reason = "status_busy"

    def __init__(self, path, snapshot, gid=None):
        self.path = path
        self.snapshot = snapshot
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                raise OSError("%s is a directory" % path)
            os.unlink(path)   # in the private spool directory: ours
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
            sock.listen(64)
            if gid is not None:
                os.chown(path, -1, gid)
                os.chmod(path, 0o660)
        except BaseException:
            sock.close()
            if os.path.lexists(path):
                os.unlink(path)
            raise
        finally:
            os.umask(old)
        super().__init__(sock, "stacktrail-status")

    def reply(self, request):
        return (json.dumps(self.snapshot(), indent=2) + "\n").encode()
