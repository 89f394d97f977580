"""Headless Chromium for the report tests, driven through the DevTools
protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
NUL-separated JSON), so no websocket library is needed.  The browser runs
with a proxy on a dead port: a page that fetched anything from the network
would show it as a request and fail to get it.
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome",
            "google-chrome-stable")
BROWSER = next(filter(None, map(shutil.which, BROWSERS)), None)

# The mark of the test modules that need it: they skip without a browser.
NEEDED = pytest.mark.skipif(
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
