"""``trace_summaries``: what ``stacktrail trace list`` shows of each trace,
read from every real store (SQLite, PostgreSQL, MariaDB, file, Redis,
MongoDB on nx-27017, RabbitMQ through oslo.messaging)."""

import calendar

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from tests.drivers.test_messaging import connection_string as messaging_url
from tests.drivers.test_messaging import topic  # noqa: F401 (a fixture)

T0_US = calendar.timegm((2024, 5, 1, 10, 0, 0)) * 1_000_000
MS = 1000
ERROR = {"etype": "KeyError", "message": "boom"}


@pytest.fixture(params=["sqlite", "postgres", "mysql", "file", "redis",
                        "mongo", "messaging"])
def store(request, tmp_path):
    if request.param == "messaging":
        return messaging_url(request.getfixturevalue("rabbit_url"),
                             request.getfixturevalue("topic"))
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "t.db")
    if request.param == "file":
        return "file://%s" % (tmp_path / "t.jsonl")
    return request.getfixturevalue(request.param + "_url")


def _span(base_id, parent_id, name, start_ms, stop_ms, t0_us=T0_US,
          stop_info=None):
    span_id = ids.new_id()
    return [(name, points.START, base_id, parent_id, span_id,
             (t0_us + start_ms * MS) * 1000, None),
            (name, points.STOP, base_id, parent_id, span_id,
             (t0_us + stop_ms * MS) * 1000, stop_info)]


def _write(url, service, batch):
    driver = base.get_driver(url, project="p", service=service, host="h")
    try:
        driver.write_points(batch)
    finally:
        driver.close()


def _two_traces(url):
    """A: wsgi (api) with a db call and a failing cast served by the
    worker, 50 ms; B: one api span a minute later, 5 ms."""
    a, b = ids.new_id(), ids.new_id()
    root = _span(a, a, "wsgi", 0, 50)
    root_id = root[0][4]
    _write(url, "api", [root[0]] + _span(a, root_id, "db", 1, 3)
           + [root[1]])
    _write(url, "worker", _span(a, root_id, "cast", 10, 40,
                                stop_info=ERROR))
    _write(url, "api", _span(b, b, "list", 0, 5, t0_us=T0_US + 60_000_000))
    return ids.to_uuid(a), ids.to_uuid(b)


def test_summary_of_each_trace(store):
    a, b = _two_traces(store)
    found = {s["base_id"]: s for s in base.get_driver(store)
             .trace_summaries()}
    assert found == {
        a: {"base_id": a, "name": "wsgi",
            "timestamp": "2024-05-01T10:00:00.000000", "duration_ms": 50.0,
            "services": ["api", "worker"], "spans": 3, "error": True},
        b: {"base_id": b, "name": "list",
            "timestamp": "2024-05-01T10:01:00.000000", "duration_ms": 5.0,
            "services": ["api"], "spans": 1, "error": False}}


def test_time_window_is_on_the_start(store):
    a, b = _two_traces(store)
    driver = base.get_driver(store)
    middle = T0_US + 30_000_000

    def listed(**window):
        return [s["base_id"] for s in driver.trace_summaries(**window)]

    assert listed(since_us=middle) == [b]
    assert listed(until_us=middle) == [a]
    # A began exactly at T0 and ended inside the window: still A's start.
    assert listed(since_us=T0_US, until_us=T0_US + 1) == [a]
    assert listed(since_us=T0_US + 1, until_us=middle) == []
