"""Wire format, addresses and the spool, without processes."""

import json
import os

import pytest

from stacktrail.agent import protocol
from stacktrail.agent import spool as spool_mod
from stacktrail.common import ids
from stacktrail.common import points as points_mod
from stacktrail.drivers import base
from tests.agent import harness


def _round_trip(batch, version, max_frame=protocol.MAX_FRAME):
    frames, lost = protocol.encode_batch(batch, "zaqar", "api", "node1",
                                         max_frame, version=version)
    assert lost == 0 and len(frames) == 1
    (payload,) = protocol.FrameReader(max_frame).feed(frames[0][0])
    return protocol.decode_payload(payload)


def test_version_1_round_trip_keeps_raw_ints():
    batch = harness.make_points(20)
    decoded, n = _round_trip(batch, 1)
    assert n == 20 and decoded.version == 1
    assert decoded[:3] == ["zaqar", "api", "node1"]
    assert [tuple(p) for p in decoded[3]] == [tuple(p) for p in batch]


def test_version_2_round_trip_gives_the_same_points():
    # Ids travel as 128-bit integers and come out as their UUID text,
    # which every consumer (ids.to_uuid, the stores) treats alike.
    batch = harness.make_points(20)
    decoded, n = _round_trip(batch, 2)
    assert n == 20 and decoded.version == 2
    assert decoded.origin == ("zaqar", "api", "node1")
    assert [tuple(p) for p in decoded.points()] == [
        (p[0], p[1], ids.to_uuid(p[2]), ids.to_uuid(p[3]), ids.to_uuid(p[4]),
         p[5], p[6]) for p in batch]


def test_version_2_carries_text_ids_and_wide_name_tables():
    # Ids a peer sent as text (a propagated header) and more than 65,535
    # distinct names take the format's escape hatches.
    text_id = "not-a-uuid-from-a-peer"
    batch = [("n%d" % i, i % 2, text_id, 5, i + 1, 1000 + i, None)
             for i in range(70_000)]
    decoded, n = _round_trip(batch, 2, max_frame=16 << 20)
    assert type(decoded.points()) is points_mod.Batch   # bulk path
    points = decoded.points()
    assert n == 70_000 and points[0][:3] == ("n0", 0, text_id)
    assert points[-1][0] == "n69999" and points[-1][3] == ids.to_uuid(5)


def test_both_versions_format_the_same_messages():
    # What the agent writes to a store does not depend on the wire
    # version the service spoke: an upgraded agent reads old services.
    batch = harness.make_points(40)
    v1, _ = _round_trip(batch, 1)
    v2, _ = _round_trip(batch, 2)
    assert base.points_json(v1.points(), "node1", "zaqar", "api") == \
        base.points_json(v2.points(), "node1", "zaqar", "api")


def test_version_1_frame_of_an_old_service_is_read():
    # The bytes a service before version 2 sent, as it built them.
    payload = json.dumps(["zaqar", "api", "h", [
        ["wsgi", 0, 7, 7, 9, 1_700_000_000_000_000_000, {"a": 1}]]]).encode()
    (got,) = protocol.FrameReader().feed(protocol.frame(payload))
    decoded, n = protocol.decode_payload(got)
    assert n == 1 and decoded.points()[0][4] == 9


@pytest.mark.parametrize("payload", [
    b"\x02", b"\x02" + bytes(19), b"\x03" + bytes(40),
])
def test_malformed_version_2_payloads_are_refused(payload):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_payload(payload)


def test_corrupt_version_2_sections_are_refused():
    frames, _ = protocol.encode_batch(harness.make_points(10), "p", "s",
                                      "h", version=2)
    payload = frames[0][0][protocol.HEADER.size:]
    for cut in (1, 30, len(payload) - 1):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_payload(payload[:-cut])
    flipped = bytearray(payload)
    flipped[-5] ^= 0xFF
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_payload(bytes(flipped))


def test_big_batch_is_split_and_huge_point_is_lost():
    batch = harness.make_points(2000)
    frames, lost = protocol.encode_batch(batch, None, None, "h",
                                         max_frame=20000)
    assert lost == 0 and len(frames) > 1
    assert sum(n for _, n in frames) == 2000
    assert all(len(f) <= 20000 for f, _ in frames)
    huge = [("x", 0, 1, 1, 2, 3, {"blob": "a" * 50000})]
    frames, lost = protocol.encode_batch(huge, None, None, "h",
                                         max_frame=20000)
    assert frames == [] and lost == 1


