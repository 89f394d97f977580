"""The one-line ``detail`` of each span: what it did, from what its
integration recorded, and never more.

Payloads come from the real integrations where that is cheap (the WSGI
filter, SQLAlchemy on SQLite, the driver/pool/@trace wrappers, and the info
builders of http, rpc, redis and pymongo), and as literal wire messages
(also osprofiler's) otherwise.
"""

import types

import pytest
import webob

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import report as reports
from stacktrail import web
from stacktrail.common import kinds
from stacktrail.common import signing
from stacktrail.common import sink
from stacktrail.report import describe
from stacktrail.report import tree
from tests.report import tracegen as tg

KEY = "describe-test-key-6f1c0d2a9b8e7f3c4d5a"


@pytest.fixture
def recorded():
    """The messages emitted by the profiler, with a clean slate around."""
    received = []
    profiler.clean()
    notifier.set(received.append)
    yield received
    profiler.clean()
    notifier.set(sink.NoopSink())


def detail_of(messages, name=None):
    """The detail of the one span (or the one called ``name``)."""
    nodes = list(tg.by_id(tree.build(messages)).values())
    if name is not None:
        nodes = [n for n in nodes if n["info"]["name"] == name]
    assert len(nodes) == 1, [n["info"]["name"] for n in nodes]
    return nodes[0]["info"]["detail"]


def one_span(name, start, stop=None, **kw):
    return detail_of(tg.span(name, "s", tg.BASE, 0, 5, start, stop, **kw))


# --- each kind of span, from the real integrations ---------------------------

def test_wsgi_from_the_real_filter(recorded):
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"ok"]

    packed, mac = signing.pack({"base_id": tg.BASE, "parent_id": tg.BASE},
                               KEY)
    middleware = web.WsgiMiddleware(app, hmac_keys=KEY, enabled=True)
    request = webob.Request.blank(
        "/v2/queues/q1?token=s3cret&password=hunter2", method="PUT",
        headers={web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac})
    request.get_response(middleware).body
    assert [m["name"] for m in recorded] == ["wsgi-start", "wsgi-stop"]
    # The query string is recorded (secrets masked) and never shown.
    assert "token=" in recorded[0]["info"]["request"]["query"]
    assert detail_of(recorded) == "PUT /v2/queues/q1 -> 201"


def test_sql_from_sqlalchemy_without_its_parameters(recorded):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from stacktrail.integrations import sqlalchemy as st_sql

    engine = sqlalchemy.create_engine("sqlite://")
    # Parameters are recorded here (an option asks for them), and still
    # never shown.
    st_sql.instrument_engine(engine, show_params=True)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE servers (id INTEGER, "
                                         "uuid TEXT, name TEXT)"))
            profiler.init(KEY)
            conn.execute(sqlalchemy.text(
                "SELECT servers.id,\n       servers.name\n  FROM servers\n"
                " WHERE servers.uuid = :uuid   AND servers.name != :name"),
                {"uuid": "topsecret-uuid", "name": "hidden-name"})
            profiler.clean()
    finally:
        st_sql.uninstrument_engine(engine)
    assert "topsecret-uuid" in str(recorded)  # recorded...
    detail = detail_of(recorded)
    assert "topsecret" not in detail and "hidden" not in detail  # ...not shown
    assert detail == ("SELECT servers.id, servers.name FROM servers WHERE "
                      "servers.…")
    assert len(detail) == describe.SQL_LIMIT


def test_http_from_the_requests_integration():
    requests = pytest.importorskip("requests")
    from stacktrail.integrations import http

    prepared = requests.Request(
        "GET", "http://10.0.0.5:8774/v2.1/servers?name=x&token=abc").prepare()
    start = http.request_info(prepared, show_query=True)
    assert start["requests"]["query"]  # recorded with the option...
    detail = one_span("http", start, {"requests": {"status_code": 200}})
    assert detail == "GET 10.0.0.5:8774/v2.1/servers -> 200"  # ...not shown
    default_port = http.request_info(requests.Request(
        "POST", "https://keystone.example/v3/auth/tokens").prepare())
    assert one_span("http", default_port) == \
        "POST keystone.example:443/v3/auth/tokens"
    ipv6 = http.request_info(requests.Request(
        "GET", "http://[fd00::5]:9292/v2/images").prepare())
    assert one_span("http", ipv6) == "GET [fd00::5]:9292/v2/images"


def test_rpc_from_the_rpc_integration():
    oslo_messaging = pytest.importorskip("oslo_messaging")
    from stacktrail.integrations import rpc

    target = oslo_messaging.Target(topic="compute", server="cpu-7",
                                   version="6.0")
    call = rpc._span_info(target, "build_instance", "call")
    assert one_span("rpc", call) == "call compute.build_instance"
    cast = rpc._span_info(oslo_messaging.Target(topic="conductor"),
                          "object_action", "cast")
    assert one_span("rpc", cast) == "cast conductor.object_action"


