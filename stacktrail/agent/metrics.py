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
"""

import http.server
import json
import logging
import os
import socketserver
import threading

from stacktrail.agent import protocol

LOG = logging.getLogger(__name__)

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
    metric("up", "gauge", "1 while the agent runs.", [({}, 1)])
    return "\n".join(lines) + "\n"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"') \
        .replace("\n", "\\n")


def _number(value):
    return repr(float(value)) if isinstance(value, float) else str(value)


class MetricsServer:
    """Loopback HTTP: /metrics (Prometheus) and /status (JSON)."""

    def __init__(self, listen, snapshot):
        url = listen if "://" in listen else "tcp://" + listen
        address = protocol.parse_listen(url)
        if address.kind != "tcp":
            raise ValueError("metrics_listen must be HOST:PORT on loopback")
        self.snapshot = snapshot
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = prometheus(server.snapshot()).encode()
                    kind = "text/plain; version=0.0.4; charset=utf-8"
                elif path == "/status":
                    body = json.dumps(server.snapshot(), indent=2).encode()
                    kind = "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(address.target, Handler)
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address
        threading.Thread(target=self.httpd.serve_forever, daemon=True,
                         name="stacktrail-metrics").start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StatusSocket:
    """status.sock: connect, read one JSON document."""

    def __init__(self, path, snapshot):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                body = json.dumps(snapshot(), indent=2) + "\n"
                self.request.sendall(body.encode())

        old = os.umask(0o177)
        try:
            self.server = socketserver.ThreadingUnixStreamServer(path,
                                                                 Handler)
        finally:
            os.umask(old)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="stacktrail-status").start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
