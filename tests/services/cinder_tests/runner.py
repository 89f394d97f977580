"""``python -m testtools.run`` that also writes one JSON line per test.

Usage (inside the Cinder environment)::

    python -m cinder_tests.runner --results=PATH [testtools.run arguments]

Everything after ``--results=PATH`` goes to ``testtools.run`` unchanged (test
ids, modules, ``discover``, ``--list``...), and its usual text report goes
to stdout.  In addition, each finished test appends a line to PATH::

    {"id": ..., "status": "success|failure|error|skip|xfail|uxsuccess",
     "seconds": 1.23, "details": {name: text, ...}}

``details`` are the test's details as text; Cinder's captured log
(``pythonlogging:...``, large) is kept only for failures and errors, whose
traceback is there too.  A line is written and flushed as soon as its test
ends, so the results of a run killed by a timeout are there up to that
point.
The process exit code is testtools.run's (0 only when every test passed).
"""

import json
import sys
import time

import testtools
from testtools import run as testtools_run

_LOG_DETAILS = ("pythonlogging",)
_QUIET = ("success", "skip", "xfail")   # their captured log is left out


class _Recorder(testtools.TestResult):
    """Appends each test's outcome to a JSON-lines file."""

    def __init__(self, path):
        super().__init__()
        self._path = path
        self._started = {}
        self._outcome = {}
        open(path, "w").close()

    def startTest(self, test):
        super().startTest(test)
        self._started[test.id()] = time.monotonic()

    def _record(self, test, status, details=None, err=None):
        text = {}
        for name, content in (details or {}).items():
            if status in _QUIET and name.startswith(_LOG_DETAILS):
                continue
            try:
                text[name] = b"".join(content.iter_bytes()).decode(
                    "utf-8", "replace")
            except Exception as exc:  # a detail that fails: say so, go on
                text[name] = "<%s: %s>" % (type(exc).__name__, exc)
        if err is not None:
            text.setdefault("traceback",
                            "".join(testtools.content.TracebackContent(
                                err, test).iter_text()))
        self._outcome[test.id()] = (status, text)

    def addSuccess(self, test, details=None):
        super().addSuccess(test, details=details)
        self._record(test, "success", details)

    def addFailure(self, test, err=None, details=None):
        super().addFailure(test, err=err, details=details)
        self._record(test, "failure", details, err)

    def addError(self, test, err=None, details=None):
        super().addError(test, err=err, details=details)
        self._record(test, "error", details, err)

    def addSkip(self, test, reason=None, details=None):
        super().addSkip(test, reason=reason, details=details)
        details = dict(details or {})
        if reason is not None:
            details.setdefault("reason", testtools.content.text_content(
                str(reason)))
        self._record(test, "skip", details)

    def addExpectedFailure(self, test, err=None, details=None):
        super().addExpectedFailure(test, err=err, details=details)
        self._record(test, "xfail", details)

    def addUnexpectedSuccess(self, test, details=None):
        super().addUnexpectedSuccess(test, details=details)
        self._record(test, "uxsuccess", details)

    def stopTest(self, test):
        super().stopTest(test)
        test_id = test.id()
        status, details = self._outcome.pop(test_id, ("error", {
            "traceback": "the test ended without reporting an outcome"}))
        started = self._started.pop(test_id, None)
        seconds = (time.monotonic() - started) if started is not None else None
        line = json.dumps({"id": test_id, "status": status,
                           "seconds": seconds, "details": details})
        with open(self._path, "a") as out:
            out.write(line + "\n")


def _runner_factory(path):
    class Runner(testtools_run.TestToolsTestRunner):
        def run(self, test):
            text = testtools.TextTestResult(
                self.stdout, failfast=self.failfast or False,
                tb_locals=self.tb_locals)
            result = testtools.MultiTestResult(text, _Recorder(path))
            result.startTestRun()
            try:
                test.run(result)
            finally:
                result.stopTestRun()
            return result
    return Runner


def main(argv):
    if len(argv) < 2 or not argv[1].startswith("--results="):
        sys.stderr.write(__doc__)
        return 2
    path = argv[1].split("=", 1)[1]
    args = [argv[0]] + argv[2:]
    testtools_run.TestProgram(argv=args, stdout=sys.stdout,
                              testRunner=_runner_factory(path))
    return 0   # TestProgram exits with the run's status itself


if __name__ == "__main__":
    sys.exit(main(sys.argv))
