"""``openstack --os-profile <key> <command>`` traced by stacktrail.

The real ``openstack`` command (python-openstackclient 10.5, osc-lib 4.7,
keystoneauth1, openstacksdk, python-cinderclient, python-zaqarclient from
PyPI) runs in a client environment of its own, with stacktrail on its path
as after ``pip install stacktrail``: its ``openstack.cli.extension`` plugin
(stacktrail/clients/osc.py) is all that wires it.  It authenticates
against the local cloud's Keystone (tests/clients/cloud_stub.py) and talks
to a real zaqar-server and to the stub's Swift, Nova and Cinder, all traced
into one store.  The command prints the trace id as osc-lib does; the tree
read back with ``stacktrail trace show`` has the command's span at the root,
an ``http`` span per request under it and each server's span under that.
Every request the stub served carried the trace in both formats
(osprofiler's signed X-Trace-Info/X-Trace-HMAC and W3C traceparent) naming
the same client span.
"""

from tests.clients import harness
from tests.services import tracing

# (command, its name in the span, the server spans it must reach:
# (service, method, path)).
COMMANDS = {
    # python-zaqarclient's OSC plugin -> the real zaqar-server
    "zaqar": (["messaging", "queue", "create", "cli-q1"],
              "messaging queue create",
              [("Zaqar-server", "PUT", "/v2/queues/cli-q1")]),
    "zaqar-post": (["messaging", "message", "post", "--client-id",
                    "3381af92-2b9e-11e3-b191-71861300734c", "cli-q2",
                    '{"body": {"n": 1}, "ttl": 300}'],
                   "messaging message post",
                   [("Zaqar-server", "POST", "/v2/queues/cli-q2/messages")]),
    # openstacksdk (compute proxy): version discovery, then the list
    "sdk": (["server", "list"], "server list",
            [("nova", "GET", "/compute/v2.1/servers/detail")]),
    # the block storage client
    "cinder": (["volume", "list"], "volume list",
               [("cinder", "GET",
                 "/volume/v3/%s/volumes/detail" % harness.PROJECT)]),
    # OSC's own object-store API on the keystoneauth session
    "swift": (["container", "create", "cli-c1"], "container create",
              [("swift", "PUT",
                "/swift/v1/AUTH_%s/cli-c1" % harness.PROJECT)]),
}


def run_traced(env, overlay, home, cloud, store, argv):
    res = harness.openstack(env, overlay, home, cloud, "--os-profile",
                            tracing.KEY, *argv,
                            STACKTRAIL_CONNECTION_STRING=store)
    output = res.stdout + res.stderr
    base_id = harness.printed_trace_id(output)
    assert base_id, output
    return res, output, base_id


def assert_command_tree(store, cloud, base_id, name, reached, exit_code=0):
    found = harness.wait_for_trace(store, base_id)
    assert tracing.unclosed(found) == []
    by_id = harness.spans(found)
    roots = [i for i, s in by_id.items() if s["parent"] == base_id]
    assert len(roots) == 1, by_id
    root = by_id[roots[0]]
    assert (root["name"], root["service"]) == ("openstack", "openstack")
    assert root["start"]["command"] == {"program": "openstack",
                                        "name": name}
    assert root["stop"]["command"] == {"exit_code": exit_code}

    # Every request is an http span right under the command's span, with
    # the server's own span under it.
    calls = {i: s for i, s in by_id.items() if s["name"] == "http"}
    assert calls and all(s["parent"] == roots[0] for s in calls.values())
    served = [(s["service"], s["start"]["request"]["method"],
               s["start"]["request"]["path"])
              for s in by_id.values() if s["name"] == "wsgi"]
    assert all(by_id[s["parent"]]["name"] == "http"
               for s in by_id.values() if s["name"] == "wsgi")
    assert len(served) == len(calls)
    assert ("keystone", "POST", "/identity/v3/auth/tokens") in served
    for call in reached:
        assert call in served, served

    # Both formats on every request the stub served, naming the same span.
    seen = cloud.requests_of(base_id)
    assert len(seen) == sum(1 for s in served if s[0] != "Zaqar-server")
    for request in seen:
        harness.assert_both_formats(request, base_id, set(calls))
    return by_id