def test_unserialisable_info_becomes_text():
    point = ("x", 0, 1, 1, 2, 3, {"obj": object(), (1, 2): "tuple key"})
    frames, lost = protocol.encode_batch([point], None, None, "h")
    assert lost == 0
    decoded, _ = protocol.decode_payload(frames[0][0][protocol.HEADER.size:])
    assert decoded[3][0][6]["obj"].startswith("<object")


def test_stream_split_across_reads():
    frames, _ = protocol.encode_batch(harness.make_points(10), None, None, "h")
    data = frames[0][0] * 3
    reader = protocol.FrameReader()
    got = []
    for i in range(0, len(data), 7):
        got += reader.feed(data[i:i + 7])
    assert len(got) == 3 and not reader.buffer


@pytest.mark.parametrize("payload", [
    b"not json", b"{}", b"[1,2,3]", b'["p","s","h",{}]',
    b'["p","s","h",[[1,0,1,1,1,1,null]]]',
    b'["p","s","h",[["n",7,1,1,1,1,null]]]',
    b'["p","s","h",[["n",0,-1,1,1,1,null]]]',
    b'["p","s","h",[["n",0,1,1,1,1,[]]]]',
    b"[" * 100000,
])
def test_malformed_payloads_are_refused(payload):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_payload(payload)
    assert info.value.reason == "malformed"


def test_bad_magic_and_oversized_frames():
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.FrameReader().feed(b"GET / HTTP/1.1\r\n\r\n")
    assert info.value.reason == "malformed"
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.FrameReader(4096).feed(protocol.HEADER.pack(
            protocol.MAGIC, 1 << 30))
    assert info.value.reason == "oversized"


def test_listen_addresses():
    assert protocol.parse_listen("unix:///run/a.sock").target == "/run/a.sock"
    assert protocol.parse_listen("tcp://127.0.0.1:6832").target == (
        "127.0.0.1", 6832)
    assert protocol.parse_listen("udp://localhost:6832").kind == "udp"
    for bad in ("tcp://0.0.0.0:1", "udp://10.0.0.5:1", "tcp://[::]:1",
                "unix://relative.sock", "http://127.0.0.1:1",
                "tcp://127.0.0.1"):
        with pytest.raises(ValueError):
            protocol.parse_listen(bad)
    address, _ = protocol.parse_agent_url("agent://127.0.0.1:9?transport=udp")
    assert address.kind == "udp"
    assert protocol.parse_agent_url("agent:///x/a.sock")[0].kind == "unix"


def test_spool_append_read_ack_collect(tmp_path):
    spool = spool_mod.Spool(str(tmp_path), 1 << 20, segment_bytes=64 << 10)
    places = [spool.append(b'["p","s","h",[]]' + b" " * 1000, 1)
              for _ in range(200)]
    assert spool.head == places[-1][1]
    records = spool.read(places[5][0], 10)
    assert [r.start for r in records] == [p[0] for p in places[5:15]]
    assert len(os.listdir(tmp_path)) > 3
    assert spool.collect(places[150][0]) >= 1
    assert spool.oldest <= places[150][0]
    spool.save_ack("k", places[150][0])
    spool.close()
    again = spool_mod.Spool(str(tmp_path), 1 << 20, segment_bytes=64 << 10)
    assert again.load_ack("k") == places[150][0]
    assert again.load_ack("new") == again.oldest
    assert again.head == places[-1][1]
    again.close()


def test_spool_cuts_torn_tail_and_is_bounded(tmp_path):
    spool = spool_mod.Spool(str(tmp_path), 1 << 20)
    spool.append(b"[1]", 1)
    end = spool.head
    spool.close()
    (segment,) = [p for p in tmp_path.iterdir() if p.name.startswith("seg")]
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x10\x00torn")
    spool = spool_mod.Spool(str(tmp_path), 1 << 20)
    assert spool.head == end
    while spool.append(b"x" * 10000, 1):
        pass
    assert spool.size <= 1 << 20
    with pytest.raises(spool_mod.SpoolLocked):
        spool_mod.Spool(str(tmp_path), 1 << 20)
    spool.close()


def test_config_options_are_listed():
    from stacktrail.agent import opts
    (group, options), = opts.list_opts()
    names = {o.name for o in options}
    assert group == "agent"
    assert {"listen", "connection_string", "spool_dir", "spool_max_bytes",
            "batch_size", "flush_interval", "metrics_listen",
            "socket_group", "socket_mode"} <= names
    json.dumps(sorted(names))
