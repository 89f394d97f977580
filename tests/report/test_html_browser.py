"""The HTML report in real headless Chromium (``tests/report/browser.py``),
with screenshots saved in each test's directory."""

import base64
import json

import pytest

from stacktrail import report as reports
from stacktrail.report import tree
from tests.report import tracegen as tg
from tests.report.browser import NEEDED

pytestmark = NEEDED
EVIL = "<script>alert(1)</script>"


def write_report(tmp_path):
    messages = tg.spans(("wsgi", "r", tg.BASE, 0, 100,
                         {"request": {"method": "GET", "path": "/v2/q"}},
                         {"response": {"status": 200}}),
                        ("db-query", "a", "r", 10, 20),
                        (EVIL, "b", "r", 25, 30),
                        ("rpc-call", "c", "r", 40, 95),
                        # A statement that is markup: its detail is EVIL.
                        ("db", "d", "c", 50, 90, {"db": {"statement": EVIL}}),
                        ("cache", "f", "c", 55, 60))  # in db's shadow
    messages += tg.span("http", "e", "c", 91, 94,
                        stop_info={"etype": "IOError",
                                   "message": "<img src=x onerror=alert(2)>"})
    page = tmp_path / "trace.html"
    page.write_text(reports.render(tree.build(messages), "html"))
    return page


def test_report_renders_offline_and_keeps_names_as_text(browser, tmp_path):
    page = write_report(tmp_path)
    url = page.as_uri()
    browser.open(url)
    assert browser.js("document.body.dataset.rendered") == "7"
    names = browser.js("[...document.querySelectorAll('.row .name')]"
                       ".map(e => e.textContent)")
    assert names == ["wsgi", "db-query", EVIL, "rpc-call", "db", "cache",
                     "http"]
    # The hostile name is text: no element was made from it, no dialog.
    assert browser.js("document.querySelectorAll('script').length") == 2
    assert browser.js("document.querySelectorAll('img').length") == 0
    assert browser.js("document.body.textContent.includes(%s)"
                      % json.dumps(EVIL))
    assert browser.named("Page.javascriptDialogOpening") == []
    assert browser.named("Runtime.exceptionThrown") == []
    # Nothing but the page itself was requested.
    requested = [r["request"]["url"]
                 for r in browser.named("Network.requestWillBeSent")]
    assert all(u == url for u in requested), requested
    critical = browser.js("[...document.querySelectorAll('.row')].filter("
                          "r => r.querySelector('.bar.critical'))"
                          ".map(r => r.querySelector('.name').textContent)")
    assert critical == ["wsgi", "db-query", EVIL, "rpc-call", "db", "http"]
    assert browser.js("document.title") == "stacktrail: Trace " + tg.BASE
    # What each span did follows its name, as text.
    details = browser.js("[...document.querySelectorAll('.row')].map(r => "
                         "(r.querySelector('.detail') || {}).textContent "
                         "|| '')")
    assert details == ["GET /v2/q -> 200", "", "", "", EVIL, "", ""]
    title = browser.js("document.querySelectorAll('.row')[4]"
                       ".querySelector('.label').title")
    assert title == "db %s (nova-api@host-1)" % EVIL
    assert browser.js("document.querySelectorAll('.detail script, "
                      ".label script').length") == 0
    lists = browser.js("document.getElementById('critical').textContent")
    assert "wsgi GET /v2/q -> 200" in lists and "db " + EVIL in lists


def test_click_collapse_and_zoom(browser, tmp_path):
    browser.open(write_report(tmp_path).as_uri())
    rows = "[...document.querySelectorAll('.row')]"
    # Click the hostile span: its info shows, still as text.
    browser.js("%s[2].click()" % rows)
    details = browser.js("document.getElementById('details').textContent")
    assert EVIL in details and "host-1" in details
    # The db span's detail is markup: shown as text under its name.
    browser.js("%s[4].click()" % rows)
    shown = browser.js("document.querySelector('#details p.detail')"
                       ".textContent")
    assert shown == EVIL
    assert browser.js("document.querySelector('#details p.detail')"
                      ".children.length") == 0
    assert browser.js("document.querySelectorAll('script').length") == 2
    browser.js("%s[6].click()" % rows)
    details = browser.js("document.getElementById('details').textContent")
    assert "<img src=x onerror=alert(2)>" in details
    assert browser.js("document.querySelectorAll('img').length") == 0
    # Collapse rpc-call: its three children hide; expand: they come back.
    visible = ("%s.filter(r => !r.classList.contains('hidden')).length"
               % rows)
    browser.js("%s[3].querySelector('.toggle').click()" % rows)
    assert browser.js(visible) == 4
    browser.js("%s[3].querySelector('.toggle').click()" % rows)
    assert browser.js(visible) == 7
    browser.js("document.getElementById('collapse-all').click()")
    assert browser.js(visible) == 1
    browser.js("document.getElementById('expand-all').click()")
    # Zoom in twice on the whole trace: the root bar grows to 400 %.
    width = "parseFloat(%s[0].querySelector('.bar').style.width)" % rows
    assert browser.js(width) == pytest.approx(100)
    browser.js("document.getElementById('zoom-reset').click()")
    browser.js("%s[0].click()" % rows)  # selected: zoom centres on it
    browser.js("document.getElementById('zoom-in').click();"
               "document.getElementById('zoom-in').click()")
    assert browser.js(width) == pytest.approx(400)
    browser.js("document.getElementById('zoom-reset').click()")
    assert browser.js(width) == pytest.approx(100)
    # Double-click zooms to a span: db-query fills ~90 % of the view.
    browser.js("%s[1].dispatchEvent(new MouseEvent('dblclick', "
               "{bubbles: true}))" % rows)
    assert 80 < browser.js(
        "parseFloat(%s[1].querySelector('.bar').style.width)" % rows) < 100
    assert browser.named("Page.javascriptDialogOpening") == []


