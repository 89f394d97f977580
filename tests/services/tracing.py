"""What the real-service tests share: signed requests, and spans read back.

A test signs its requests as an operator would (``profiler.init(key)`` and
the headers ``web.get_trace_id_headers()`` gives), then reads the trace back
from the store the service wrote to, through the ``stacktrail`` CLI (the
command an operator runs) or the store's driver.
"""

import json
import os
import secrets
import subprocess
import sys
import time

from stacktrail import profiler
from stacktrail import web
from stacktrail.drivers import base

KEY = "st-test-" + secrets.token_hex(16)
CLI = os.path.join(os.path.dirname(sys.executable), "stacktrail")


def signed_headers(key=KEY):
    """(trace id, headers) of a new trace, signed with ``key``."""
    prof = profiler.init(key)
    try:
        return prof.get_base_id(), web.get_trace_id_headers()
    finally:
        profiler.clean()


class Span:
    """One span of a trace: name, info at start and stop, children."""

    def __init__(self, node):
        info = node["info"]
        self.name = info["name"]
        self.start = _payload(info, "start")
        self.stop = _payload(info, "stop")
        self.service = info.get("service")
        self.children = [Span(child) for child in node.get("children", ())]

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def __repr__(self):
        return "Span(%s)" % self.name


def _payload(info, phase):
    for key, value in info.items():
        if key.startswith("meta.raw_payload.") and key.endswith(phase):
            return value.get("info") or {}
    return None


def show(base_id, connection_string, timeout=60):
    """The report of ``stacktrail trace show --json``, as Spans (roots)."""
    out = subprocess.run([CLI, "trace", "show", base_id, "--json",
                          "--connection-string", connection_string],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return [Span(node) for node in json.loads(out.stdout)["children"]]


def messages(connection_string, base_id):
    """The trace's messages in the store ([] while it has none: a file
    store's file appears with the first batch)."""
    try:
        return base.get_driver(connection_string).get_messages(base_id)
    except base.DriverError:
        return []


def wait_for_messages(connection_string, base_id, settle=0.8, timeout=20):
    """The trace's messages once the store stops receiving more (the
    services' flushers write every 0.2 s)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    found = []
    while time.monotonic() < deadline:
        found = messages(connection_string, base_id)
        if len(found) != seen:
            seen, since = len(found), time.monotonic()
        elif found and time.monotonic() - since >= settle:
            return found
        time.sleep(0.1)
    return found


def span_names(found):
    """{name: count} of the spans in a list of messages."""
    counts = {}
    for message in found:
        if message["name"].endswith("-start"):
            name = message["name"][:-len("-start")]
            counts[name] = counts.get(name, 0) + 1
    return counts


def unclosed(found):
    stops = {m["trace_id"] for m in found if m["name"].endswith("-stop")}
    return [m["name"] for m in found
            if m["name"].endswith("-start") and m["trace_id"] not in stops]


def starts(found):
    """{span id: start message} of a list of messages."""
    return {m["trace_id"]: m for m in found if m["name"].endswith("-start")}


def chain(spans, message):
    """["name@service", ...] from the root down to ``message``."""
    names = []
    while message is not None:
        names.append("%s@%s" % (message["name"][:-len("-start")],
                                message.get("service")))
        message = spans.get(message["parent_id"])
    return list(reversed(names))
