"""Critical path and self time on hand-built traces."""

import json

from stacktrail import report as reports
from stacktrail.cmd import cli
from stacktrail.report import analysis
from stacktrail.report import tree
from tests.report import tracegen as tg

ROOT, A, B, C, D = "root", "a", "b", "c", "d"


def path_of(report):
    return [(e["trace_id"], e["critical_us"]) for e in report["critical_path"]]


def self_of(report):
    return {n["trace_id"]: n["info"]["self_us"]
            for n in tg.by_id(report).values()}


def test_sequential_children_are_all_on_the_path():
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 100),
                                 ("db", A, ROOT, 10, 30),
                                 ("rpc", B, ROOT, 30, 90)))
    assert path_of(report) == [(ROOT, 100_000), (A, 20_000), (B, 60_000)]
    assert self_of(report) == {ROOT: 20_000, A: 20_000, B: 60_000}
    assert all(tg.by_id(report)[t]["info"]["critical"] for t in (ROOT, A, B))


def test_concurrent_children_only_the_one_that_bounds_the_parent():
    # A and B run in parallel; B finishes last so it alone holds up ROOT.
    # C ran entirely under B's shadow: not on the path.
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 100),
                                 ("http", A, ROOT, 10, 50),
                                 ("http", B, ROOT, 5, 95),
                                 ("http", C, ROOT, 20, 30)))
    assert path_of(report) == [(ROOT, 100_000), (B, 90_000)]
    assert tg.by_id(report)[A]["info"]["critical"] is False
    # Self time counts the union of the children once: 0-5 and 95-100.
    assert self_of(report)[ROOT] == 10_000


def test_overlap_puts_the_earlier_child_on_the_path_for_its_head():
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 100),
                                 ("db", A, ROOT, 10, 60),
                                 ("rpc", B, ROOT, 40, 90)))
    assert path_of(report) == [(ROOT, 100_000), (A, 30_000), (B, 50_000)]


def test_nested_path_follows_the_deepest_bottleneck():
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 100),
                                 ("rpc", A, ROOT, 10, 90),
                                 ("db", B, A, 20, 30),
                                 ("http", C, A, 35, 85),
                                 ("db-query", D, C, 40, 80)))
    assert [t for t, _ in path_of(report)] == [ROOT, A, B, C, D]
    assert [e["depth"] for e in report["critical_path"]] == [0, 1, 2, 2, 3]
    top = report["top_self_time"][0]
    assert (top["trace_id"], top["name"], top["self_us"]) == (
        D, "db-query", 40_000)
    assert top["share"] == 0.4
    assert self_of(report) == {ROOT: 20_000, A: 20_000, B: 10_000,
                               C: 10_000, D: 40_000}


def test_child_outliving_its_parent_is_followed():
    # A cast served after the request answered: the operation is done only
    # when the child is, so the child is not clipped to its parent.
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 50),
                                 ("rpc", A, ROOT, 10, 60)))
    assert self_of(report)[ROOT] == 10_000   # self time stays clipped
    assert path_of(report) == [(ROOT, 60_000), (A, 50_000)]
    info = report["info"]
    assert (info["end_to_end_us"], info["response_us"], info["async_us"]) \
        == (60_000, 50_000, 10_000)
    assert tg.by_id(report)[ROOT]["info"]["async_finished_us"] == 60_000
    assert "async_finished_us" not in tg.by_id(report)[A]["info"]


def test_top_self_time_is_sorted_and_limited():
    specs = [("wsgi", ROOT, tg.BASE, 0, 1000)]
    specs += [("db", "s%02d" % i, ROOT, i * 20, i * 20 + i)
              for i in range(1, 30)]
    report = tree.build(tg.spans(*specs))
    tops = report["top_self_time"]
    assert len(tops) == analysis.TOP_SELF_TIME
    assert [t["self_us"] for t in tops] == sorted(
        (t["self_us"] for t in tops), reverse=True)


