"""tree.build: osprofiler's report shape, with full names, microseconds
and tolerance for damaged traces."""

import datetime
import random

import pytest

from stacktrail.report import tree
from tests.report import tracegen as tg

A, B, C, D = "a" * 8, "b" * 8, "c" * 8, "d" * 8


def nested():
    return tg.spans(("wsgi", A, tg.BASE, 0, 100),
                    ("db", B, A, 10, 30),
                    ("rpc", C, A, 40, 90),
                    ("db", D, C, 50, 60.5))


def osprofiler_report(messages):
    """What osprofiler 4.4 itself builds from the same messages."""
    from osprofiler.drivers import base as os_base
    driver = os_base.Driver("test://")
    for m in messages:
        driver._append_results(m["trace_id"], m["parent_id"], m["name"],
                               m["project"], m["service"], m["info"]["host"],
                               m["timestamp"], raw_payload=m)
    return driver._parse_results()


def shape(node):
    return (node["trace_id"], [shape(c) for c in node["children"]])


def test_same_shape_as_osprofiler():
    messages = nested()
    ours, theirs = tree.build(messages), osprofiler_report(messages)
    assert set(theirs) <= set(ours)
    assert set(theirs["info"]) <= set(ours["info"])
    assert ours["info"]["name"] == "total"
    assert ours["info"]["started"] == theirs["info"]["started"] == 0
    assert ours["info"]["finished"] == theirs["info"]["finished"] == 100
    assert (ours["info"]["last_trace_started"]
            == theirs["info"]["last_trace_started"])
    assert ([shape(n) for n in ours["children"]]
            == [shape(n) for n in theirs["children"]])
    ours_nodes, theirs_nodes = tg.by_id(ours), tg.by_id(theirs)
    for trace_id, node in theirs_nodes.items():
        mine = ours_nodes[trace_id]
        assert set(node) <= set(mine)
        assert set(node["info"]) <= set(mine["info"])
        for key in ("name", "project", "service", "host", "started",
                    "finished", "exception", "meta.raw_payload.db-start"):
            assert mine["info"].get(key) == node["info"].get(key), key
        assert mine["parent_id"] == node["parent_id"]
    for name, entry in theirs["stats"].items():
        assert ours["stats"][name]["count"] == entry["count"]
        assert ours["stats"][name]["duration"] == entry["duration"]


def test_full_names_and_microseconds():
    report = tree.build(tg.spans(("wsgi", A, tg.BASE, 0, 10),
                                 ("db-query", B, A, 1, 3.2505)))
    db = tg.by_id(report)[B]["info"]
    assert db["name"] == "db-query"  # osprofiler would say "db"
    assert db["started_us"] == 1000 and db["finished_us"] == 3250
    assert db["duration_us"] == 2250
    assert (db["started"], db["finished"]) == (1, 3)
    assert "meta.raw_payload.db-query-start" in db
    assert report["stats"]["db-query"] == {
        "count": 1, "duration": 2, "duration_us": 2250}
    assert report["info"]["finished_us"] == 10_000


def test_any_order_same_report():
    messages = nested()
    expected = tree.build(messages)
    shuffled = list(messages)
    random.Random(7).shuffle(shuffled)
    assert tree.build(shuffled) == expected
    assert [n["trace_id"] for n in expected["children"][0]["children"]] == [
        B, C]


def test_duplicates_are_merged():
    messages = nested()
    report = tree.build(messages + messages[:3])
    assert report["info"]["span_count"] == 4
    assert report["stats"]["db"]["count"] == 2


def test_missing_stop_is_open_until_trace_end():
    messages = tg.spans(("wsgi", A, tg.BASE, 0, 100))
    messages += [tg.point("worker-start", B, tg.BASE, 20)]
    report = tree.build(messages)
    worker = tg.by_id(report)[B]["info"]
    assert worker["open"] is True
    assert worker["finished_us"] == 100_000  # end of the trace
    assert report["info"]["open_count"] == 1