def test_harness_does_see_a_dialog(browser, tmp_path):
    # Control for the assertions above: a real alert() is detected.
    page = tmp_path / "alert.html"
    page.write_text("<!DOCTYPE html><script>setTimeout(() => alert(1), 0)"
                    "</script>")
    browser.open(page.as_uri())
    browser.wait_event("Page.javascriptDialogOpening", timeout=10)
    browser.call("Page.handleJavaScriptDialog", accept=True)


def test_work_after_the_response_and_noise_on_request(browser, tmp_path):
    from tests.report.test_analysis import cast_trace
    page = tmp_path / "cast.html"
    page.write_text(reports.render(cast_trace(), "html"))
    browser.open(page.as_uri())
    summary = browser.js("document.getElementById('summary').textContent")
    assert "200.0" in summary.split("end to end")[0]
    assert "response 50.0" in summary
    # The API span shows a tail: the cast's work went on after it returned.
    assert browser.js("document.querySelectorAll('.row .tail').length") >= 1
    shown = ("[...document.querySelectorAll('.row')].filter(r => "
             "!r.hidden && !r.classList.contains('hidden'))"
             ".map(r => r.querySelector('.detail') ? "
             "r.querySelector('.detail').textContent : '')")
    assert "BEGIN" not in browser.js(shown)
    browser.js("document.getElementById('noise-toggle').click()")
    assert browser.js(shown).count("BEGIN") == 2
    # The bottleneck list names the driver call of the other service.
    first = browser.js("document.querySelector('#bottleneck li')"
                       ".textContent")
    assert "driver" in first and "cinder-volume" in first
    # Red only for the time a span held the operation up: the API span
    # 35 of its 50 ms (the rest is its statements and the cast), 17.5 % of
    # the 200 ms end to end.
    held = browser.js("[...document.querySelectorAll('.row')[0]"
                      ".querySelectorAll('.held')].reduce((a, e) => a + "
                      "parseFloat(e.style.width), 0)")
    assert held == pytest.approx(17.5, abs=0.1)
    # Every duration label lies inside its lane, also for bars that reach
    # the right edge.
    cut = browser.js(
        "[...document.querySelectorAll('.row')].filter(r => !r.hidden && "
        "!r.classList.contains('hidden')).filter(r => { "
        "const lane = r.querySelector('.lane').getBoundingClientRect(), "
        "d = r.querySelector('.dur').getBoundingClientRect(); "
        "return d.left < lane.left - 0.5 || d.right > lane.right + 0.5; })"
        ".map(r => r.querySelector('.name').textContent)")
    assert cut == []
    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "cast.png").write_bytes(base64.b64decode(shot["data"]))


def test_search_service_colours_and_errors(browser, tmp_path):
    page = write_report(tmp_path)   # nova-api spans, one rpc-call ...
    browser.open(page.as_uri())
    rows = "[...document.querySelectorAll('.row')]"
    visible = ("%s.filter(r => !r.classList.contains('hidden'))"
               ".map(r => r.querySelector('.name').textContent)" % rows)
    search = ("(q => { const s = document.getElementById('search'); "
              "s.value = q; s.dispatchEvent(new Event('input')); })(%s)")
    # By detail: the statement and its ancestors stay, nothing else.
    browser.js(search % json.dumps(EVIL.upper()))
    assert browser.js(visible) == ["wsgi", EVIL, "rpc-call", "db"]
    assert browser.js("document.getElementById('search-count')"
                      ".textContent") == "2 of 7 spans"
    browser.js(search % json.dumps("http"))
    assert browser.js(visible) == ["wsgi", "rpc-call", "http"]
    browser.js(search % json.dumps(""))
    assert len(browser.js(visible)) == 7
    # By service, in a two-service trace; each service its own colour.
    page = tmp_path / "cast.html"
    from tests.report.test_analysis import cast_trace
    page.write_text(reports.render(cast_trace(), "html"))
    browser.open(page.as_uri())
    browser.js(search % json.dumps("cinder-vol"))
    assert browser.js(visible) == ["wsgi", "rpc", "rpc", "db", "driver"]
    colour = ("getComputedStyle(%s.find(r => r.querySelector('.name')"
              ".textContent === %%s).querySelector('.bar'))"
              ".backgroundColor" % rows)
    assert browser.js(colour % '"driver"') != browser.js(colour % '"wsgi"')
    legend = browser.js("[...document.querySelectorAll('#services "
                        ".service')].map(e => e.textContent)")
    assert legend == ["nova-api", "cinder-volume"]
    # An error is filled (not only outlined) and its message comes first
    # in the detail panel.
    page = write_report(tmp_path)
    browser.open(page.as_uri())
    failed = "%s[6]" % rows
    assert browser.js("getComputedStyle(%s.querySelector('.bar'))"
                      ".backgroundImage" % failed).startswith(
        "repeating-linear-gradient")
    browser.js("%s.click()" % failed)
    assert browser.js("document.querySelector('#details .error-message')"
                      ".textContent") == \
        "Error: IOError: <img src=x onerror=alert(2)>"
    assert browser.js("document.querySelectorAll('img').length") == 0
    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "error.png").write_bytes(base64.b64decode(shot["data"]))
