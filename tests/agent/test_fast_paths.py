"""The agent's per-point fast paths give what the general paths give:
UUID text, column-wise formatting, one script argument for a batch's
messages, and a live queue that keeps the records the writer needs next."""

import json
import uuid

import pytest
import redis

from stacktrail.agent import protocol
from stacktrail.agent import writer as writer_mod
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import codec
from tests.agent import harness


def _decode(batch, project="zaqar", service="api", host="node1"):
    frames, lost = protocol.encode_batch(batch, project, service, host,
                                         max_frame=16 << 20)
    assert lost == 0 and len(frames) == 1
    return protocol.decode_payload(frames[0][0][protocol.HEADER.size:])[0]


def test_uuid_texts_are_the_dashed_uuid_of_each_id():
    values = [0, 1, (1 << 128) - 1] + [ids.new_id() for _ in range(300)]
    table = b"".join(v.to_bytes(16, "big") for v in values)
    assert protocol.uuid_texts(memoryview(table)) == [
        str(uuid.UUID(int=v)) for v in values]
    assert protocol.uuid_texts(b"") == []


@pytest.mark.parametrize("fast", [True, False])
def test_dumps_each_gives_what_dumps_gives(fast):
    # One call for a whole list on the compiled path; a value it refuses
    # (a key that is no text, an int past 64 bits, a lone surrogate, a
    # nesting at its limit) sends every value through ``dumps``.
    deep = {"a": 1}
    for _ in range(254):
        deep = {"a": deep}
    plain = [None, {}, {"a": "caf\u00e9", "n": [1, 2.5]},
             {"f": float("nan")}, deep, "x\ny"]
    refused = [{1: "x"}, {"n": 2**70}, {"s": "\ud800"}]
    before = codec.FAST
    try:
        codec.use(fast)
        assert codec.dumps_each(plain) == [codec.dumps(v) for v in plain]
        for value in refused:
            assert codec.dumps_each(plain + [value]) == \
                [codec.dumps(v) for v in plain + [value]]
        assert codec.dumps_each([]) == []
    finally:
        codec.use(before)


def test_columns_give_the_general_paths_text():
    # Names needing escapes, both phases, times before one second and at
    # a second's last microsecond, infos with and without a host.
    batch = [("n\u00e9\"\\", 0, 5, 5, 6, 999_999_999, {"a": 1}),
             ("n\u00e9\"\\", 1, 5, 5, 6, 1_000_000_000, None),
             ("db", 0, 5, 6, 7, 1_700_000_000_123_456_789,
              {"host": "there", "b": "x"}),
             ("db", 1, 5, 6, 7, 3_000, {})]
    decoded = _decode(batch).points()
    assert type(decoded) is points.Batch
    general = base.points_json(list(decoded), "h", "p\u00e9", None)
    assert base.points_json(decoded, "h", "p\u00e9", None) == general


def test_text_ids_that_need_escaping_take_the_general_path(redis_url):
    # A peer's text id goes into JSON escaped, never as it came (it could
    # hold a quote or a newline and break the stored message).
    odd = 'id "with" \\ and\nnewline'
    batch = [("wsgi", 0, odd, odd, "span\u00e9", 10**18, None),
             ("wsgi", 1, odd, odd, "span\u00e9", 10**18 + 1000, None)]
    decoded = _decode(batch).points()
    assert type(decoded) is not points.Batch
    driver = base.get_driver(redis_url, project="p", service="s")
    driver.write_points(decoded)
    messages = driver.get_messages(odd)
    assert [m["trace_id"] for m in messages] == ["span\u00e9"] * 2
    assert [m["name"] for m in messages] == ["wsgi-start", "wsgi-stop"]


