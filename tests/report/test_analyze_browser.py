"""The ``stacktrail analyze`` page in real headless Chromium: offline, its
plots drawn (latency histogram, shares of the critical path, the change
per kind with the planted one first), names kept as text.  A screenshot
of the page is saved beside the test's other output."""

import base64
import json

from stacktrail.report import aggregate
from stacktrail.report import html
from stacktrail.report import tree
from tests.report import opgen
from tests.report.browser import NEEDED

pytestmark = NEEDED
EVIL = "<script>alert(1)</script>"

START_US = 1_714_557_600_000_000          # 2024-05-01 10:00 UTC
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
PLANT = opgen.Plant(opgen.SCHEDULER, "rpc", 15.0)


def stats_of(start_us, plant, seed):
    stats = aggregate.Stats()
    for base_id, messages in opgen.window(start_us, 120, 10_000_000, seed,
                                          plant=plant, spans=16,
                                          other_every=4):
        report = tree.build(messages)
        stats.add(aggregate.summarize(report, base_id, start_us))
    return stats


def answer():
    baseline = aggregate.Window(START_US, START_US + HOUR_US)
    window = baseline.shifted(-DAY_US)
    trace_filter = aggregate.Filter(root=EVIL)   # shown as text, never run
    before = stats_of(START_US, None, 1)
    after = stats_of(START_US + DAY_US, PLANT, 2)
    return aggregate.result(after, window, trace_filter, {"read": 120},
                            before, baseline, {"read": 120},
                            source="redis://" + EVIL)


def test_analysis_page_draws_its_plots_offline(browser, tmp_path):
    page = tmp_path / "analyze.html"
    page.write_text(html.render_analysis(answer()))
    url = page.as_uri()
    browser.open(url)
    assert browser.js("document.body.dataset.rendered") == "analysis"
    # The histogram has bars, and a mark at each percentile.
    assert browser.js("document.querySelectorAll("
                      "'#histogram rect.bar-window').length") > 3
    marks = browser.js("[...document.querySelectorAll('#histogram "
                       ".pmark-label')].map(e => e.textContent)")
    assert [m.split()[0] for m in marks] == ["p50", "p90", "p99"]
    assert browser.js("document.querySelectorAll("
                      "'#histogram .bar-baseline').length") == 1
    # Shares: four rows of segments (all traces, at p50, p90, p99) that
    # fill the same width each.
    widths = browser.js(
        "(() => { const w = {}; document.querySelectorAll('#shares "
        "rect.segment').forEach(r => { const y = r.getAttribute('y'); "
        "w[y] = (w[y] || 0) + parseFloat(r.getAttribute('width')); }); "
        "return Object.values(w); })()")
    assert len(widths) == 4
    assert max(widths) - min(widths) < 0.02 * max(widths)
    # What changed: the planted kind is the first and longest bar.
    bars = browser.js("[...document.querySelectorAll('#changes rect')]"
                      ".map(r => [r.dataset.group, r.classList.contains('up'),"
                      " parseFloat(r.getAttribute('width'))])")
    assert bars[0][:2] == ["%s \u00b7 %s" % (PLANT.service, PLANT.kind),
                           True], bars[:3]
    assert bars[0][2] == max(b[2] for b in bars)
    assert not browser.js("document.getElementById('changes-section')"
                          ".hidden")
    # No label runs out of its plot.
    cut = browser.js(
        "[...document.querySelectorAll('svg text')].filter(t => { "
        "const b = t.getBBox(), w = t.ownerSVGElement.viewBox.baseVal"
        ".width; return b.x < 0 || b.x + b.width > w; })"
        ".map(t => t.textContent)")
    assert cut == []
    # Hostile text from the store or the filter is text, nothing ran.
    assert browser.js("document.body.textContent.includes(%s)"
                      % json.dumps(EVIL))
    assert browser.js("document.querySelectorAll('script').length") == 2
    assert browser.named("Page.javascriptDialogOpening") == []
    assert browser.named("Runtime.exceptionThrown") == []
    requested = [r["request"]["url"]
                 for r in browser.named("Network.requestWillBeSent")]
    assert all(u == url for u in requested), requested
    shot = browser.call("Page.captureScreenshot", format="png",
                        captureBeyondViewport=True)
    (tmp_path / "analyze.png").write_bytes(base64.b64decode(shot["data"]))


def test_page_without_baseline_hides_the_changes(browser, tmp_path):
    stats = stats_of(START_US, None, 3)
    page = tmp_path / "analyze.html"
    page.write_text(html.render_analysis(aggregate.result(
        stats, aggregate.Window(), aggregate.Filter(), {"read": 120})))
    browser.open(page.as_uri())
    assert browser.js("document.body.dataset.rendered") == "analysis"
    assert browser.js("document.getElementById('changes-section').hidden")
    assert browser.named("Runtime.exceptionThrown") == []
