"""Text, JSON, DOT and (statically) HTML renderings of a report."""

import json
import re
import shutil
import subprocess

import pytest

from stacktrail import report as reports
from stacktrail.report import html
from stacktrail.report import tree
from tests.report import tracegen as tg

EVIL = "<script>alert(1)</script>"


def sample():
    messages = tg.spans(("wsgi", "r", tg.BASE, 0, 100),
                        ("db-query", "a", "r", 10, 20),
                        (EVIL, "b", "r", 25, 30),
                        ('quote"back\\slash\nnewline', "c", "r", 31, 32))
    messages += tg.span("rpc-call", "d", "r", 40, 95,
                        stop_info={"etype": "ValueError", "message": "boom"},
                        service="nova-conductor")
    messages += [tg.point("hung-start", "e", "d", 50)]
    return tree.build(messages)


def test_text_tree():
    out = reports.render(sample(), "text")
    lines = out.splitlines()
    assert lines[0].startswith("Trace %s" % tg.BASE)
    assert "total 100.000 ms" in lines[1]
    wsgi = next(line for line in lines if "* wsgi" in line)
    assert "100.000 ms" in wsgi and "nova-api@host-1" in wsgi
    rpc = next(line for line in lines if "* rpc-call" in line)
    assert "nova-conductor@host-1" in rpc and "! ValueError: boom" in rpc
    assert any("hung" in line and "open" in line for line in lines)
    assert "db-query" in out
    # A newline in a span name cannot forge a line of the tree.
    assert not any(line.startswith("newline") for line in lines)
    bottleneck = out[out.index("Bottleneck"):]
    assert "1. rpc-call" in bottleneck or "1. hung" in bottleneck


def test_text_of_an_empty_report():
    assert "no spans" in reports.render(tree.build([]), "text")


def test_json_is_the_report():
    report = sample()
    loaded = json.loads(reports.render(report, "json"))
    assert loaded["info"]["name"] == "total"
    assert {"children", "stats", "critical_path", "top_self_time"} <= set(
        loaded)
    assert loaded["children"][0]["children"][0]["info"]["name"] == "db-query"


def test_unknown_format():
    with pytest.raises(ValueError):
        reports.render(sample(), "pdf")


def _dot_labels(text):
    return re.findall(r'label="((?:[^"\\]|\\.)*)"', text)


def test_dot_is_well_formed():
    out = reports.render(sample(), "dot")
    assert out.startswith("digraph trace {") and out.rstrip().endswith("}")
    # Every quote inside a label is escaped, so each line has balanced quotes.
    for line in out.splitlines():
        assert len(re.findall(r'(?<!\\)"', line.replace("\\\\", ""))) % 2 == 0
    labels = _dot_labels(out)
    assert any('quote\\"back\\\\slash' in label for label in labels)
    assert out.count("->") == 6


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="graphviz `dot` not installed (apt-get install "
                           "graphviz)")
