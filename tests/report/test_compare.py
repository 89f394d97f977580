"""Comparing one trace with another: the breakdown per (service, kind) and
``stacktrail trace show ID --html --compare OTHER``."""

import json
import random
import re

from stacktrail.cmd import cli
from stacktrail.report import aggregate
from stacktrail.report import tree
from tests.report import opgen
from tests.report import tracegen as tg

EVIL = "<script>alert(1)</script>"
SLOW = "0b7c1d2e-0000-4000-8000-000000000000"
FAST = "1c8d2e3f-0000-4000-8000-000000000000"


def messages(base_id, db_ms, driver_ms):
    """The API answers at 50 ms after a cast; cinder-volume serves the
    cast from 70 ms, and its driver call takes ``driver_ms``."""
    out = []
    for spec in (("wsgi", "r", base_id, 0, 50),
                 ("db", "s", "r", 5, 5 + db_ms),
                 ("rpc", "a", "r", 40, 45)):
        out += tg.span(*spec, base_id=base_id)
    for spec in (("rpc", "b", "a", 70, 100 + driver_ms),
                 (EVIL, "e", "b", 75, 80),
                 ("driver", "c", "b", 90, 90 + driver_ms)):
        out += tg.span(*spec, service="cinder-volume", base_id=base_id)
    return out


def pair():
    """(slow, fast) reports: in the slow trace the cinder-volume driver
    took 100 ms longer, and its nova-api database call 20 ms less."""
    return (tree.build(messages(SLOW, db_ms=5, driver_ms=200)),
            tree.build(messages(FAST, db_ms=25, driver_ms=100)))


def page_data(html_text):
    found = re.search(r'id="stacktrail-data">(.*?)</script>', html_text,
                      re.S)
    return json.loads(found.group(1))


def test_what_got_slower_comes_first():
    answer = aggregate.compare(*pair())
    first, last = answer["kinds"][0], answer["kinds"][-1]
    assert (first["service"], first["kind"]) == ("cinder-volume", "driver")
    assert (first["held_us"], first["other_held_us"]) == (200_000, 100_000)
    assert first["self_change_us"] == 100_000
    assert (last["service"], last["kind"], last["held_change_us"]) == (
        "nova-api", "db", -20_000)
    assert answer["trace"]["end_to_end_us"] == 300_000
    assert answer["other"]["base_id"] == FAST
    # Every microsecond of the difference is some kind's: the faster
    # database call only left the API's own code holding the request up.
    assert answer["end_to_end_change_us"] == 100_000
    assert sum(k["held_change_us"] for k in answer["kinds"]) == 100_000
    assert answer["kinds"][1]["kind"] == "wsgi"
    assert [(s["service"], s["held_change_us"], s["self_change_us"])
            for s in answer["services"]] == [
        ("cinder-volume", 100_000, 100_000), ("nova-api", 0, 0)]


def test_a_kind_in_one_trace_only_compares_with_zero():
    slow, _ = pair()
    lone = tree.build(tg.spans(("wsgi", "r", FAST, 0, 10)))
    kinds = {(k["service"], k["kind"]): k
             for k in aggregate.compare(slow, lone)["kinds"]}
    driver = kinds[("cinder-volume", "driver")]
    assert (driver["other_held_us"], driver["held_change_us"]) == (
        0, 200_000)


def test_cli_embeds_the_comparison_in_the_page(tmp_path, capsys):
    store = tmp_path / "traces.jsonl"
    store.write_text("".join(json.dumps(m) + "\n" for m in
                             messages(SLOW, 5, 200) + messages(FAST, 25, 100)))
    assert cli.main(["trace", "show", SLOW, "--html", "--compare", FAST,
                     "--connection-string", "file://%s" % store]) == 0
    page = capsys.readouterr().out
    data = page_data(page)
    assert data["info"]["base_id"] == SLOW
    comparison = data["comparison"]
    assert comparison["other"]["base_id"] == FAST
    assert comparison["kinds"][0]["kind"] == "driver"
    # Only the numbers of the other trace travel, not its spans; the
    # hostile name cannot end the data block.
    assert EVIL not in page and FAST not in json.dumps(data["children"])
    # The other trace may be a file, too.
    other = tmp_path / "fast.jsonl"
    other.write_text("".join(json.dumps(m) + "\n"
                             for m in messages(FAST, 25, 100)))
    out = tmp_path / "page.html"
    assert cli.main(["trace", "show", SLOW, "--html", "--compare",
                     str(other), "--out", str(out),
                     "--connection-string", "file://%s" % store]) == 0
    assert page_data(out.read_text())["comparison"] == comparison


def test_cli_compare_needs_html_and_an_existing_trace(tmp_path, capsys):
    store = tmp_path / "traces.jsonl"
    store.write_text("".join(json.dumps(m) + "\n"
                             for m in messages(SLOW, 5, 200)))
    where = "file://%s" % store
    assert cli.main(["trace", "show", SLOW, "--json", "--compare", FAST,
                     "--connection-string", where]) == 1
    assert capsys.readouterr().err.strip() == (
        "stacktrail: error: --compare works with --html only")
    assert cli.main(["trace", "show", SLOW, "--html", "--compare", FAST,
                     "--connection-string", where]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trace %s not found" % FAST in captured.err
    assert cli.main(["trace", "show", SLOW, "--html", "--compare",
                     str(tmp_path / "missing.jsonl"),
                     "--connection-string", where]) == 1
    assert "no such file" in capsys.readouterr().err


def test_a_planted_slowdown_in_a_cinder_trace_comes_first():
    # The same random draws, and the scheduler's statements 2 ms slower
    # each: BEGINs folded into their statements, casts queued, 50 spans.
    def build(plant):
        rng = random.Random(7)
        return tree.build(opgen.volume_create(0, rng, plant)[1])
    plant = opgen.Plant(opgen.SCHEDULER, "db", 2)
    answer = aggregate.compare(build(plant), build(None))
    first = answer["kinds"][0]
    assert (first["service"], first["kind"]) == (opgen.SCHEDULER, "db")
    assert first["self_change_us"] == 8 * 2000     # 8 statements
    assert answer["services"][0]["service"] == opgen.SCHEDULER
    assert answer["end_to_end_change_us"] == first["held_change_us"]
