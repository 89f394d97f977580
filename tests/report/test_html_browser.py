"""The HTML report in real headless Chromium.

Driven through the DevTools protocol over ``--remote-debugging-pipe`` (fd 3
in, fd 4 out, NUL-separated JSON), so no websocket library is needed.  The
browser runs with a proxy on a dead port: a page that fetched anything
from the network would show it as a request and fail to get it.
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest

from stacktrail import report as reports
from stacktrail.report import tree
from tests.report import tracegen as tg

EVIL = "<script>alert(1)</script>"
BROWSERS = ("chromium", "chromium-browser", "google-chrome",
            "google-chrome-stable")
BROWSER = next(filter(None, map(shutil.which, BROWSERS)), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium found (apt-get install chromium)")


class Browser:
    """A headless Chromium and a minimal DevTools protocol client."""

    def __init__(self, profile_dir):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--user-data-dir=%s" % profile_dir,
                "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
                "--remote-debugging-pipe", "about:blank"]
        # The protocol wants the pipes on fds 3 and 4 exactly; bash (not
        # dash) can redirect from fds above 9.
        self.process = subprocess.Popen(
            ["bash", "-c", 'exec "$0" "$@" 3<&%d 4>&%d'
             % (to_browser_r, from_browser_w)] + args,
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._inbox = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self):
        pending = b""
        while True:
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                self._inbox.put(None)
                return
            pending += chunk
            *messages, pending = pending.split(b"\0")
            for raw in messages:
                self._inbox.put(json.loads(raw))

    def _receive(self, deadline):
        try:
            message = self._inbox.get(timeout=max(0.01, deadline
                                                  - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("no answer from the browser") from None
        if message is None:
            raise RuntimeError("the browser exited")
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method, timeout=30, **params):
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            request["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message.get("result", {})

    def wait_event(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self._receive(deadline)

    def open(self, url):
        target = self.call("Target.createTarget", url="about:blank")
        self.session = self.call("Target.attachToTarget", flatten=True,
                                 targetId=target["targetId"])["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(domain + ".enable")
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"])
        return result["result"].get("value")

    def named(self, method):
        return [e["params"] for e in self.events if e["method"] == method]

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)


@pytest.fixture
def browser(tmp_path):
    instance = Browser(tmp_path / "profile")
    yield instance
    instance.close()


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
