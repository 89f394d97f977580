"""Critical path and self time on hand-built traces."""

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


def test_child_outliving_its_parent_is_clipped():
    # Clock skew between hosts: the child seems to end after its parent.
    report = tree.build(tg.spans(("wsgi", ROOT, tg.BASE, 0, 50),
                                 ("rpc", A, ROOT, 10, 60)))
    assert self_of(report)[ROOT] == 10_000
    assert path_of(report) == [(ROOT, 50_000), (A, 40_000)]


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
