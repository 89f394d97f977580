"""redis:// and redissentinel://: conformance, osprofiler round trips, TTL."""

import json
import subprocess
import time
import types

import pytest
import redis

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import codec
from stacktrail.drivers import redis as redis_driver
from tests import servers
from tests.drivers import conformance


class TestRedisConformance(conformance.DriverConformance):

    unreachable_connection_string = "redis://127.0.0.1:%d/0" % \
        servers.free_port()

    @pytest.fixture
    def connection_string(self, redis_url):
        return redis_url


def _client(url):
    return redis.Redis.from_url(url)


def _point(base_id, name, phase, ns, parent=None, trace_id=None, info=None):
    return (name, phase, base_id, parent or base_id, trace_id or ids.new_id(),
            ns, info)


def _sorted(tree):
    return sorted((name, _sorted(children)) for name, children in tree)


# osprofiler round trips (osprofiler 4.4.0 is a test-only dependency)

def _osprofiler_trace(url, error=False):
    """A trace written by osprofiler itself through its Redis driver."""
    from osprofiler import notifier as op_notifier
    from osprofiler import profiler as op_profiler
    from osprofiler.drivers import base as op_base
    conf = {"profiler": types.SimpleNamespace(filter_error_trace=True)}
    driver = op_base.get_driver(url, project="op-project",
                                service="op-service", host="op-host",
                                conf=conf)
    previous = op_notifier.get()
    op_notifier.set(driver.notify)
    try:
        op_profiler.init("key")
        with op_profiler.Trace("wsgi", info={"path": "/"}):
            with op_profiler.Trace("db"):
                pass
            if error:
                with pytest.raises(ValueError):
                    with op_profiler.Trace("rpc"):
                        raise ValueError("boom")
        base_id = op_profiler.get().get_base_id()
    finally:
        op_profiler.clean()
        op_notifier.set(previous)
    return base_id


def test_we_read_osprofiler_traces(redis_url):
    base_id = _osprofiler_trace(redis_url, error=True)
    driver = base.get_driver(redis_url)
    report = driver.get_report(base_id)
    assert conformance.names_tree(report["children"]) == [
        ("wsgi", [("db", []), ("rpc", [])])]
    wsgi = report["children"][0]["info"]
    assert wsgi["service"] == "op-service" and wsgi["project"] == "op-project"
    listed = {t["base_id"]: t for t in driver.list_traces()}
    first = min(m["timestamp"] for m in driver.get_messages(base_id))
    assert listed[base_id]["timestamp"] == first
    assert base_id in [t["base_id"] for t in driver.list_error_traces()]


def test_osprofiler_reads_our_traces(redis_url):
    from osprofiler.drivers import base as op_base
    from stacktrail import notifier
    from stacktrail.common.sink import NoopSink
    suite = conformance.DriverConformance()
    try:
        ours = suite.write_sample(redis_url)
        sink = suite.sink(redis_url)
        tracer = conformance.Tracer(sink)
        tracer.start("wsgi")
        tracer.failing_span("db")
        tracer.stop()
        tracer.finish()
        assert sink.flush(5)
    finally:
        for sink in suite._sinks:
            sink.close(5)
        notifier.set(NoopSink())
        notifier.clear_notifier_cache()
    op_driver = op_base.get_driver(redis_url, conf={})
    report = op_driver.get_report(ours)
    # osprofiler cuts names at the first "-" ("rpc-call" reads as "rpc")
    # and keeps siblings in the order it read them.
    assert _sorted(conformance.names_tree(report["children"])) == [
        ("wsgi", [("db", []), ("rpc", [("db", [])])])]
    assert report["children"][0]["info"]["host"] == conformance.HOST
    listed = [t["base_id"] for t in
              op_base.get_driver(redis_url, conf={}).list_traces()]
    assert {ours, tracer.base_id} <= set(listed)
    errors = op_base.get_driver(redis_url, conf={}).list_error_traces()
    assert [e["base_id"] for e in errors] == [tracer.base_id]


# the key layout itself

