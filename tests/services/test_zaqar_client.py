"""A Zaqar client starts a trace, gets its id, and finds the whole tree.

The client side is ``stacktrail.client.trace(key, store)``: a span around
the client's work, an ``http`` span per call, the trace headers on every
call made with ``requests``.  The server is a real zaqar-server traced
from its configuration (``etc/zaqar/stacktrail.conf``), writing to the same
store, so one ``stacktrail trace show <id>`` has client and server spans:
client span -> http -> wsgi -> storage controllers -> redis / db.

python-zaqarclient needs osc-lib and openstacksdk: it lives in Zaqar's
environment (tests/services/zaqar.py ZAQAR_REQUIREMENTS), so that client
runs there as a program of its own; plain ``requests`` runs here.
"""

import json
import uuid

import pytest
import requests

from stacktrail import client
from stacktrail import requests as st_requests
from tests.services import tracing
from tests.services import zaqar

FRAGMENT = zaqar.FRAGMENT

ZAQARCLIENT = """\
import json, sys
from zaqarclient.queues import client as zaqar_client
from stacktrail import client

url, key, store, project = sys.argv[1:5]
zaqar = zaqar_client.Client(url, version=2, conf={
    "auth_opts": {"backend": "noauth",
                  "options": {"os_project_id": project}}})

with client.trace(key, store, name="backup-job") as trace:
    queue = zaqar.queue("jobs", force_create=True)   # PUT
    queue.post([{"body": {"step": 1}, "ttl": 300}])
    bodies = [m.body for m in queue.messages(echo=True)]
print(json.dumps({"id": trace.id, "bodies": bodies}))
"""

# python-zaqarclient's own osprofiler support: it adds
# osprofiler.web.get_trace_id_headers() to every call.
OSPROFILER = """\
import json, sys
from osprofiler import profiler
from zaqarclient.queues import client as zaqar_client

url, key, store, project = sys.argv[1:5]
zaqar = zaqar_client.Client(url, version=2, conf={
    "auth_opts": {"backend": "noauth",
                  "options": {"os_project_id": project}}})
prof = profiler.init(key)
queue = zaqar.queue("jobs", force_create=True)
queue.post([{"body": {"step": 1}, "ttl": 300}])
print(json.dumps({"id": prof.get_base_id()}))
"""


