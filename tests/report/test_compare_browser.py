"""The comparison of two traces in the HTML report, in headless Chromium
(``tests/report/browser.py``), with a screenshot in the test's directory."""

import base64

from stacktrail.report import html
from tests.report.browser import NEEDED
from tests.report.test_compare import EVIL
from tests.report.test_compare import FAST
from tests.report.test_compare import pair

pytestmark = NEEDED
CELLS = ("[...document.querySelectorAll('#compare-%s tbody tr')]"
         ".map(r => [...r.cells].map(c => c.textContent))")


def test_the_slower_kind_comes_first(browser, tmp_path):
    slow, fast = pair()
    page = tmp_path / "compare.html"
    page.write_text(html.render(slow, other=fast))
    browser.open(page.as_uri())
    assert browser.js("document.getElementById('compare').hidden") is False
    services = browser.js(CELLS % "services")
    assert [row[:4] for row in services] == [
        ["cinder-volume", "255.000 ms", "155.000 ms", "+100.000 ms"],
        ["nova-api", "45.000 ms", "45.000 ms", "\u00b10.000 ms"]]
    rows = browser.js(CELLS % "kinds")
    assert browser.js("[...document.querySelectorAll('#compare-kinds th')]"
                      ".map(c => c.textContent)") == [
        "service", "kind", "held up: this", "other", "change",
        "self time: this", "other", "change"]
    assert rows[0] == ["cinder-volume", "driver", "200.000 ms", "100.000 ms",
                       "+100.000 ms", "200.000 ms", "100.000 ms",
                       "+100.000 ms"]
    assert rows[-1][:5] == ["nova-api", "db", "5.000 ms", "25.000 ms",
                            "\u221220.000 ms"]
    assert browser.js("document.querySelector('#compare-kinds tbody tr')"
                      ".className") == "slower"
    summary = browser.js("document.getElementById('compare').textContent")
    assert "Compared with trace " + FAST in summary
    assert ("this trace 300.000 ms, the other 200.000 ms (+100.000 ms, "
            "50.0%)") in summary
    # The hostile span name is a cell's text, nothing ran.
    assert ["cinder-volume", EVIL] in [r[:2] for r in rows]
    assert browser.js("document.querySelectorAll('script').length") == 2
    assert browser.named("Page.javascriptDialogOpening") == []
    assert browser.named("Runtime.exceptionThrown") == []
    # The waterfall of the trace itself is still there.
    assert browser.js("document.body.dataset.rendered") == "6"
    browser.call("Emulation.setDeviceMetricsOverride", width=1280,
                 height=800, deviceScaleFactor=1, mobile=False)
    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "compare.png").write_bytes(base64.b64decode(shot["data"]))


def test_a_single_trace_has_no_comparison(browser, tmp_path):
    slow, _ = pair()
    page = tmp_path / "single.html"
    page.write_text(html.render(slow))
    browser.open(page.as_uri())
    assert browser.js("document.getElementById('compare').hidden") is True
    assert browser.js(CELLS % "kinds") == []
    assert browser.js("document.body.dataset.rendered") == "6"