def test_redis_from_the_redis_integration():
    redis = pytest.importorskip("redis")
    from stacktrail.integrations import redis as st_redis

    client = redis.Redis()  # never connects: only the infos are made
    info = st_redis._command_info(client, ("GET", "secret-key-name"))
    assert one_span("redis", info) == "GET"
    pipe = client.pipeline()
    pipe.set("k1", "secret-value")
    pipe.incr("k2")
    pipe.get("k3")
    detail = one_span("redis", st_redis._pipeline_info(pipe))
    assert detail == "PIPELINE (3 commands)"
    assert "secret" not in detail


def test_mongodb_from_the_pymongo_listener():
    pytest.importorskip("pymongo")
    from stacktrail.integrations import pymongo as st_mongo

    event = types.SimpleNamespace(
        command_name="find", database_name="zaqar",
        command={"find": "messages", "filter": {"secret": "hidden"}},
        connection_id=("10.0.0.9", 27017), request_id=1)
    info = st_mongo.TraceListener()._info(event)
    assert one_span("mongodb", info) == "find messages"
    event.command_name, event.command = "ping", {"ping": 1}
    assert one_span("mongodb", st_mongo.TraceListener()._info(event)) == \
        "ping"


def test_driver_pool_and_trace_from_the_wrappers(recorded):
    from stacktrail.integrations import drivers
    from stacktrail.integrations import pools

    class Driver:
        def create_volume(self, name, password):
            return name

    class Catalog:
        def lookup(self, queue):
            return types.SimpleNamespace(name="shard-2")

    @profiler.trace("compute_api", hide_args=False, hide_result=False)
    def build(name, password):
        return "done"

    drivers.enable()
    pools.enable()
    try:
        driver = drivers.wrap(Driver(), show_args=True)
        catalog = pools.instrument(Catalog(), "lookup")
        profiler.init(KEY)
        driver.create_volume("vol-1", password="hunter2")
        catalog.lookup("q1")
        with pools.checkout("redis", shard="s1"):
            pass
        build("x", password="hunter2")
        profiler.clean()
    finally:
        drivers.disable()
        pools.disable()
    assert "hunter2" in str(recorded)  # recorded with show_args...
    report = tree.build(recorded)
    details = sorted((n["info"]["name"], n["info"]["detail"])
                     for n in tg.by_id(report).values())
    assert details == [
        ("compute_api", "%s.%s" % (__name__, build.__qualname__)),
        ("driver", "%s.%s.create_volume" % (__name__, Driver.__qualname__)),
        ("pool", "Catalog.lookup"),
        ("pool", "redis.checkout"),
    ]
    assert all("hunter2" not in d and "vol-1" not in d and "done" not in d
               for d in details)  # ...never shown


# --- osprofiler's own points -------------------------------------------------

def test_osprofiler_points_are_described_too():
    # osprofiler's wsgi (no status), sqlalchemy and requests (the point is
    # named after the scheme) and @trace.
    assert one_span("wsgi", {"request": {
        "path": "/v2.1/servers/detail", "query": "all_tenants=1",
        "method": "GET", "scheme": "http"}}) == "GET /v2.1/servers/detail"
    assert one_span("db", {"db": {"statement": "SELECT 42",
                                  "params": {"p": 1}}}) == "SELECT 42"
    assert one_span("https", {"requests": {
        "method": "GET", "query": "", "path": "/v3", "hostname": "ks",
        "port": 443, "scheme": "https"}},
        {"requests": {"status_code": 300}}) == "GET ks:443/v3 -> 300"
    assert one_span("compute_api", {"function": {
        "name": "nova.compute.api.API.create", "args": "(1,)",
        "kwargs": "{}"}}) == "nova.compute.api.API.create"


# --- missing, odd, hostile ---------------------------------------------------

@pytest.mark.parametrize("start, stop", [
    (None, None),
    ({}, {}),
    ({"foo": {"bar": 1}}, None),                 # unknown kind: no guess
    ({"request": None}, None),
    ({"request": "GET /"}, None),
    ({"request": {}}, {"response": {"status": 200}}),
    ({"requests": {"port": 80}}, None),
    ({"db": []}, None),
    ({"db": {"statement": None}}, None),
    ({"db": {"statement": 42}}, None),
    ({"db": {"command": {"x": 1}}}, None),
    ({"rpc": {"topic": "compute"}}, None),        # no method
    ({"rpc": 7}, None),
    ({"pool": {}}, None),
    ({"function": {"args": "(1,)"}}, None),
    ({"function": {"name": ["x"]}}, None),
])
def test_missing_or_odd_payloads_give_no_detail(start, stop):
    assert describe.from_infos(start, stop) == ""
    assert one_span("x", start, stop) == ""


