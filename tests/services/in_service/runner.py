"""Run unittest/testtools tests and write one JSON line per outcome.

Runs inside a service's environment (Nova's, Cinder's, Zaqar's)::

    python -m in_service.runner --results FILE NAME [NAME ...]

NAME is anything ``python -m testtools.run`` accepts (a module, a class or
one test id).  Progress goes to stdout in the style of testtools.run; the
results file gets one JSON object per test as soon as it finishes, so that
a run killed by a timeout still tells which tests finished:

    {"id": ..., "status": "passed|failed|errored|skipped|xfail|uxsuccess",
     "duration": seconds, "details": text, "attached": {name: text}}

and a last ``{"summary": {...}}`` line.  ``details`` is what testtools.run
prints for a test that did not pass: the traceback with every attached
detail (Nova attaches its captured log as ``pythonlogging:''``); it is
empty for a passing test.  ``attached`` holds, whatever the outcome, the
details a test attached itself (everything but captured logs, streams and
tracebacks), e.g. the ``timings`` that ``nova_tests.boot`` records.

Nothing is imported from the service here: loading the first Nova test
module imports ``nova.tests``, which applies (or refuses) eventlet's
monkey patch before anything else, exactly as under ``python -m
testtools.run``.  ``tests/services/functional.py`` runs it and reads the
results.
"""

import argparse
import json
import sys
import time
import traceback
import unittest

import testtools

# Details Nova and oslotest attach to every test: large, and only
# interesting when the test did not pass.
_CAPTURED = ("pythonlogging", "stdout", "stderr", "traceback")
_MAX_DETAILS = 200000


def _trim(text):
    if len(text) > _MAX_DETAILS:
        half = _MAX_DETAILS // 2
        return "%s\n[... %d characters left out ...]\n%s" % (
            text[:half], len(text) - _MAX_DETAILS, text[-half:])
    return text


def _text(content):
    """A detail as text, whatever its content type (JSON, bytes...)."""
    try:
        return b"".join(content.iter_bytes()).decode("utf-8", "replace")
    except Exception as exc:  # a detail that fails: say so, go on
        return "<%s: %s>" % (type(exc).__name__, exc)


def _attached(details):
    """The details a test attached itself: {name: text}."""
    return {name: _trim(_text(content))
            for name, content in (details or {}).items()
            if not name.startswith(_CAPTURED)}


class _Recorder(testtools.TestResult):
    """Echoes progress and appends one JSON line per finished test."""

    def __init__(self, results, stream):
        super().__init__()
        self._results = results
        self._stream = stream
        self._current = None
        self.counts = {}

    def _emit(self, test_id, status, duration, details, attached=None):
        self.counts[status] = self.counts.get(status, 0) + 1
        record = {"id": test_id, "status": status,
                  "duration": round(duration, 3), "details": _trim(details),
                  "attached": attached or {}}
        self._results.write(json.dumps(record) + "\n")
        self._results.flush()
        self._stream.write("%s ... %s (%.2fs)\n" % (test_id, status, duration))
        self._stream.flush()

    def startTest(self, test):
        super().startTest(test)
        self._current = {"id": test.id(), "start": time.monotonic(),
                         "status": None, "details": "", "attached": {}}
        self._stream.write("%s ...\n" % test.id())
        self._stream.flush()

    def stopTest(self, test):
        super().stopTest(test)
        current, self._current = self._current, None
        if current is None:
            return
        self._emit(current["id"], current["status"] or "errored",
                   time.monotonic() - current["start"],
                   current["details"] or ("" if current["status"] else
                                          "the test reported no outcome"),
                   current["attached"])

    def _outcome(self, test, status, text, details=None):
        if self._current is not None and self._current["id"] == test.id():
            self._current["attached"].update(_attached(details))
            # The first bad outcome wins (a failed test whose cleanup also
            # errors stays 'failed'), but the texts add up.
            if self._current["status"] in (None, "passed"):
                self._current["status"] = status
            if text:
                self._current["details"] += text
        else:
            # setUpClass/setUpModule failures arrive without startTest.
            self._emit(test.id(), status, 0.0, text, _attached(details))

    def addSuccess(self, test, details=None):
        super().addSuccess(test, details=details)
        self._outcome(test, "passed", "", details)

    def addFailure(self, test, err=None, details=None):
        super().addFailure(test, err, details)
        self._outcome(test, "failed", self.failures[-1][1], details)

    def addError(self, test, err=None, details=None):
        super().addError(test, err, details)
        self._outcome(test, "errored", self.errors[-1][1], details)

    def addSkip(self, test, reason=None, details=None):
        super().addSkip(test, reason, details)
        if reason is None and details and "reason" in details:
            reason = _text(details["reason"])
        self._outcome(test, "skipped", reason or "", details)

    def addExpectedFailure(self, test, err=None, details=None):
        super().addExpectedFailure(test, err, details)
        self._outcome(test, "xfail", self.expectedFailures[-1][1], details)

    def addUnexpectedSuccess(self, test, details=None):
        super().addUnexpectedSuccess(test, details)
        self._outcome(test, "uxsuccess", "", details)


def _load(names):
    """A suite for ``names``; names that fail to load become errors."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    load_errors = []
    for name in names:
        try:
            loaded = loader.loadTestsFromName(name)
        except Exception:
            load_errors.append((name, traceback.format_exc()))
            continue
        # unittest turns an import error into a _FailedTest that raises the
        # error when run; report it under the name asked for instead.
        failed = [t for t in _flatten(loaded)
                  if type(t).__name__ == "_FailedTest"]
        if failed:
            load_errors.append((name, "".join(
                str(getattr(t, "_exception", "")) for t in failed)))
            continue
        suite.addTest(loaded)
    return suite, load_errors


def _flatten(suite):
    if isinstance(suite, unittest.TestSuite):
        for item in suite:
            yield from _flatten(item)
    else:
        yield suite


def main(argv=None):
    parser = argparse.ArgumentParser(prog="in_service.runner")
    parser.add_argument("--results", required=True,
                        help="file to append one JSON line per test to")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)

    stream = sys.stdout
    started = time.monotonic()
    with open(args.results, "a", encoding="utf-8") as results:
        recorder = _Recorder(results, stream)
        suite, load_errors = _load(args.names)
        for name, text in load_errors:
            recorder._emit(name, "errored", 0.0, "could not load %s:\n%s"
                           % (name, text))
        recorder.startTestRun()
        try:
            suite.run(recorder)
        finally:
            recorder.stopTestRun()
        wall = time.monotonic() - started
        summary = dict(recorder.counts, wall=round(wall, 3))
        results.write(json.dumps({"summary": summary}) + "\n")
    ran = sum(n for status, n in recorder.counts.items())
    bad = sum(recorder.counts.get(s, 0)
              for s in ("failed", "errored", "uxsuccess"))
    stream.write("\nRan %d tests in %.3fs\n%s\n" % (
        ran, wall, "OK" if not bad and ran else "FAILED (%s)" % ", ".join(
            "%s=%d" % item for item in sorted(recorder.counts.items()))))
    stream.flush()
    return 0 if ran and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