def test_key_layout(redis_url):
    driver = base.get_driver(redis_url, project="p", service="s")
    base_id = ids.new_id()
    ns = 1_700_000_000_123_456_789
    span = ids.new_id()
    driver.write_points([
        _point(base_id, "a", points.START, ns, trace_id=span),
        _point(base_id, "a", points.STOP, ns + 5000, trace_id=span,
               info={"etype": "ValueError", "message": "x"})])
    text = ids.to_uuid(base_id)
    db = _client(redis_url)
    raw = db.lrange("osprofiler_opt:" + text, 0, -1)
    assert [json.loads(r)["name"] for r in raw] == ["a-stop", "a-start"]
    marker = json.loads(db.get("osprofiler_error:" + text))
    assert marker == {"base_id": text,
                      "timestamp": clock.format_timestamp(ns + 5000)}
    assert db.zscore("stacktrail_traces", text) == ns // 1000
    assert db.ttl("osprofiler_opt:" + text) == -1  # no retention: kept


def test_list_traces_uses_earliest_point(redis_url):
    """A child service flushing before the root still lists the root time."""
    driver = base.get_driver(redis_url)
    base_id = ids.new_id()
    ns = time.time_ns()
    driver.write_points([_point(base_id, "child", points.START, ns + 10**6)])
    driver.write_points([_point(base_id, "root", points.START, ns)])
    listed, = driver.list_traces()
    assert listed == {"base_id": ids.to_uuid(base_id),
                      "timestamp": clock.format_timestamp(ns)}


def test_retention_sets_ttl(redis_url):
    driver = base.get_driver(redis_url, retention=120)
    base_id = ids.new_id()
    driver.write_points([_point(base_id, "a", points.STOP, time.time_ns(),
                                info={"etype": "E"})])
    db = _client(redis_url)
    text = ids.to_uuid(base_id)
    for key in ("osprofiler_opt:" + text, "osprofiler_error:" + text,
                "stacktrail_traces"):
        assert 100 < db.ttl(key) <= 120, key


def test_retention_from_conf(redis_url):
    from oslo_config import cfg
    from stacktrail import opts
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([])
    conf.set_override("retention", 60, group="profiler")
    driver = base.get_driver(redis_url, conf=conf)
    assert driver.retention == 60
    assert base.get_driver(redis_url, conf=None).retention == 0


def test_plain_redis_ignores_the_sentinel_socket_timeout(redis_url):
    # [profiler] socket_timeout (0.1 s by default) is for Sentinel: a
    # plain store keeps a timeout a slow report or big batch fits in.
    from oslo_config import cfg
    from stacktrail import opts
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([])
    driver = base.get_driver(redis_url, conf=conf)
    pool = driver.db.connection_pool.connection_kwargs
    assert conf.profiler.socket_timeout == 0.1
    assert driver.timeout == redis_driver.DEFAULT_TIMEOUT == 5.0
    assert pool["socket_timeout"] == 5.0
    assert base.get_driver(redis_url, socket_timeout=2.0).timeout == 2.0
    conf.set_override("socket_timeout", 1.0, group="profiler")
    assert base.get_driver(redis_url, conf=conf).timeout == 1.0


@pytest.mark.parametrize("fast", [True, False])
def test_big_trace_is_read_in_chunks_oldest_first(redis_url, monkeypatch,
                                                  fast):
    # Chunked reads keep the order across chunk edges, and a junk item is
    # skipped and named by its position, on both codec paths.
    if fast and not codec.AVAILABLE:
        pytest.skip("orjson is not installed")
    monkeypatch.setattr(redis_driver, "READ_CHUNK", 7)
    monkeypatch.setattr(codec, "FAST", fast)
    driver = base.get_driver(redis_url)
    base_id = ids.new_id()
    t0 = time.time_ns()
    driver.write_points([_point(base_id, "p%02d" % i, points.START,
                                t0 + i * 1000) for i in range(12)])
    key = "osprofiler_opt:" + ids.to_uuid(base_id)
    _client(redis_url).lpush(key, b"{junk")
    driver.write_points([_point(base_id, "p%02d" % i, points.START,
                                t0 + i * 1000) for i in range(12, 20)])
    messages = driver.get_messages(ids.to_uuid(base_id))
    assert [m["name"] for m in messages] == [
        "p%02d-start" % i for i in range(20)]
    assert driver.skipped == [(key, "item 12 is not JSON")]


