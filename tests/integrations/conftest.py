"""Fixtures for the integration tests: a recording notifier and a clean
slate (every integration off, no trace open) around each test."""

import http.server
import json
import threading

import pytest

from stacktrail import integrations
from stacktrail import notifier
from stacktrail import profiler
from stacktrail.common import settings

KEY = "integration-test-key"


class Recorder(list):
    """The formatted messages the profiler emitted, in order."""

    def __call__(self, message):
        self.append(message)

    def names(self):
        return [m["name"] for m in self]

    def spans(self, name):
        """[(start message, stop message)] of the spans called ``name``."""
        starts = {m["trace_id"]: m for m in self
                  if m["name"] == name + "-start"}
        return [(starts[m["trace_id"]], m) for m in self
                if m["name"] == name + "-stop" and m["trace_id"] in starts]

    def unclosed(self):
        stops = {m["trace_id"] for m in self if m["name"].endswith("-stop")}
        return [m for m in self
                if m["name"].endswith("-start") and m["trace_id"] not in stops]


@pytest.fixture
def recorder():
    previous = notifier.get()
    rec = Recorder()
    notifier.set(rec)
    yield rec
    notifier.set(previous)


@pytest.fixture
def live(monkeypatch):
    """Fresh [profiler] settings with a validation/signing key."""
    fresh = settings.Settings()
    fresh.set_keys([KEY])
    monkeypatch.setattr(settings, "current", fresh)
    return fresh


@pytest.fixture(autouse=True)
def clean_slate():
    profiler.clean()
    yield
    profiler.clean()
    integrations.apply({flag: False for flag in integrations.modules()})


@pytest.fixture
def trace(recorder):
    """An open trace; returns its profiler."""
    return profiler.init(KEY)


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers a GET with the request's headers as JSON, names in lower
    case (HTTP's are case-insensitive); HTTP 500 for paths under /fail."""

    def do_GET(self):
        status = 500 if self.path.startswith("/fail") else 200
        body = json.dumps({k.lower(): v for k, v in
                           self.headers.items()}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo():
    """The URL of a local server echoing each request's headers."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