@pytest.fixture
def traced_server(tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    """traced_server(store) -> a zaqar-server traced into ``store``."""
    running = []

    def start(store):
        directory = tmp_path / ("server%d" % len(running))
        server = zaqar.zaqar_server(
            directory, redis_url, env=zaqar_env, overlay=stacktrail_overlay,
            extra_conf_files=[FRAGMENT],
            profiler={"connection_string": store, "hmac_keys": tracing.KEY})
        running.append(server)
        return server.__enter__()

    yield start
    for server in running:
        server.__exit__(None, None, None)


@pytest.fixture
def requests_integration():
    """Leave requests as the test found it (client.trace switches the
    requests integration on for the process)."""
    was = st_requests.is_enabled()
    yield
    if not was:
        st_requests.disable()


def assert_client_tree(roots, name, paths):
    """One client span; under it an http span per call, each with the
    server's wsgi span for that call, with Zaqar's work under it."""
    assert [(r.name, r.service) for r in roots] == [(name, "client")]
    calls = roots[0].children
    assert calls and {c.name for c in calls} == {"http"}
    seen = []
    for call in calls:
        sent = call.start["requests"]
        assert call.stop["requests"]["status_code"] < 400
        (served,) = call.children
        assert served.name == "wsgi" and served.service == "Zaqar-server"
        assert served.start["request"]["method"] == sent["method"]
        assert served.start["request"]["path"] == sent["path"]
        seen.append((sent["method"], sent["path"]))
        if sent["method"] == "POST":
            assert "redis_message_controller" in {
                s.name for s in served.children}
            assert "redis" in {s.name for s in served.walk()}
    assert set(paths) <= set(seen)


def test_python_zaqarclient(traced_server, second_redis_url, zaqar_env,
                            stacktrail_overlay):
    store = second_redis_url
    server = traced_server(store)
    out = json.loads(zaqar.run_python(
        ZAQARCLIENT, server.url, tracing.KEY, store, zaqar.DEFAULT_PROJECT,
        env=zaqar_env, overlay=stacktrail_overlay))
    assert out["bodies"] == [{"step": 1}]
    found = tracing.wait_for_messages(store, out["id"])
    assert tracing.unclosed(found) == []
    assert_client_tree(tracing.show(out["id"], store), "backup-job", [
        ("PUT", "/v2/queues/jobs"), ("POST", "/v2/queues/jobs/messages"),
        ("GET", "/v2/queues/jobs/messages")])
    assert tracing.KEY not in str(found)


def test_python_zaqarclient_with_osprofiler(traced_server, tmp_path,
                                            zaqar_env, stacktrail_overlay):
    """A client still on osprofiler: python-zaqarclient sends osprofiler's
    headers itself, and the stacktrail-traced server records under its
    trace id (the client's own spans are osprofiler's business)."""
    store = "file://%s" % (tmp_path / "traces.jsonl")
    server = traced_server(store)
    out = json.loads(zaqar.run_python(
        OSPROFILER, server.url, tracing.KEY, store, zaqar.DEFAULT_PROJECT,
        env=zaqar_env, overlay=stacktrail_overlay))
    tracing.wait_for_messages(store, out["id"])
    roots = tracing.show(out["id"], store)
    assert [(r.name, r.start["request"]["method"]) for r in roots] == [
        ("wsgi", "PUT"), ("wsgi", "POST")]
    assert "redis_message_controller" in {c.name for c in roots[1].children}


def test_plain_requests(traced_server, tmp_path, requests_integration):
    store = "file://%s" % (tmp_path / "traces.jsonl")
    server = traced_server(store)
    headers = {"Client-ID": str(uuid.uuid4()),
               "X-Project-ID": zaqar.DEFAULT_PROJECT}
    queue = server.url + "/v2/queues/q1"
    with client.trace(tracing.KEY, store, name="script") as trace:
        with requests.Session() as session:
            assert session.put(queue, json={}, headers=headers,
                               timeout=10).status_code == 201
            posted = session.post(queue + "/messages", headers=headers,
                                  json={"messages": [{"body": 1}]},
                                  timeout=10)
            assert posted.status_code == 201
    # A call after the block is not traced.
    assert requests.get(queue + "/messages", headers=headers,
                        timeout=10).status_code == 200

    found = tracing.wait_for_messages(store, trace.id)
    assert tracing.unclosed(found) == []
    assert_client_tree(tracing.show(trace.id, store), "script", [
        ("PUT", "/v2/queues/q1"), ("POST", "/v2/queues/q1/messages")])
    assert tracing.span_names(found)["wsgi"] == 2


def test_trace_headers_by_hand(traced_server, tmp_path, requests_integration):
    """``trace.headers()`` for a call the integration does not see (here:
    urllib): the server's span hangs under the client's span."""
    import urllib.request
    store = "file://%s" % (tmp_path / "traces.jsonl")
    server = traced_server(store)
    with client.trace(tracing.KEY, store, name="by-hand") as trace:
        request = urllib.request.Request(
            server.url + "/v2/queues/q2", method="PUT", data=b"{}",
            headers=dict(trace.headers(), **{
                "Client-ID": str(uuid.uuid4()),
                "X-Project-ID": zaqar.DEFAULT_PROJECT,
                "Content-Type": "application/json"}))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
    tracing.wait_for_messages(store, trace.id)
    (root,) = tracing.show(trace.id, store)
    assert root.name == "by-hand"
    assert [c.name for c in root.children] == ["wsgi"]


def test_block_error_recorded_and_previous_trace_restored(
        requests_integration):
    """No server: the client's span through the process's notifier."""
    from stacktrail import notifier
    from stacktrail import profiler
    from stacktrail.common import sink
    received = []
    notifier.set(received.append)
    try:
        outer = profiler.init(tracing.KEY)
        with pytest.raises(KeyError):
            with client.trace(tracing.KEY, name="job") as trace:
                assert profiler.get() is trace.profiler
                assert trace.id != outer.get_base_id()
                raise KeyError("q1")
        assert profiler.get() is outer
    finally:
        profiler.clean()
        notifier.set(sink.NoopSink())
    assert [(m["name"], m["base_id"]) for m in received] == [
        ("job-start", trace.id), ("job-stop", trace.id)]
    assert received[1]["info"]["etype"] == "KeyError"