def test_retention_prunes_index(redis_url):
    driver = base.get_driver(redis_url, retention=60)
    old, new = ids.new_id(), ids.new_id()
    driver.write_points([_point(old, "a", points.START,
                                time.time_ns() - 3600 * 10**9)])
    driver.write_points([_point(new, "a", points.START, time.time_ns())])
    members = _client(redis_url).zrange("stacktrail_traces", 0, -1)
    assert members == [ids.to_uuid(new).encode()]


# bad strings and dead stores

@pytest.mark.parametrize("url, match", [
    ("redis://", "needs a host"),
    ("redis://localhost:notaport/0", "bad port"),
    ("redis://localhost:6379/x", "bad redis database"),
    ("redissentinel://", "needs host:port"),
    ("redissentinel://h1:1,h2/0", "bad sentinel address 'h2'"),
])
def test_bad_connection_strings(url, match):
    with pytest.raises(base.DriverError, match=match) as caught:
        base.get_driver(url)
    assert "\n" not in str(caught.value)


def test_password_never_in_errors():
    with pytest.raises(base.DriverError) as caught:
        base.get_driver("redis://:s3cret@localhost:6379/x")
    assert "s3cret" not in str(caught.value)


def test_unreachable_read_is_one_line():
    driver = base.get_driver("redis://127.0.0.1:%d/0" % servers.free_port())
    with pytest.raises(base.DriverError, match="redis at 127.0.0.1") as e:
        driver.list_traces()
    assert "\n" not in str(e.value)


def test_unreachable_store_logs_once(caplog):
    from stacktrail.common import buffer
    driver = base.get_driver("redis://127.0.0.1:%d/0" % servers.free_port())
    sink = buffer.BufferedSink(driver, batch_size=10)
    base_id = ids.new_id()
    for i in range(100):
        sink.put(_point(base_id, "x", points.START, time.time_ns()))
    assert sink.flush(5) is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert sink.errors == 10 and sink.dropped == 100 and sink.written == 0


# sentinel