def test_a_batch_is_stored_trace_by_trace_once(redis_url):
    # Interleaved traces, one of them longer than the script's LPUSH chunk,
    # an error in one: each list holds its messages (newest first), each
    # trace its earliest microsecond, and a batch sent twice is stored once.
    first, second = ids.new_id(), ids.new_id()
    batch = []
    for i in range(1500):
        batch.append(("a", i % 2, first, first, 10 + i, 10**18 + i * 1000,
                      {"i": i}))
        if i < 3:
            batch.append(("b", 0, second, second, 5, 2 * 10**18 + i * 1000,
                          {"etype": "E"} if i == 1 else None))
    decoded = _decode(batch).points()
    driver = base.get_driver(redis_url, project="p", service="s")
    driver.write_points(decoded)
    driver.write_points(decoded)
    client = redis.Redis.from_url(redis_url)
    texts = base.points_json(decoded, driver.host, "p", "s")
    for base_id in (first, second):
        key = "osprofiler_opt:" + ids.to_uuid(base_id)
        mine = [t.encode() for t, p in zip(texts, decoded)
                if p[2] == ids.to_uuid(base_id)]
        assert client.lrange(key, 0, -1) == mine[::-1]
    assert client.zscore("stacktrail_traces", ids.to_uuid(first)) == 10**15
    marker = json.loads(client.get("osprofiler_error:" + ids.to_uuid(second)))
    assert marker == {"base_id": ids.to_uuid(second),
                      "timestamp": json.loads(texts[3])["timestamp"]}
    assert not client.exists("osprofiler_error:" + ids.to_uuid(first))


def test_a_batch_decoded_again_is_recognised_and_a_changed_one_is_not(
        redis_url):
    # What the agent does after a restart: the same frame read back from
    # its spool and decoded anew is the same batch (stored once); a batch
    # with one clock changed is another one (stored too).  So is a
    # hand-made batch whose clocks a u64 cannot hold.
    base_id = ids.new_id()
    batch = [("a", i % 2, base_id, base_id, 10 + i // 2, 10**18 + i,
              {"i": i}) for i in range(40)]
    changed = list(batch)
    changed[7] = changed[7][:5] + (changed[7][5] + 1,) + changed[7][6:]
    driver = base.get_driver(redis_url, project="p", service="s")
    for points_ in (batch, batch, changed, changed):
        driver.write_points(_decode(points_).points())
    key = "osprofiler_opt:" + ids.to_uuid(base_id)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(key) == 80
    odd = points.Batch.from_columns(
        ["a"], b"\x00", [ids.to_uuid(base_id)], [ids.to_uuid(base_id)],
        ["s9"], [-1], [None])
    driver.write_points(odd)
    assert client.llen(key) == 81


def test_a_full_live_queue_keeps_the_oldest_records():
    # The writer takes records oldest first: when the queue is full a new
    # record is left to the spool, never an older one forgotten for it.
    writer = writer_mod.Writer("redis://127.0.0.1:1/0", harness.IdleSpool(),
                               10, 0.1, 1.0)
    writer.live_points = 250
    for i in range(5):
        writer.offer(harness.spool_record(10 * i, 100))
    assert [r.start for r in writer.live] == [0, 10]
    assert writer._live_take(0).start == 0
    writer.offer(harness.spool_record(50, 100))
    assert [r.start for r in writer.live] == [10, 50]
    # records 20..49 come from the spool; the gap is skipped over
    assert writer._live_take(20) is None
    assert writer._live_take(50).start == 50
    # a record bigger than the whole queue is still kept when it is empty
    writer.offer(harness.spool_record(60, 1000))
    assert [r.start for r in writer.live] == [60]


def test_a_raw_newline_in_a_message_is_never_sent_as_it_is(redis_url):
    # Columns holding an id that JSON must escape (made by hand, the wire
    # never gives one): refused for the content, then written escaped by
    # the general path, never cut wrong by the script.
    good = ids.to_uuid(ids.new_id())
    batch = points.Batch.from_columns(
        ["a", "a"], b"\x00\x00", [good, "bad\nid"], [good, "bad\nid"],
        ["s1", "s2"], [10**18, 10**18], [None, None])
    driver = base.get_driver(redis_url, project="p", service="s")
    assert base.deliver(driver, batch) == base.Outcome(2, 0, [])
    assert [m["trace_id"] for m in driver.get_messages("bad\nid")] == ["s2"]
    assert [m["trace_id"] for m in driver.get_messages(good)] == ["s1"]


def test_an_empty_batch_is_a_harmless_write(redis_url):
    driver = base.get_driver(redis_url, project="p", service="s")
    driver.write_points([])
    driver.write_messages([])
    assert driver.list_traces() == []