def test_missing_stop_does_not_outlive_a_finished_parent():
    messages = tg.spans(("wsgi", A, tg.BASE, 0, 100), ("rpc", B, A, 10, 50))
    messages += [tg.point("db-start", C, B, 20)]
    db = tg.by_id(tree.build(messages))[C]["info"]
    assert db["open"] and db["finished_us"] == 50_000


def test_missing_start_starts_with_its_first_child_or_is_a_point():
    messages = tg.spans(("db", B, A, 10, 20))
    messages += [tg.point("wsgi-stop", A, tg.BASE, 30),
                 tg.point("lone-stop", C, tg.BASE, 25)]
    nodes = tg.by_id(tree.build(messages))
    assert nodes[A]["info"]["missing_start"] is True
    # The trace starts at 10 ms (its first point): A starts with B.
    assert nodes[A]["info"]["started_us"] == nodes[B]["info"]["started_us"]
    assert nodes[A]["info"]["duration_us"] == 20_000
    assert [c["trace_id"] for c in nodes[A]["children"]] == [B]
    assert nodes[C]["info"]["duration_us"] == 0


def test_orphans_attach_to_the_root():
    messages = tg.spans(("wsgi", A, tg.BASE, 0, 10),
                        ("lost", B, "never-stored", 2, 4))
    report = tree.build(messages)
    assert [n["trace_id"] for n in report["children"]] == [A, B]
    assert report["children"][1]["info"]["orphan"] is True
    assert "orphan" not in report["children"][0]["info"]


def test_parent_cycles_are_cut():
    messages = tg.spans(("x", A, B, 0, 10), ("y", B, A, 1, 5))
    report = tree.build(messages)
    assert report["info"]["span_count"] == 2
    assert len(tg.by_id(report)) == 2


def test_errors_are_marked():
    messages = tg.spans(("wsgi", A, tg.BASE, 0, 10),
                        ("wsgi", B, tg.BASE, 11, 12))
    messages += tg.span("rpc", C, A, 1, 5,
                        stop_info={"etype": "ValueError", "message": "boom"})
    messages[2]["info"]["response"] = {"status": 503}  # B's stop
    nodes = tg.by_id(tree.build(messages))
    assert nodes[C]["info"]["error"] is True
    assert nodes[C]["info"]["exception"] == "ValueError"
    assert nodes[C]["info"]["error_message"] == "ValueError: boom"
    assert nodes[B]["info"]["error"] is True
    assert "503" in nodes[B]["info"]["error_message"]
    assert nodes[A]["info"]["error"] is False
    assert nodes[A]["info"]["exception"] == "None"


@pytest.mark.parametrize("status", [500, "502 Bad Gateway"])
def test_wsgi_status_in_flat_info(status):
    messages = tg.span("wsgi", A, tg.BASE, 0, 1,
                       stop_info={"status": status})
    assert tree.build(messages)["info"]["error_count"] == 1


def test_client_error_is_not_an_error():
    messages = tg.span("wsgi", A, tg.BASE, 0, 1, stop_info={"status": 404})
    assert tree.build(messages)["info"]["error_count"] == 0


def test_empty_and_broken_input():
    report = tree.build([])
    assert report["children"] == [] and report["info"]["finished"] is None
    report = tree.build([{"name": "x-start"}, {"bad": 1},
                         *tg.span("ok", A, tg.BASE, 0, 1)])
    assert report["info"]["span_count"] == 1
    assert report["info"]["ignored_messages"] == 2


def test_other_timestamp_forms():
    messages = tg.span("wsgi", A, tg.BASE, 0, 1)
    messages[0]["timestamp"] = tg.T0
    messages[1]["timestamp"] = (tg.T0 + datetime.timedelta(
        milliseconds=1.5)).strftime("%Y-%m-%d %H:%M:%S.%fZ")
    info = tree.build(messages)["children"][0]["info"]
    assert info["duration_us"] == 1500


def test_timestamp_round_trip():
    us = 1_714_564_800_123_456
    assert tree.parse_time_us(tree.format_time_us(us)) == us