def _start_sentinel(tmp_path, index, master_port, service):
    port = servers.free_port()
    config = tmp_path / ("sentinel-%d.conf" % index)
    config.write_text(
        "port %d\nbind 127.0.0.1\ndir %s\n"
        "sentinel monitor %s 127.0.0.1 %d 1\n"
        % (port, tmp_path, service, master_port))
    proc = subprocess.Popen(["redis-server", str(config), "--sentinel"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port).ping():
                return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.skip("could not start a redis sentinel")


@pytest.fixture
def sentinel_url(tmp_path, redis_url, redis_server, unique_name):
    """redissentinel:// through a dead sentinel and two live ones."""
    procs = []
    ports = [servers.free_port()]  # nothing listens there
    try:
        for i in range(2):
            proc, port = _start_sentinel(tmp_path, i, redis_server[1],
                                         unique_name)
            procs.append(proc)
            ports.append(port)
        db = redis_url.rsplit("/", 1)[1]
        hosts = ",".join("127.0.0.1:%d" % p for p in ports)
        yield "redissentinel://%s/%s" % (hosts, db), unique_name
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


class TestRedisSentinelConformance(conformance.DriverConformance):

    threads = 4
    processes = 2
    unreachable_connection_string = "redissentinel://127.0.0.1:%d,%s/0" % (
        servers.free_port(), "127.0.0.1:%d" % servers.free_port())

    @pytest.fixture
    def connection_string(self, sentinel_url):
        url, service = sentinel_url
        self.driver_kwargs = {"sentinel_service_name": service,
                              "socket_timeout": 2.0}
        return url


def test_sentinel_writes_to_the_master(sentinel_url, redis_url):
    url, service = sentinel_url
    driver = base.get_driver(url, sentinel_service_name=service)
    base_id = ids.new_id()
    driver.write_points([_point(base_id, "a", points.START, time.time_ns())])
    assert _client(redis_url).exists("osprofiler_opt:" + ids.to_uuid(base_id))


def test_sentinel_options_from_conf(sentinel_url):
    url, service = sentinel_url
    conf = {"profiler": {"sentinel_service_name": service,
                         "socket_timeout": 1.5}}
    driver = base.get_driver(url, conf=conf)
    assert driver.service_name == service and driver.timeout == 1.5
    assert driver.list_traces() == []


# the fast write path (base.points_json, packed pipeline)

def _slow_texts(batch, host, project, service):
    driver = base.Driver("x://", project=project, service=service, host=host)
    return [base.to_json(m) for m in driver.format_points(batch)]


@pytest.mark.parametrize("project, service, host", [
    ("zaqar", "api", "node-1"), (None, None, "n\u00f6de"),
    ('quo"te', None, "h")])
def test_fast_messages_are_the_same_text(project, service, host):
    batch = [
        _point(ids.new_id(), "wsgi", points.START, time.time_ns(),
               info={"request": {"path": "/v2/q", "n": [1, 2.5, None]}}),
        _point(ids.new_id(), "wsgi", points.STOP, time.time_ns()),
        _point(ids.new_id(), "db", points.STOP, 1, info={}),
        ("n\u00e9\"\n", 1, "text-id", ids.new_id(), "t\u2603", 10**18,
         {"host": "mine", 3: "x", "f": float("nan"), "o": object()}),
        ("x", 0, 1, 2, 3, 4, {"etype": "E", "message": "m\u00e9"}),
    ]
    assert base.points_json(batch, host, project, service) == \
        _slow_texts(batch, host, project, service)


def test_unencodable_info_keeps_the_point():
    """A cycle, keys JSON cannot hold, or nesting deeper than the writing
    thread may go: the point is stored with the reason instead of its info
    (in the agent, an exception here would make a writer retry the same
    record for ever)."""
    cycle = {}
    cycle["self"] = cycle
    deep = {"a": []}
    for _ in range(5000):
        deep = {"a": [deep]}
    batch = [("x", 0, 1, 1, 2, 3, info) for info in
             (cycle, {(1, 2): "tuple key"}, deep)] + [("ok", 1, 1, 1, 2, 3,
                                                      None)]
    texts = base.points_json(batch, "h", "p", "s")
    assert [json.loads(t)["info"] for t in texts] == [
        {"host": "h", "unencodable_info": "ValueError"},
        {"host": "h", "unencodable_info": "TypeError"},
        {"host": "h", "unencodable_info": "RecursionError"},
        {"host": "h"}]


def test_non_ascii_ids_and_names_round_trip(redis_url):
    driver = base.get_driver(redis_url, project="p\u00e9", service="s")
    base_id = "tr\u00e4ce-\u2603"
    driver.write_points([
        ("n\u00e9", points.START, base_id, base_id, "sp\u00e4n", 10**18,
         {"k": "v\u00e9"}),
        ("n\u00e9", points.STOP, base_id, base_id, "sp\u00e4n", 10**18 + 1000,
         {"etype": "E\u00e9"})])
    messages = driver.get_messages(base_id)
    assert [m["name"] for m in messages] == ["n\u00e9-start", "n\u00e9-stop"]
    assert messages[0]["info"] == {"k": "v\u00e9", "host": driver.host}
    assert messages[0]["project"] == "p\u00e9"
    assert [t["base_id"] for t in driver.list_error_traces()] == [base_id]
    assert _client(redis_url).zscore("stacktrail_traces", base_id) == 10**15
    # a lone surrogate (JSON "\\ud800" from a hostile peer) is stored too,
    # never a batch that fails for ever
    driver.write_points([("n", points.START, "bad\ud800", "p", "t", 1, None)])


def test_error_reply_fails_the_batch_and_keeps_the_connection(redis_url):
    driver = base.get_driver(redis_url)
    base_id = ids.new_id()
    key = "osprofiler_opt:" + ids.to_uuid(base_id)
    _client(redis_url).set(key, "not a list")
    other = ids.new_id()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        driver.write_points([_point(base_id, "a", points.START, 1),
                             _point(other, "b", points.START, 2)])
    # every reply was read: the pooled connection serves the next batch
    assert len(driver.get_messages(ids.to_uuid(other))) == 1
    driver.write_points([_point(other, "c", points.STOP, 3)])
    assert len(driver.get_messages(ids.to_uuid(other))) == 2
