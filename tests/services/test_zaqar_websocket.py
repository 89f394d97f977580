"""Zaqar's websocket transport traced: a trace per request that asks.

A real zaqar-server with ``[drivers] transport = websocket`` (autobahn on
asyncio), traced from its configuration files alone (the shipped
``etc/zaqar/stacktrail.conf``).  The client is a program in Zaqar's
environment using websocket-client (python-zaqarclient's websocket
extra): it starts a trace with ``stacktrail.client.trace`` and puts
``trace.headers()`` into each message's ``headers``.
"""

import json
from pathlib import Path

import pytest

from tests.services import tracing
from tests.services import zaqar

FRAGMENT = zaqar.FRAGMENT

CLIENT = """\
import json, sys, uuid
import websocket
from stacktrail import client

url, key, store, project = sys.argv[1:5]
ws = websocket.create_connection(url, timeout=10)
ids = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}

def call(action, body, headers=None):
    ws.send(json.dumps({"action": action, "body": body,
                        "headers": dict(ids, **(headers or {}))}))
    reply = json.loads(ws.recv())
    return reply["headers"]["status"]

status = {}
with client.trace(key, store, name="ws-client") as trace:
    signed = trace.headers()
    status["create"] = call("queue_create", {"queue_name": "wsq"}, signed)
    status["post"] = call("message_post", {
        "queue_name": "wsq",
        "messages": [{"body": {"n": 1}, "ttl": 300}]}, signed)
    # Header names are matched whatever their case.
    status["list"] = call("message_list", {"queue_name": "wsq", "echo": True},
                          {k.lower(): v for k, v in signed.items()})
# Served, never traced: no headers, a forged signature.
status["unsigned"] = call("message_list", {"queue_name": "wsq"})
forged = {"X-Trace-Info": signed["X-Trace-Info"], "X-Trace-HMAC": "0" * 40}
status["forged"] = call("message_list", {"queue_name": "wsq"}, forged)
ws.close()
print(json.dumps({"id": trace.id, "status": status}))
"""


@pytest.fixture
def websocket_server(tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    """websocket_server(overrides=None) -> (server, store)."""
    running = []

    def start(overrides=None):
        directory = tmp_path / ("server%d" % len(running))
        store = "file://%s" % (directory / "traces.jsonl")
        conf = zaqar.write_config(directory, redis_url, profiler={
            "connection_string": store, "hmac_keys": tracing.KEY})
        zaqar.create_schema("sqlite:///%s" % (directory / "zaqar.sqlite"),
                            env=zaqar_env)
        files = [conf, FRAGMENT]
        if overrides:
            files.append(zaqar.write_overrides(directory, overrides))
        server = zaqar.WebsocketServer(files, env=zaqar_env,
                                       overlay=stacktrail_overlay)
        running.append(server)
        return server.start(), store

    yield start
    for server in running:
        server.stop()


def run_client(server, store, zaqar_env, overlay):
    out = json.loads(zaqar.run_python(
        CLIENT, server.url, tracing.KEY, store, zaqar.DEFAULT_PROJECT,
        env=zaqar_env, overlay=overlay))
    assert out["status"] == {"create": 201, "post": 201, "list": 200,
                             "unsigned": 200, "forged": 200}
    return out["id"]


def test_websocket_requests_with_trace_headers_are_traced(
        websocket_server, zaqar_env, stacktrail_overlay):
    server, store = websocket_server()
    base_id = run_client(server, store, zaqar_env, stacktrail_overlay)
    found = tracing.wait_for_messages(store, base_id)
    assert tracing.unclosed(found) == []

    (root,) = tracing.show(base_id, store)
    assert (root.name, root.service) == ("ws-client", "client")
    requests = root.children
    assert [(r.name, r.service, r.start["request"]["action"],
             r.stop["response"]["status"]) for r in requests] == [
        ("websocket", "Zaqar-server", "queue_create", 201),
        ("websocket", "Zaqar-server", "message_post", 201),
        ("websocket", "Zaqar-server", "message_list", 200)]
    create, post, listing = requests
    assert post.start["request"] == {"action": "message_post",
                                     "project": zaqar.DEFAULT_PROJECT,
                                     "queue": "wsq"}
    # websocket -> controller -> driver -> db, and -> controller -> redis
    assert "db" in {s.name for s in create.walk()}
    message = {c.name: c for c in post.children}["redis_message_controller"]
    assert "redis" in {c.name for c in message.children}
    assert "redis" in {s.name for s in listing.walk()}

    # The unsigned and forged requests left no trace, and nothing leaked
    # into them from the traced ones.
    everything = [json.loads(line) for line in
                  Path(store[len("file://"):]).read_text().splitlines()]
    assert {m["base_id"] for m in everything} == {base_id}
    assert tracing.span_names(everything)["websocket"] == 3
    assert "Traceback" not in server.log_text()


def test_flag_off_keeps_the_trace_without_websocket_spans(
        websocket_server, zaqar_env, stacktrail_overlay):
    server, store = websocket_server({"trace_websocket_transport": False})
    base_id = run_client(server, store, zaqar_env, stacktrail_overlay)
    found = tracing.wait_for_messages(store, base_id)
    names = tracing.span_names(found)
    assert "websocket" not in names
    assert names.get("redis_message_controller")
    # The storage spans hang under the client's span.
    (root,) = tracing.show(base_id, store)
    assert root.name == "ws-client"
    assert "redis_message_controller" in {c.name for c in root.children}


def test_enabled_false_serves_untraced(websocket_server, zaqar_env,
                                       stacktrail_overlay):
    server, store = websocket_server({"enabled": False})
    base_id = run_client(server, store, zaqar_env, stacktrail_overlay)
    # Only the client's own spans are stored.
    found = tracing.wait_for_messages(store, base_id)
    assert set(tracing.span_names(found)) == {"ws-client"}
    assert "Traceback" not in server.log_text()
