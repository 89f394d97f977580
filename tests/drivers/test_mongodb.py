"""mongodb:// against a real MongoDB wire-protocol server (nx-27017)."""

import datetime
import time

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from tests.drivers import conformance

pymongo = pytest.importorskip("pymongo")

UNREACHABLE = "mongodb://127.0.0.1:9/stacktrail"


class TestMongoDBConformance(conformance.DriverConformance):

    unreachable_connection_string = UNREACHABLE
    driver_kwargs = {"timeout": 2}

    @pytest.fixture
    def connection_string(self, mongo_url):
        return mongo_url


def _points(base_id, names, error=None):
    t = time.time_ns()
    out = []
    for i, name in enumerate(names):
        span = ids.new_id()
        out.append((name, points.START, base_id, base_id, span, t + i * 10,
                    None))
        stop_info = error if name == names[-1] else None
        out.append((name, points.STOP, base_id, base_id, span,
                    t + i * 10 + 5, stop_info))
    return out


@pytest.fixture
def driver(mongo_url):
    d = base.get_driver(mongo_url, project="zaqar", service="api",
                        host="node-1", timeout=5)
    yield d
    d.close()


def _client(mongo_url):
    return pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)


def test_database_from_url_and_default():
    assert base.get_driver("mongodb://h:1/tracedb").db_name == "tracedb"
    assert base.get_driver("mongodb://h:1").db_name == "osprofiler"
    assert base.get_driver("mongodb://h:1/").db_name == "osprofiler"


def test_layout_is_osprofilers(driver, mongo_url):
    base_id = ids.new_id()
    driver.write_points(_points(base_id, ["wsgi", "db"]))
    db = _client(mongo_url)[driver.db_name]
    docs = list(db.profiler.find({"base_id": ids.to_uuid(base_id)}))
    assert len(docs) == 4
    assert {d["project"] for d in docs} == {"zaqar"}
    assert {d["service"] for d in docs} == {"api"}
    assert {d["info"]["host"] for d in docs} == {"node-1"}
    assert "expire_at" not in docs[0]
    keys = {tuple(k for k, _ in v["key"])
            for v in db.profiler.index_information().values()}
    assert {("base_id",), ("timestamp",)} <= keys


def test_batch_is_one_insert_many(driver, monkeypatch):
    calls = []
    driver.write_points(_points(ids.new_id(), ["warm-up"]))  # indexes made
    collection = driver._connect().profiler
    original = type(collection).insert_many

    def counting(self, documents, *args, **kwargs):
        calls.append(len(documents))
        return original(self, documents, *args, **kwargs)

    monkeypatch.setattr(type(collection), "insert_many", counting)
    driver.write_points(_points(ids.new_id(), ["n%d" % i for i in range(50)]))
    assert calls == [100]


def test_retention_ttl_index_and_datetime(mongo_url):
    driver = base.get_driver(mongo_url, retention=3600)
    base_id = ids.new_id()
    driver.write_points(_points(base_id, ["a"], error={"etype": "E",
                                                       "message": "m"}))
    db = _client(mongo_url)[driver.db_name]
    for collection in (db.profiler, db.profiler_error):
        ttl = [v for v in collection.index_information().values()
               if v.get("expireAfterSeconds") is not None]
        assert [(t["key"][0][0], t["expireAfterSeconds"]) for t in ttl] == [
            ("expire_at", 0)]
    doc = db.profiler.find_one({"base_id": ids.to_uuid(base_id)})
    assert isinstance(doc["expire_at"], datetime.datetime)
    expire = doc["expire_at"].replace(tzinfo=datetime.timezone.utc)
    left = expire - datetime.datetime.now(datetime.timezone.utc)
    assert 3500 < left.total_seconds() <= 3600
    # read side hides the field: messages stay osprofiler messages
    assert all("expire_at" not in m for m in driver.get_messages(base_id))
    driver.close()


def test_retention_from_conf(mongo_url):
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.IntOpt("retention")], group="profiler")
    conf([], project="test")
    conf.set_override("retention", 60, group="profiler")
    driver = base.get_driver(mongo_url, conf=conf)
    assert driver.retention == 60


def test_list_traces_is_one_aggregation(driver, monkeypatch):
    written = [ids.new_id() for _ in range(5)]
    for base_id in written:
        driver.write_points(_points(base_id, ["x", "y"]))
    collection = driver._connect().profiler
    calls = []
    for name in ("find", "aggregate", "distinct"):
        original = getattr(type(collection), name)

        def counting(self, *a, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(type(collection), name, counting)
    listed = driver.list_traces(fields={"base_id", "timestamp", "name",
                                        "info.host"})
    assert calls == ["aggregate"]
    assert [t["base_id"] for t in listed] == [ids.to_uuid(b) for b in written]
    assert all(t["name"] == "x-start" for t in listed)
    assert all(t["info"] == {"host": "node-1"} for t in listed)


def test_error_traces_keep_first_timestamp(driver):
    base_id = ids.new_id()
    error = {"etype": "KeyError", "message": "boom"}
    first = _points(base_id, ["a"], error=error)
    later = [(p[0], p[1], p[2], p[3], p[4], p[5] + 10 ** 9, p[6])
             for p in first]
    driver.write_points(later)
    driver.write_points(first)
    errors = [t for t in driver.list_error_traces()
              if t["base_id"] == ids.to_uuid(base_id)]
    stop = points.to_message(first[1])["timestamp"]
    assert errors == [{"base_id": ids.to_uuid(base_id), "timestamp": stop}]


def test_unreachable_read_side_is_one_line_driver_error():
    driver = base.get_driver(UNREACHABLE, timeout=0.5)  # no I/O yet
    for call in (lambda: driver.get_report(ids.to_uuid(ids.new_id())),
                 driver.list_traces, driver.list_error_traces):
        with pytest.raises(base.DriverError) as info:
            call()
        text = str(info.value)
        assert "\n" not in text and "127.0.0.1:9" in text
        assert len(text) < 300


def test_unreachable_write_raises_to_the_flusher_not_the_service():
    driver = base.get_driver(UNREACHABLE, timeout=0.5)
    batch = _points(ids.new_id(), ["a"])
    with pytest.raises(base.DriverError):
        driver.write_points(batch)
    sink = driver.make_sink()
    for p in batch * 10:
        sink.put(p)
    sink.close(1)
