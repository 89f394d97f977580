"""A real zaqar-server traced from its configuration files alone.

Each server runs Zaqar 23 from PyPI in its own environment with stacktrail
installed beside it, started with ``zaqar.conf`` (stores, the trace store,
the HMAC key), the shipped ``etc/zaqar/stacktrail.conf`` and, where a test
changes a switch, one more file.  Requests are signed as an operator's
client signs them; the trace is read back from the store.
"""

import signal
import time
from pathlib import Path

import pytest

from tests.services import tracing
from tests.services import zaqar

FRAGMENT = zaqar.FRAGMENT
SECRET = "a-message-body-value-never-recorded"


@pytest.fixture
def start(tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    """start(store, **options) -> a running traced zaqar-server.

    ``overrides``: ``[profiler]`` values in a file after the fragment;
    other keywords go to the harness (``message_store``, ``pools``...).
    """
    running = []

    def start(store, overrides=None, message_store=redis_url, inline=False,
              **kwargs):
        directory = tmp_path / ("server%d" % len(running))
        directory.mkdir()
        profiler = {"connection_string": store, "hmac_keys": tracing.KEY}
        if inline:  # the fragment's lines copied into zaqar.conf
            extra, sections = [], zaqar.fragment_sections(**profiler)
        else:
            extra, sections = [FRAGMENT], {"profiler": profiler}
        if overrides is not None:
            extra.append(zaqar.write_overrides(directory, overrides))
        server = zaqar.zaqar_server(
            directory, message_store, env=zaqar_env,
            overlay=stacktrail_overlay, extra_conf_files=extra,
            **sections, **kwargs)
        running.append(server)
        return server.__enter__()

    yield start
    for server in running:
        server.__exit__(None, None, None)


def round_trip(server, queue="q1"):
    """Create a queue, then a signed POST of one message and GET; the id."""
    client = server.client()
    assert client.create_queue(queue).status_code == 201
    base_id, headers = tracing.signed_headers()
    posted = client.post_messages(queue, [{"body": {"v": SECRET}, "ttl": 300}],
                                  headers=headers)
    assert posted.status_code == 201, posted.text
    got = client.get_messages(queue, echo=True, headers=headers)
    assert got.status_code == 200, got.text
    assert [m["body"] for m in got.json()["messages"]] == [{"v": SECRET}]
    return base_id


def test_the_fragment_lines_copied_into_zaqar_conf_trace_alike(
        start, second_redis_url):
    server = start(second_redis_url, inline=True)
    base_id = round_trip(server)
    tracing.wait_for_messages(second_redis_url, base_id)
    roots = tracing.show(base_id, second_redis_url)
    assert [r.name for r in roots] == ["wsgi", "wsgi"]
    assert {c.name for c in roots[0].children} >= {
        "sqlalchemy_queue_controller", "redis_message_controller"}


def file_store(tmp_path):
    return "file://%s" % (tmp_path / "traces.jsonl")


def test_signed_post_and_get_give_one_tree(start, second_redis_url):
    server = start(second_redis_url)
    base_id = round_trip(server)
    tracing.wait_for_messages(second_redis_url, base_id)
    roots = tracing.show(base_id, second_redis_url)

    assert [(r.name, r.start["request"]["method"],
             r.stop["response"]["status"]) for r in roots] == [
        ("wsgi", "POST", 201), ("wsgi", "GET", 200)]
    post, get = roots
    assert post.start["request"]["path"] == "/v2/queues/q1/messages"
    assert post.start["request"]["project"] == zaqar.DEFAULT_PROJECT
    assert {r.service for r in roots} == {"Zaqar-server"}

    # wsgi -> controller -> driver -> db, and wsgi -> controller -> redis
    children = {c.name: c for c in post.children}
    queue = children["sqlalchemy_queue_controller"]
    driver = queue.children[0]
    assert driver.name == "sqlalchemy_control_driver"
    assert {s.name for s in driver.children} == {"db"}
    message = children["redis_message_controller"]
    assert message.start["function"]["name"].endswith(
        "MessageController.post")
    commands = [c.start["db"]["command"] for c in message.children]
    assert "EVALSHA" in commands and "PIPELINE" in commands

    # The listing is a generator: its span covers the Redis work it does.
    listing = [c for c in get.children if c.name == "redis_message_controller"]
    assert listing and listing[0].start["function"]["name"].endswith(".list")
    assert any(c.name == "redis" for c in listing[0].children)

    found = tracing.messages(second_redis_url, base_id)
    assert tracing.unclosed(found) == []
    text = str(found)
    assert SECRET not in text and tracing.KEY not in text


def test_a_server_on_redis_never_loads_pymongo(start, second_redis_url):
    # The fragment turns trace_mongodb on; a Zaqar that keeps its messages
    # in Redis must not carry pymongo for it (its C extensions show in the
    # process's memory map once it is imported).
    server = start(second_redis_url)
    round_trip(server)
    maps = Path("/proc/%d/maps" % server.pid).read_text()
    assert "/bson/_cbson" not in maps and "/pymongo/_cmessage" not in maps


# flag -> the spans it alone switches
FLAG_SPANS = {
    "trace_wsgi_transport": lambda name: name == "wsgi",
    "trace_message_store": lambda name: name.startswith("redis_"),
    "trace_management_store": lambda name: name.startswith("sqlalchemy_"),
    "trace_redis": lambda name: name == "redis",
    "trace_sqlalchemy": lambda name: name == "db",
}


def _names(start, tmp_path, overrides):
    """The span names of a round trip through a server of its own."""
    name = "q%d" % len(overrides)
    (tmp_path / name).mkdir()
    store = file_store(tmp_path / name)
    base_id = round_trip(start(store, overrides), name)
    return set(tracing.span_names(tracing.wait_for_messages(store, base_id)))


@pytest.mark.parametrize("flag", sorted(FLAG_SPANS))
def test_each_flag_removes_exactly_its_spans(start, tmp_path, flag):
    everything = _names(start, tmp_path, {})
    without = _names(start, tmp_path, {flag: False})
    mine = {name for name in everything if FLAG_SPANS[flag](name)}
    assert mine, "the flag's spans are there when it is on"
    assert without == everything - mine


def test_pool_lookups_traced_with_trace_pooling(start, tmp_path, redis_url,
                                                second_redis_url):
    store = file_store(tmp_path)
    server = start(store, message_store=None,
                   pools=[redis_url, second_redis_url])
    base_id = round_trip(server)
    found = tracing.wait_for_messages(store, base_id)
    pools = [m["info"]["pool"] for m in found if m["name"] == "pool-start"]
    assert {p["operation"] for p in pools} >= {"lookup", "pool_id"}
    results = [m["info"]["pool"]["result"] for m in found
               if m["name"] == "pool-stop"]
    assert set(results) & {"pool0", "pool1"}      # which pool served it
    names = tracing.span_names(found)
    assert names.get("pooling_message_controller") and names.get("redis")


@pytest.mark.parametrize("wsgi", [True, False])
@pytest.mark.parametrize("message", [True, False])
@pytest.mark.parametrize("management", [True, False])
def test_every_combination_starts_and_serves(start, tmp_path, wsgi, message,
                                             management):
    """Upstream dies at start with enabled = true and a store flag off."""
    server = start(file_store(tmp_path), {
        "trace_wsgi_transport": wsgi, "trace_message_store": message,
        "trace_management_store": management})
    round_trip(server)


def test_enabled_false_means_no_span_even_when_signed(start, tmp_path):
    store = file_store(tmp_path)
    server = start(store, {"enabled": False})
    round_trip(server)
    time.sleep(1.0)
    assert not (tmp_path / "traces.jsonl").exists()
    assert "Traceback" not in server.log_text(whole=True)


def test_past_the_rate_limit_traces_are_whole_or_absent(
        start, second_redis_url):
    """Past ``max_triggered_traces_per_second`` the server refuses whole
    traces: a client's signed POST and its GET are traced together or not
    at all, never half a trace."""
    server = start(second_redis_url,
                   overrides={"max_triggered_traces_per_second": 2})
    client = server.client()
    assert client.create_queue("q1").status_code == 201
    sent = []
    for n in range(8):
        base_id, headers = tracing.signed_headers()
        sent.append(base_id)
        assert client.post_messages("q1", [{"body": {"n": n}, "ttl": 300}],
                                    headers=headers).status_code == 201
        time.sleep(0.25)   # the budget refills a little between requests
        assert client.get_messages("q1", echo=True,
                                   headers=headers).status_code == 200
        time.sleep(0.25)
    tracing.wait_for_messages(second_redis_url, sent[0])
    methods = {base_id: sorted(
        m["info"]["request"]["method"]
        for m in tracing.messages(second_redis_url, base_id)
        if m["name"] == "wsgi-start") for base_id in sent}
    assert methods[sent[0]] == ["GET", "POST"]
    assert [] in methods.values(), methods      # the limit refused some
    assert set(map(tuple, methods.values())) <= {(), ("GET", "POST")}, \
        methods


def test_sighup_applies_a_flag_change_without_a_restart(start, tmp_path):
    store = file_store(tmp_path)
    server = start(store, {"trace_redis": False})
    first = round_trip(server, "q1")
    assert "redis" not in tracing.span_names(
        tracing.wait_for_messages(store, first))

    zaqar.write_overrides(tmp_path / "server0", {"trace_redis": True})
    pid = server.pid
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    names = {}
    while time.monotonic() < deadline and "redis" not in names:
        time.sleep(0.3)
        second = round_trip(server, "q%d" % int(time.monotonic() * 1000))
        names = tracing.span_names(tracing.wait_for_messages(store, second))
    assert "redis" in names
    assert server.running() and server.pid == pid


def test_mongodb_commands_under_the_management_store(start, tmp_path,
                                                     mongo_url):
    """Zaqar's MongoDB message store cannot run on nx-27017 (no server
    version); its management store can, so the commands are shown there."""
    store = file_store(tmp_path)
    try:
        server = start(store, management_url=mongo_url)
        base_id = round_trip(server)
        found = tracing.wait_for_messages(store, base_id)
    finally:
        zaqar.drop_mongo_databases(mongo_url)
    names = tracing.span_names(found)
    assert names.get("mongodb") and names.get("mongodb_queue_controller")
    parents = {m["trace_id"]: m["name"] for m in found
               if m["name"].endswith("-start")}
    commands = [m for m in found if m["name"] == "mongodb-start"]
    assert all(parents.get(m["parent_id"], "").startswith("mongodb_")
               for m in commands)