def test_odd_values_around_a_good_one():
    assert describe.from_infos({"request": {"method": "GET", "path": "/"}},
                               {"response": {"status": True}}) == "GET /"
    assert describe.from_infos({"request": {"method": "GET", "path": "/"}},
                               "not a dict") == "GET /"
    assert describe.from_infos({"rpc": {"method": "m", "type": None,
                                        "topic": None}}) == "m"
    long_path = "/" + "a" * 1000
    assert len(describe.from_infos({"request": {"method": "GET",
                                                "path": long_path}})) < 300


class Explodes(dict):
    def get(self, *args):
        raise RuntimeError("hostile payload")


def test_a_payload_that_raises_gives_no_detail():
    assert describe.from_infos({"request": Explodes(method="GET")}) == ""
    assert describe.from_infos({"db": Explodes(statement="x")}) == ""


def test_missing_start_or_stop():
    start_only = [tg.point("wsgi-start", "s", tg.BASE, 0, {"request": {
        "method": "GET", "path": "/v2"}})]
    assert detail_of(start_only) == "GET /v2"
    stop_only = [tg.point("wsgi-stop", "s", tg.BASE, 0,
                          {"response": {"status": 200}})]
    assert detail_of(stop_only) == ""


@pytest.mark.parametrize("statement, expected", [
    ("SELECT 1", "SELECT 1"),
    ("  UPDATE  t\n\tSET a = ?  ", "UPDATE t SET a = ?"),
    ("SELECT " + "x, " * 100 + "y FROM t",
     "SELECT " + "x, " * 17 + "x…"),
    # Mostly indentation up front: all of it is collapsed, then cut.
    (" " * 1000 + "SELECT a\n" + " " * 500 + "FROM b", "SELECT a FROM b"),
    ("", ""),
])
def test_sql_lines(statement, expected):
    line = describe.sql(statement)
    assert line == expected
    assert len(line) <= describe.SQL_LIMIT and "\n" not in line


def test_sql_cache_stays_bounded():
    # The cache lives with the db kind's describer (stacktrail.common.kinds).
    for i in range(kinds._SQL_CACHE_SIZE + 10):
        describe.sql("SELECT %d" % i)
    assert len(kinds._SQL_LINES) <= kinds._SQL_CACHE_SIZE
    huge = "INSERT INTO t VALUES " + "(1, 'x'), " * 10000
    assert describe.sql(huge).startswith("INSERT INTO t VALUES (1, 'x')")
    assert huge not in kinds._SQL_LINES


# --- reports loaded rather than built ----------------------------------------

def test_describe_reads_a_nodes_raw_payloads():
    messages = tg.span("db-query", "s", tg.BASE, 0, 5,
                       {"db": {"statement": "DELETE FROM t"}})
    node = tree.build(messages)["children"][0]
    assert describe.describe(node["info"]) == "DELETE FROM t"
    assert describe.describe({"name": "x"}) == ""
    assert describe.describe(None) == ""
    assert describe.describe({"meta.raw_payload.x-start": "junk",
                              "meta.raw_payload.x-stop": None}) == ""


def test_a_loaded_osprofiler_report_gets_details():
    # osprofiler cuts the name at the first "-" but keeps the raw payload
    # under the full name; a report saved before ``detail`` existed.
    start = {"name": "db-query-start", "info": {"db": {
        "statement": "SELECT * FROM instances"}}}
    report = {"info": {"name": "total", "started": 0, "finished": 5},
              "children": [{"info": {
                  "name": "db", "started": 0, "finished": 5,
                  "meta.raw_payload.db-query-start": start},
                  "trace_id": "t", "parent_id": tg.BASE, "children": []}],
              "stats": {}}
    out = reports.render(report, "text")
    assert "db  SELECT * FROM instances" in out
    assert report["children"][0]["info"]["detail"] == \
        "SELECT * FROM instances"
    assert report["critical_path"][0]["detail"] == "SELECT * FROM instances"


def test_osprofiler_keys_are_unchanged():
    messages = tg.span("wsgi", "s", tg.BASE, 0, 5, {"request": {
        "method": "GET", "path": "/"}})
    info = tree.build(messages)["children"][0]["info"]
    assert info["detail"] == "GET /"
    for key in ("name", "project", "service", "host", "started", "finished",
                "exception", "meta.raw_payload.wsgi-start",
                "meta.raw_payload.wsgi-stop"):
        assert key in info
    assert info["meta.raw_payload.wsgi-start"]["info"]["request"] == {
        "method": "GET", "path": "/"}