def test_dot_parses_with_graphviz():
    out = reports.render(sample(), "dot")
    done = subprocess.run(["dot", "-Tjson"], input=out, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    # Graphviz keeps label escapes (\n is its line break) in -Tjson.
    labels = {o.get("label") for o in graph["objects"]}
    assert EVIL + r"\n5.000 ms\nnova-api@host-1" in labels
    assert r'quote"back\\slash\\nnewline\n1.000 ms\nnova-api@host-1' in labels
    assert len(graph["objects"]) == 7


def test_html_is_self_contained_and_escaped():
    page = reports.render(sample(), "html")
    assert page.startswith("<!DOCTYPE html>")
    assert EVIL not in page
    assert "</script" not in page.split('id="stacktrail-data">', 1)[1].split(
        "</script>", 1)[0]
    # No reference to anything outside the page.
    assert not re.search(r"""(src|href)\s*=|https?://|//cdn|@import""",
                         page.replace("http-equiv", ""))
    data = page.split('id="stacktrail-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["info"]["base_id"] == tg.BASE
    assert "/*STACKTRAIL_" not in page


def test_embed_json_escapes_markup():
    text = html.embed_json({"x": "</script><!-- & \u2028"})
    assert not set("<>&") & set(text)
    assert json.loads(text) == {"x": "</script><!-- & \u2028"}


def test_html_slot_text_in_data_is_not_expanded():
    messages = tg.span("/*STACKTRAIL_JS*/", "a", tg.BASE, 0, 1)
    page = reports.render(tree.build(messages), "html")
    assert page.count("(function () {") == 1


# --- the one-line detail of each span ----------------------------------------

def described():
    messages = tg.span("wsgi", "r", tg.BASE, 0, 100,
                       {"request": {"method": "GET", "path": "/v2/queues/q1",
                                    "query": "token=***", "scheme": "http",
                                    "host": "api:8888"}},
                       {"response": {"status": 201}})
    messages += tg.span("db", "a", "r", 10, 20, {"db": {
        "statement": "SELECT queues.name\n  FROM queues", "system": "mysql",
        "params": "{'name': 'do-not-show'}"}})
    messages += tg.span("rpc", "b", "r", 30, 90, {"rpc": {
        "method": "build_instance", "type": "call", "topic": "compute"}},
        service="nova-conductor")
    messages += tg.span("evil", "c", "b", 40, 50,
                        {"function": {"name": EVIL + '"\n\\'}})
    messages += tg.span("cache", "d", "b", 55, 60, {"other": 1})
    return tree.build(messages)


def test_text_shows_the_detail_after_the_name():
    out = reports.render(described(), "text")
    lines = out.splitlines()
    assert any("* wsgi  GET /v2/queues/q1 -> 201" in line for line in lines)
    assert any("db  SELECT queues.name FROM queues" in line
               for line in lines)
    assert any("* rpc  call compute.build_instance" in line
               for line in lines)
    cache = next(line for line in lines if "cache" in line)
    # No detail: nothing but the name.
    assert re.search(r"─ [* ] cache +5\.000 ms", cache)
    assert "do-not-show" not in out and "token" not in out
    # The hostile detail cannot break the line.
    evil = [line for line in lines if EVIL in line]
    assert evil and all(EVIL + '"\\n\\' in line for line in evil)
    # The summaries name what the spans did too.
    path = out[out.index("Critical path"):out.index("Bottleneck")]
    assert "rpc  call compute.build_instance [nova-conductor@host-1]" in path
    bottleneck = out[out.index("Bottleneck"):]
    assert "1. rpc  call compute.build_instance" in bottleneck


def test_detail_is_in_the_json_report():
    loaded = json.loads(reports.render(described(), "json"))
    wsgi = loaded["children"][0]
    assert wsgi["info"]["detail"] == "GET /v2/queues/q1 -> 201"
    assert wsgi["info"]["name"] == "wsgi"
    assert loaded["critical_path"][0]["detail"] == "GET /v2/queues/q1 -> 201"


def test_dot_shows_the_detail_escaped():
    out = reports.render(described(), "dot")
    labels = _dot_labels(out)
    assert "wsgi\\nGET /v2/queues/q1 -> 201\\n100.000 ms\\nnova-api@host-1" \
        in labels
    assert "rpc\\ncall compute.build_instance\\n60.000 ms\\n" \
        "nova-conductor@host-1" in labels
    evil = [label for label in labels if EVIL in label]
    # The quote and backslash are DOT-escaped, the newline shown as \n.
    assert evil == ["evil\\n" + EVIL + '\\"\\\\n\\\\\\n10.000 ms\\n'
                    "nova-api@host-1"]
    for line in out.splitlines():
        assert len(re.findall(r'(?<!\\)"', line.replace("\\\\", ""))) % 2 == 0


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="graphviz `dot` not installed")
def test_dot_with_details_parses_with_graphviz():
    done = subprocess.run(["dot", "-Tjson"],
                          input=reports.render(described(), "dot"),
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    labels = {o.get("label") for o in json.loads(done.stdout)["objects"]}
    assert r"db\nSELECT queues.name FROM queues\n10.000 ms\nnova-api@host-1" \
        in labels


def test_html_carries_the_detail_escaped():
    page = reports.render(described(), "html")
    assert EVIL not in page
    data = json.loads(page.split('id="stacktrail-data">', 1)[1].split(
        "</script>", 1)[0])
    assert data["children"][0]["info"]["detail"] == "GET /v2/queues/q1 -> 201"
    js = html._asset("report.js")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js
    assert 'el("span", "detail", detail(i))' in js
