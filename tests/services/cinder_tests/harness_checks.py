"""Tests with known outcomes, for checking the harness itself.

Plain testtools tests (no Cinder services), run inside the Cinder
environment by tests/services/test_cinder_harness.py to prove that every
outcome is reported under the right name.  ``OutcomesTest.test_hangs`` runs
only with ``CINDER_HARNESS_HANG=1`` (it sleeps until killed).
"""

import os
import sys
import time

import testtools


class OutcomesTest(testtools.TestCase):

    def test_passes(self):
        self.assertEqual(2, 1 + 1)

    def test_fails(self):
        self.assertEqual("expected", "actual")

    def test_errors(self):
        raise RuntimeError("boom from harness_checks")

    def test_skips(self):
        self.skipTest("skipped on purpose")

    def test_prints(self):
        # Stray output must not confuse the runner's results.
        print('{"id": "not.a.test", "status": "success"}')
        sys.stdout.flush()

    def test_hangs(self):
        if os.environ.get("CINDER_HARNESS_HANG") != "1":
            self.skipTest("set CINDER_HARNESS_HANG=1")
        time.sleep(3600)


COMPATIBLE_MODULES = ("stacktrail.profiler", "stacktrail.web",
                      "stacktrail.notifier", "stacktrail.opts",
                      "stacktrail.initializer")


class EnvironmentTest(testtools.TestCase):
    """What the Cinder process sees: monkey patching, the overlay."""

    def test_report(self):
        import eventlet.patcher
        from cinder.tests import functional  # noqa: F401 (patches)
        report = {
            "patched": eventlet.patcher.is_monkey_patched("thread"),
            "path": sys.path[:4],
        }
        try:
            import stacktrail
            report["stacktrail"] = os.path.dirname(stacktrail.__file__)
        except ImportError as exc:
            report["stacktrail"] = None
            report["stacktrail_error"] = str(exc)
        else:
            # The osprofiler-compatible face, after eventlet's patching,
            # with Cinder's own oslo.config/stevedore/SQLAlchemy/messaging.
            import importlib
            report["import_errors"] = {}
            for name in COMPATIBLE_MODULES:
                try:
                    importlib.import_module(name)
                except Exception as exc:
                    report["import_errors"][name] = repr(exc)
        from testtools import content
        self.addDetail("report", content.json_content(report))
