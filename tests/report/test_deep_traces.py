"""Traces nested 10,000 spans deep: every report format, and reading a saved
report back, without RecursionError and in linear time."""

import json
import subprocess
import sys
import time

import pytest

from stacktrail import report as reports
from stacktrail.cmd import cli
from tests.report import tracegen as tg
from tests.report.browser import NEEDED

DEPTH = 10_000


@pytest.fixture(scope="module")
def deep_messages():
    specs = [("span0", "s0", tg.BASE, 0, 2 * DEPTH)]
    for level in range(1, DEPTH):
        specs.append(("span%d" % level, "s%d" % level, "s%d" % (level - 1),
                      level * 0.5, 2 * DEPTH - level * 0.5))
    return tg.spans(*specs)


@pytest.fixture(scope="module")
def deep_report(deep_messages):
    return reports.build(deep_messages)


def _depth(report):
    depth, node = 0, report
    while node["children"]:
        node = node["children"][0]
        depth += 1
    return depth


def test_the_report_is_built(deep_report):
    assert _depth(deep_report) == DEPTH
    assert deep_report["info"]["span_count"] == DEPTH
    assert len(deep_report["critical_path"]) == DEPTH


@pytest.mark.parametrize("fmt", reports.FORMATS)
def test_every_format_renders_ten_thousand_levels(deep_report, fmt):
    started = time.monotonic()
    out = reports.render(deep_report, fmt)
    assert time.monotonic() - started < 20
    assert "span%d" % (DEPTH - 1) in out


def test_the_json_is_the_whole_report(deep_report):
    text = reports.render(deep_report, "json")
    loaded = cli.loads_deep(text)
    assert _depth(loaded) == DEPTH
    assert loaded["info"] == json.loads(json.dumps(deep_report["info"]))
    # indentation stops growing: the output stays linear in size
    longest = max(len(line) - len(line.lstrip(" "))
                  for line in text.splitlines())
    assert longest <= 100


def test_the_html_embeds_the_whole_report(deep_report):
    page = reports.render(deep_report, "html")
    start = page.index('<script type="application/json"')
    start = page.index(">", start) + 1
    data = cli.loads_deep(page[start:page.index("</script>", start)])
    assert _depth(data) == DEPTH


def test_the_cli_shows_a_deep_trace_and_reads_its_saved_report(
        deep_messages, tmp_path):
    source = tmp_path / "deep.jsonl"
    source.write_text("".join(json.dumps(m) + "\n" for m in deep_messages))
    saved = tmp_path / "saved.json"
    for args in (["--json", "--out", saved], ["--html"], ["--dot"], []):
        done = subprocess.run(
            [sys.executable, "-m", "stacktrail.cmd.cli", "trace", "show",
             source] + args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-500:]
    again = subprocess.run(
        [sys.executable, "-m", "stacktrail.cmd.cli", "trace", "show", saved],
        capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-500:]
    assert "span%d" % (DEPTH - 1) in again.stdout


@NEEDED
def test_the_html_page_draws_every_level_in_a_browser(deep_report, tmp_path,
                                                      browser):
    page = tmp_path / "deep.html"
    page.write_text(reports.render(deep_report, "html"))
    browser.open(page.as_uri())
    assert browser.js("document.body.dataset.rendered") == str(DEPTH)
    assert browser.named("Runtime.exceptionThrown") == []
