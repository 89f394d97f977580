"""A script's trace through keystoneauth1 and the python-*clients.

One ``stacktrail.client.trace`` around a script that uses one keystoneauth1
session for everything: a raw ``session.get`` by endpoint filter,
python-novaclient, python-cinderclient, python-zaqarclient against the real
zaqar-server, and openstacksdk's ``wait_for_server`` polling (the stub's
server is BUILD twice, then ACTIVE).  All of them are the real libraries
from PyPI in the client environment, with and without osprofiler
installed; the services are the local cloud (tests/clients/cloud_stub.py)
and zaqar-server, traced into one store.  Every request, the token request
included, is an http span under the script's span with the server's span
under it, and carried both header formats.
"""

import pytest

from tests.clients import harness
from tests.services import tracing

SCRIPT = """\
import json, sys
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from cinderclient import client as cinder_client
from novaclient import client as nova_client
import openstack
from zaqarclient.queues import client as zaqar_client
from stacktrail import client

auth_url, key, store, zaqar_url, queue_name = sys.argv[1:6]
auth = v3.Password(auth_url=auth_url, username="admin",
                   password="secret-password", project_id="stacktrail-test",
                   user_domain_id="default")
sess = ks_session.Session(auth=auth)

with client.trace(key, store, name="script") as trace:
    assert client.current_id() == trace.id
    raw = sess.get("/servers/detail", endpoint_filter={
        "service_type": "compute", "interface": "public"}).json()
    servers = nova_client.Client(
        "2.1", session=sess).servers.list()
    volumes = cinder_client.Client("3", session=sess).volumes.list()
    zaqar = zaqar_client.Client(zaqar_url, version=2, session=sess, conf={
        "auth_opts": {"backend": "keystone",
                      "options": {"os_project_id": "stacktrail-test"}}})
    queue = zaqar.queue(queue_name, force_create=True)
    queue.post([{"body": {"n": 1}, "ttl": 300}])
    conn = openstack.connection.Connection(session=sess,
                                           region_name="RegionOne")
    server = conn.compute.wait_for_server(
        conn.compute.get_server("srv-%s" % queue_name), interval=0.05,
        wait=20)
print(json.dumps({"id": trace.id, "status": server.status,
                  "servers": len(servers), "volumes": len(volumes),
                  "after": client.current_id()}))
"""


@pytest.mark.parametrize("osprofiler", [False, True],
                         ids=["plain", "osprofiler-installed"])
def test_one_trace_through_every_client(osprofiler, request, client_overlay,
                                        client_home, cloud, zaqar_server,
                                        trace_store):
    env = request.getfixturevalue(
        "clients_osprofiler_env" if osprofiler else "clients_env")
    queue = "script-%s" % ("osp" if osprofiler else "plain")
    out = harness.python(env, client_overlay, client_home, SCRIPT,
                         cloud.auth_url, tracing.KEY, trace_store,
                         zaqar_server.url, queue)
    assert out["status"] == "ACTIVE" and out["after"] is None
    base_id = out["id"]

    found = harness.wait_for_trace(trace_store, base_id)
    assert tracing.unclosed(found) == []
    by_id = harness.spans(found)
    roots = [i for i, s in by_id.items() if s["parent"] == base_id]
    assert [(by_id[i]["name"], by_id[i]["service"]) for i in roots] == [
        ("script", "client")]
    calls = {i: s for i, s in by_id.items() if s["name"] == "http"}
    assert all(s["parent"] == roots[0] for s in calls.values())
    served = []
    for span_id, span in by_id.items():
        if span["name"] == "wsgi":
            assert span["parent"] in calls
            request_info = span["start"]["request"]
            served.append((span["service"], request_info["method"],
                           request_info["path"], span_id))
    assert len(served) == len(calls)
    reached = [entry[:3] for entry in served]
    project = harness.PROJECT
    for expected in [
            ("keystone", "POST", "/identity/v3/auth/tokens"),
            ("nova", "GET", "/compute/v2.1/servers/detail"),
            ("cinder", "GET", "/volume/v3/%s/volumes/detail" % project),
            ("Zaqar-server", "PUT", "/v2/queues/" + queue),
            ("Zaqar-server", "POST", "/v2/queues/%s/messages" % queue)]:
        assert expected in reached, reached
    # raw keystoneauth + novaclient: two lists; wait_for_server: 3 reads.
    assert reached.count(("nova", "GET", "/compute/v2.1/servers/detail")) \
        == 2
    assert reached.count(("nova", "GET",
                          "/compute/v2.1/servers/srv-" + queue)) == 3

    (post,) = [i for s, m, p, i in served
               if s == "Zaqar-server" and m == "POST"]
    assert "redis_message_controller" in {
        s["name"] for s in by_id.values() if s["parent"] == post}

    seen = cloud.requests_of(base_id)
    assert len(seen) == sum(1 for s in served if s[0] != "Zaqar-server")
    for stub_request in seen:
        harness.assert_both_formats(stub_request, base_id, set(calls))
