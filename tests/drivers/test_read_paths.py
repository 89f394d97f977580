"""Reading a trace back, on both codec paths (orjson and the stdlib): the
SQL store decodes its rows in one pass and skips a row that is not JSON,
the MongoDB store reads in large batches, the file store skips torn
lines."""

import datetime

from stacktrail.drivers import base
from stacktrail.drivers import mongodb
from stacktrail.drivers import sql
from tests.codec_paths import path  # noqa: F401
from tests.report import tracegen as tg


def messages(count):
    out = []
    for i in range(count):
        out += tg.span("db", "s%d" % i, tg.BASE, i, i + 0.5,
                       {"db": {"statement": "SELECT caf\u00e9 %d" % i}})
    return out


def test_sql_rows_are_decoded_and_junk_is_skipped(path, tmp_path):
    url = "sqlite:///%s" % (tmp_path / "t.db")
    written = messages(50)
    driver = base.get_driver(url)
    driver.write_messages(written)
    assert driver.get_messages(tg.BASE) == written
    assert driver.skipped == []
    with driver.engine.begin() as conn:
        conn.execute(driver.table.insert(), [{
            "base_id": tg.BASE, "trace_id": "junk", "name": "junk",
            "timestamp": datetime.datetime(2024, 5, 1, 12, 0, 0, 700),
            "is_error": False, "message": "{not json"}])
    assert base.get_driver(url).get_messages(tg.BASE) == written
    driver = base.get_driver(url)
    driver.get_messages(tg.BASE)
    (where, why), = driver.skipped
    assert sql.TABLE in where and why == "not JSON"


def test_file_lines_are_decoded_and_torn_ones_skipped(path, tmp_path):
    target = tmp_path / "traces.jsonl"
    written = messages(30)
    driver = base.get_driver("file://%s" % target)
    driver.write_messages(written[:20])
    with open(target, "a") as f:
        f.write('{"base_id": "%s", "torn' % tg.BASE + "\n")
    driver.write_messages(written[20:])
    assert driver.get_messages(tg.BASE) == written


def test_mongodb_reads_in_large_batches(monkeypatch):
    seen = {}

    class Collection:
        def find(self, query, projection, batch_size=0):
            seen.update(query=query, batch_size=batch_size)
            return iter([{"base_id": tg.BASE}])

    class Database:
        profiler = Collection()

    driver = mongodb.MongoDBDriver.__new__(mongodb.MongoDBDriver)
    driver._pymongo = type("P", (), {"errors": type(
        "E", (), {"PyMongoError": type("X", (Exception,), {})})})
    monkeypatch.setattr(driver, "_ready", lambda: Database(), raising=False)
    assert driver.get_messages(tg.BASE) == [{"base_id": tg.BASE}]
    assert seen["batch_size"] == mongodb.READ_BATCH >= 1000