def test_osprofiler_report_in_ms_is_annotated():
    # A report saved by osprofiler: milliseconds only, no analysis keys.
    report = {"info": {"name": "total", "started": 0, "finished": 10},
              "children": [{"info": {"name": "wsgi", "started": 0,
                                     "finished": 10},
                            "trace_id": ROOT, "parent_id": "x",
                            "children": [{"info": {"name": "db",
                                                   "started": 2,
                                                   "finished": 9},
                                          "trace_id": A, "parent_id": ROOT,
                                          "children": []}]}],
              "stats": {}}
    analysis.annotate(report)
    assert path_of(report) == [(ROOT, 10_000), (A, 7_000)]
    assert report["top_self_time"][0]["trace_id"] == A


def test_deep_trace_does_not_recurse():
    depth = 5000
    specs = [("call", "s0", tg.BASE, 0, depth * 2)]
    specs += [("call", "s%d" % i, "s%d" % (i - 1), i, depth * 2 - i)
              for i in range(1, depth)]
    report = tree.build(tg.spans(*specs))
    assert len(report["critical_path"]) == depth
    assert report["critical_path"][-1]["depth"] == depth - 1


def db(statement):
    return {"db": {"statement": statement, "system": "sqlite"}}


def cast_trace():
    """The API answers at 50 ms after casting; the cast is served from
    70 to 200 ms by another service, whose driver call is the slow part.
    Two BEGINs sit beside the statements they open."""
    messages = tg.spans(("wsgi", ROOT, tg.BASE, 0, 50),
                        ("db", "b1", ROOT, 5, 6, db("BEGIN")),
                        ("db", "s1", ROOT, 6, 10, db("SELECT 2 FROM t")),
                        ("rpc", A, ROOT, 40, 45))
    for spec in (("rpc", B, A, 70, 200),
                 ("db", "b2", B, 75, 76, db("BEGIN")),
                 ("db", "s2", B, 76, 80, db("UPDATE t SET x=1")),
                 ("driver", C, B, 90, 190)):
        messages += tg.span(*spec, service="cinder-volume")
    return tree.build(messages)


def test_critical_path_follows_a_cast_past_the_api_response():
    report = cast_trace()
    info = report["info"]
    assert (info["end_to_end_us"], info["response_us"]) == (200_000, 50_000)
    path = {e["trace_id"]: e for e in report["critical_path"]}
    assert [e["trace_id"] for e in report["critical_path"]] == [
        ROOT, "s1", A, B, "s2", C]
    # B waited 25 ms in the queue after A (the cast) returned.
    assert path[B]["queued_us"] == 25_000
    assert path[B]["service"] == "cinder-volume"
    assert path[C]["contribution_us"] == 100_000
    # Every microsecond of the end-to-end time is someone's.
    assert sum(e["contribution_us"] for e in report["critical_path"]) \
        + info["untraced_us"] == info["end_to_end_us"]


def test_transaction_statements_are_folded_not_ranked():
    report = cast_trace()
    nodes = tg.by_id(report)
    assert nodes["b1"]["info"]["noise"] == "transaction"
    assert "noise" not in nodes["s1"]["info"]
    assert not any(e["detail"] == "BEGIN" for e in report["critical_path"])
    assert not any(e["detail"] == "BEGIN" for e in report["top_self_time"])
    # Each BEGIN's time goes to the statement it opened.
    s1 = next(e for e in report["critical_path"] if e["trace_id"] == "s1")
    assert s1["folded_us"] == 1_000 and s1["contribution_us"] == 5_000
    assert [f["detail"] for f in s1["folded"]] == ["BEGIN"]


def test_renderers_show_end_to_end_beside_response_and_noise_on_request():
    report = cast_trace()
    text = reports.render(report, "text")
    assert "200.000 ms end to end, response 50.000 ms" in text
    assert "BEGIN" not in text
    assert "BEGIN" in cli.render_report(report, "text", show_noise=True)
    dot = cli.render_report(report, "dot")
    assert "200.000 ms end to end" in dot and "response 50.000 ms" in dot
    assert "BEGIN" not in dot
    assert "style=dashed" in dot     # the edge to the cast served later
    loaded = json.loads(cli.render_report(report, "json"))
    assert (loaded["info"]["end_to_end_us"],
            loaded["info"]["response_us"]) == (200_000, 50_000)
    page = cli.render_report(report, "html")
    assert 'data-show-noise="false"' in page
    assert 'data-show-noise="true"' in cli.render_report(report, "html",
                                                         show_noise=True)