def test_commands_without_osprofiler(clients_env, client_overlay,
                                     client_home, cloud, trace_store):
    """osprofiler is not installed: osc-lib still offers --os-profile
    (stacktrail answers to its profiler hooks) and prints the id."""
    env, overlay = clients_env, client_overlay
    for label in ("zaqar", "sdk", "cinder", "swift"):
        argv, name, reached = COMMANDS[label]
        res, output, base_id = run_traced(env, overlay, client_home, cloud,
                                          trace_store, argv)
        assert res.returncode == 0, output
        # osc-lib's own lines, then ours.
        assert "Short trace ID for OpenTracing-based drivers:" in output
        assert "osprofiler trace show --html %s" % base_id in output
        assert "stacktrail trace show %s" % base_id in output
        by_id = assert_command_tree(trace_store, cloud, base_id, name,
                                    reached)
        assert tracing.KEY not in str(by_id)   # the key is never recorded
        if label == "zaqar":
            assert_zaqar_work_under_request(by_id, "sqlalchemy_queue_"
                                                   "controller")


def assert_zaqar_work_under_request(by_id, controller):
    """Zaqar's storage spans hang under its wsgi span."""
    (served,) = [i for i, s in by_id.items() if s["name"] == "wsgi"
                 and s["service"] == "Zaqar-server"]
    under = {s["name"] for s in by_id.values() if s["parent"] == served}
    assert controller in under, under


def test_commands_with_osprofiler(clients_osprofiler_env, client_overlay,
                                  client_home, cloud, trace_store):
    """osprofiler installed: its names (what keystoneauth1, zaqarclient
    and osc-lib call) are taken over, and the trace is stacktrail's."""
    env = clients_osprofiler_env
    for label in ("zaqar-post", "sdk"):
        argv, name, reached = COMMANDS[label]
        if label == "zaqar-post":
            harness.openstack(env, client_overlay, client_home, cloud,
                              "messaging", "queue", "create", "cli-q2")
        res, output, base_id = run_traced(env, client_overlay, client_home,
                                          cloud, trace_store, argv)
        assert res.returncode == 0, output
        by_id = assert_command_tree(trace_store, cloud, base_id, name,
                                    reached)
        if label == "zaqar-post":
            assert_zaqar_work_under_request(by_id,
                                            "redis_message_controller")


def test_failed_command_records_its_exit_code(clients_env, client_overlay,
                                              client_home, cloud,
                                              trace_store):
    res, output, base_id = run_traced(
        clients_env, client_overlay, client_home, cloud, trace_store,
        ["container", "show", "no-such-container"])
    assert res.returncode == 1, output
    by_id = assert_command_tree(
        trace_store, cloud, base_id, "container show",
        [("swift", "HEAD", "/swift/v1/AUTH_%s/no-such-container"
          % harness.PROJECT)], exit_code=1)
    (root,) = [s for s in by_id.values() if s["name"] == "openstack"]
    assert root["stop"]["etype"].endswith("NotFound")


def test_without_os_profile_nothing_is_sent(clients_env, client_overlay,
                                            client_home, cloud):
    before = len(cloud.requests())
    res = harness.openstack(clients_env, client_overlay, client_home, cloud,
                            "server", "list")
    assert res.returncode == 0, res.stdout + res.stderr
    assert harness.printed_trace_id(res.stdout + res.stderr) is None
    after = cloud.requests()[before:]
    assert after and not any(r["X-Trace-Info"] or r["traceparent"]
                             for r in after)


def test_key_from_the_environment(clients_env, client_overlay, client_home,
                                  cloud, trace_store):
    """``OS_PROFILE`` (osc-lib's variable) works like ``--os-profile``;
    ``--os-profile-connection-string`` names the store."""
    res = harness.openstack(
        clients_env, client_overlay, client_home, cloud,
        "--os-profile-connection-string", trace_store, "server", "list",
        OS_PROFILE=tracing.KEY)
    output = res.stdout + res.stderr
    assert res.returncode == 0, output
    base_id = harness.printed_trace_id(output)
    assert base_id
    assert_command_tree(trace_store, cloud, base_id, "server list",
                        COMMANDS["sdk"][2])
