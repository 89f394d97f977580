"""messaging:// over the local RabbitMQ, one topic (queue) per test."""

import json
import time
import urllib.parse

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from tests.drivers import conformance

pytest.importorskip("oslo_messaging")
amqp = pytest.importorskip("amqp")


def _connection(rabbit_url):
    url = urllib.parse.urlsplit(rabbit_url)
    conn = amqp.Connection(host="%s:%s" % (url.hostname, url.port or 5672),
                           userid=url.username or "guest",
                           password=url.password or "guest")
    conn.connect()
    return conn


@pytest.fixture
def topic(rabbit_url, unique_name):
    """A topic of this test's own; its queue is deleted afterwards."""
    yield unique_name
    conn = _connection(rabbit_url)
    try:
        conn.channel().queue_delete(unique_name + ".info")
    finally:
        conn.close()


def connection_string(rabbit_url, topic):
    return "messaging://?" + urllib.parse.urlencode(
        {"topic": topic, "transport_url": rabbit_url})


class TestMessagingConformance(conformance.DriverConformance):

    unreachable_connection_string = connection_string(
        "rabbit://guest:guest@127.0.0.1:9/", "unreachable")

    @pytest.fixture
    def connection_string(self, rabbit_url, topic):
        return connection_string(rabbit_url, topic)


def _points(base_id, names, error=None):
    t = time.time_ns()
    out = []
    for i, name in enumerate(names):
        span = ids.new_id()
        out.append((name, points.START, base_id, base_id, span, t + i, None))
        out.append((name, points.STOP, base_id, base_id, span, t + i + 1,
                    error if name == names[-1] else None))
    return out


@pytest.fixture
def driver(rabbit_url, topic):
    d = base.get_driver("messaging://", project="zaqar", service="api",
                        host="node-1", transport_url=rabbit_url, topic=topic)
    yield d
    d.close()


def _queue_bodies(rabbit_url, queue):
    """Peek at the queue (requeued on close) to see the notifications."""
    return [json.loads(body) for body in _queue_bodies_raw(rabbit_url, queue)]


def test_notification_format(driver, rabbit_url, topic):
    base_id = ids.new_id()
    driver.write_points(_points(base_id, ["wsgi"]))
    bodies = _queue_bodies(rabbit_url, topic + ".info")
    assert len(bodies) == 2
    for body in bodies:
        assert body["event_type"] == "profiler.api"
        assert body["publisher_id"] == "zaqar.api.node-1"
        assert body["priority"] == "INFO"
        assert body["payload"]["base_id"] == ids.to_uuid(base_id)
        assert body["payload"]["project"] == "zaqar"


def test_reading_keeps_other_traces(driver):
    mine, other = ids.new_id(), ids.new_id()
    driver.write_points(_points(mine, ["a", "b"]))
    driver.write_points(_points(other, ["c"]))
    assert len(driver.get_messages(mine)) == 4
    # the other trace, and this one, are still there for the next reader
    assert len(driver.get_messages(other)) == 2
    assert len(driver.get_messages(mine)) == 4
    listed = {t["base_id"] for t in driver.list_traces()}
    assert listed == {ids.to_uuid(mine), ids.to_uuid(other)}


def test_foreign_messages_survive_a_scan(driver, rabbit_url, topic):
    driver.write_points(_points(ids.new_id(), ["a"]))
    conn = _connection(rabbit_url)
    try:
        conn.channel().basic_publish(amqp.Message(b"not json"), exchange="",
                                     routing_key=topic + ".info")
    finally:
        conn.close()
    assert len(driver.list_traces()) == 1
    bodies = _queue_bodies_raw(rabbit_url, topic + ".info")
    assert b"not json" in bodies
    assert len(bodies) == 3


def _queue_bodies_raw(rabbit_url, queue):
    conn = _connection(rabbit_url)
    try:
        channel = conn.channel()
        out = []
        while True:
            message = channel.basic_get(queue)
            if message is None:
                return out
            out.append(message.body)
    finally:
        conn.close()


def test_duplicates_from_an_interrupted_scan_are_dropped(driver):
    base_id = ids.new_id()
    batch = _points(base_id, ["a"])
    driver.write_points(batch)
    driver.write_points(batch)  # as if a copy was made but not acked
    assert len(driver.get_messages(base_id)) == 2


def test_retention_drops_old_events_on_read(rabbit_url, topic):
    old = base.get_driver("messaging://", transport_url=rabbit_url,
                          topic=topic, retention=60)
    base_id = ids.new_id()
    stale = [(p[0], p[1], p[2], p[3], p[4], p[5] - 120 * 10 ** 9, p[6])
             for p in _points(base_id, ["old"])]
    fresh_id = ids.new_id()
    old.write_points(stale + _points(fresh_id, ["new"]))
    assert old.get_messages(base_id) == []
    assert len(old.get_messages(fresh_id)) == 2
    keep_all = base.get_driver("messaging://", transport_url=rabbit_url,
                               topic=topic)
    assert keep_all.get_messages(base_id) == []  # gone from the queue
    old.close()


def test_error_traces(driver):
    failing, clean = ids.new_id(), ids.new_id()
    driver.write_points(_points(failing, ["a"], error={"etype": "E",
                                                       "message": "m"}))
    driver.write_points(_points(clean, ["b"]))
    errors = driver.list_error_traces()
    assert [e["base_id"] for e in errors] == [ids.to_uuid(failing)]


def test_empty_topic_reads_nothing(driver):
    assert driver.get_messages(ids.new_id()) == []
    assert driver.list_traces() == []


def test_unreachable_bus():
    url = "rabbit://guest:guest@127.0.0.1:9/"
    driver = base.get_driver("messaging://", transport_url=url, timeout=1)
    with pytest.raises(base.DriverError) as info:
        driver.list_traces()
    assert "\n" not in str(info.value)
    assert "127.0.0.1:9" in str(info.value)
    with pytest.raises(base.DriverError, match="cannot publish"):
        driver.write_points(_points(ids.new_id(), ["a"]))
    driver.close()


def test_transport_from_conf(rabbit_url, topic):
    from oslo_config import cfg
    import oslo_messaging
    conf = cfg.ConfigOpts()
    oslo_messaging.get_notification_transport(conf, url=rabbit_url)
    conf([], project="test")
    conf.set_override("transport_url", rabbit_url)
    driver = base.get_driver("messaging://", conf=conf, topic=topic,
                             service="api")
    base_id = ids.new_id()
    driver.write_points(_points(base_id, ["x"]))
    assert len(driver.get_messages(base_id)) == 2
    driver.close()


def test_kafka_transport_cannot_be_read():
    driver = base.get_driver("messaging://",
                             transport_url="kafka://127.0.0.1:9092/")
    with pytest.raises(base.DriverError, match="rabbit://"):
        driver.list_traces()
