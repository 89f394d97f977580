"""The JSON of a report through the compiled codec (orjson) and through the
pure-Python walk: the same text, at any depth, whatever the codec refuses."""

import json

import pytest

from stacktrail.cmd import cli
from stacktrail.drivers import codec
from stacktrail.report import as_json
from stacktrail.report import html
from stacktrail.report import tree
from tests.codec_paths import path  # noqa: F401
from tests.report import tracegen as tg


def both(render, value):
    """``render(value)`` with the compiled codec on, then off."""
    before = codec.FAST
    try:
        return [render(value) for _ in (codec.use(True), codec.use(False))]
    finally:
        codec.use(before)


def shallow():
    return tree.build(tg.spans(
        ("wsgi", "r", tg.BASE, 0, 100,
         {"request": {"method": "GET", "path": "/v2/q"}},
         {"response": {"status": 200}}),
        ("db", "a", "r", 10, 20, {"db": {"statement": "SELECT 1"}}),
        ("rpc", "b", "r", 30, 90),
        ("http", "c", "b", 40, 80)))


def chain(depth, info=None):
    specs = [("span0", "s0", tg.BASE, 0, 2 * depth, info)]
    specs += [("span%d" % i, "s%d" % i, "s%d" % (i - 1), i * 0.5,
               2 * depth - i * 0.5, info) for i in range(1, depth)]
    return tree.build(tg.spans(*specs))


def indentation(text):
    return max(len(line) - len(line.lstrip(" "))
               for line in text.splitlines())


def test_a_shallow_report_is_json_dumps_text(path):
    report = shallow()
    assert as_json.render(report) == json.dumps(
        report, indent=2, default=str) + "\n"
    assert json.loads(html.embed_json(report)) == json.loads(
        json.dumps(report, default=str))


def test_both_paths_write_the_same_text_at_any_depth():
    report = chain(300, {"db": {"statement": "SELECT id FROM t"}})
    fast, walked = both(as_json.render, report)
    assert fast == walked
    assert indentation(fast) <= 2 * as_json.MAX_INDENT_LEVELS
    assert cli.loads_deep(fast) == cli.loads_deep(json.dumps(
        cli.loads_deep(fast)))
    fast, walked = both(html.embed_json, report)
    assert fast == walked


def test_values_nested_past_the_cap_keep_the_indentation_capped(path):
    nested = {"leaf": 1}
    for _ in range(60):
        nested = {"in": nested}
    report = chain(40, {"deep": nested})
    text = as_json.render(report)
    assert indentation(text) <= 2 * as_json.MAX_INDENT_LEVELS
    loaded = cli.loads_deep(text)
    node = loaded["children"][0]
    assert node["info"]["meta.raw_payload.span0-start"]["info"]["deep"] \
        == nested
    fast, walked = both(as_json.render, report)
    assert fast == walked


def test_what_the_codec_refuses_is_walked(path):
    report = shallow()
    info = report["children"][0]["info"]
    info["surrogate"] = "\ud800"
    info["big"] = 2 ** 70
    info["odd keys"] = {(1, 2): "tuple", 3: "int", None: "none"}
    info["object"] = object()
    text = as_json.render(report)
    loaded = json.loads(text)["children"][0]["info"]
    assert loaded["surrogate"] == "\ud800"
    assert loaded["big"] == 2 ** 70
    assert loaded["odd keys"] == {"(1, 2)": "tuple", "3": "int",
                                  "null": "none"}
    assert loaded["object"].startswith("<object")
    assert json.loads(html.embed_json(report))["children"][0]["info"][
        "big"] == 2 ** 70


def test_a_cycle_is_refused_not_looped(path):
    report = shallow()
    node = report["children"][0]
    node["children"].append(node)
    with pytest.raises(ValueError, match="Circular"):
        as_json.render(report)


def test_embedded_json_is_inert_on_both_paths(path):
    value = {"x": "</script><!-- & \u2028 \u2029 caf\u00e9",
             "children": [{"info": {"name": "<b>"}, "children": []}]}
    text = html.embed_json(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_written_piece_by_piece_the_text_is_the_same(path, monkeypatch):
    # A big report goes to the file as it is made (never held whole):
    # the pieces, joined, are the text ``render`` returns.
    monkeypatch.setattr(as_json, "_OUT_PIECES", 50)
    report = chain(300, {"db": {"statement": "SELECT id FROM t"}})
    pieces = []
    assert as_json.render(report, out=pieces.append) is None
    assert len(pieces) > 10
    assert "".join(pieces) == as_json.render(report)


def test_trace_show_json_streams_to_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(as_json, "_OUT_PIECES", 50)
    messages = tg.spans(*[("span%d" % i, "s%d" % i,
                           "s%d" % (i - 1) if i else tg.BASE, i, 400 - i)
                          for i in range(200)])
    source = tmp_path / "trace.json"
    source.write_text(json.dumps(messages))
    out = tmp_path / "out.json"
    assert cli.main(["trace", "show", str(source), "--json",
                     "--out", str(out)]) == 0
    text = out.read_text()
    assert text == as_json.render(tree.build(messages))
    assert cli.loads_deep(text)["info"]["span_count"] == 200
