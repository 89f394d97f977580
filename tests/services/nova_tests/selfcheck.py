"""Tests with known outcomes, to check the harness's reporting.

Several of these FAIL ON PURPOSE: tests/services/test_nova_harness.py runs
this module and checks that every outcome comes back under the right id.
Nothing here imports nova, so a run takes well under a second.
"""

import os
import time
import unittest

import testtools
from testtools import content


class Outcomes(testtools.TestCase):

    def test_passes(self):
        self.addDetail("note", content.text_content("attached by the test"))

    def test_fails(self):
        self.assertEqual(1, 2, "failing on purpose")

    def test_errors(self):
        raise RuntimeError("erroring on purpose")

    def test_skips(self):
        self.skipTest("skipping on purpose")

    @unittest.expectedFailure
    def test_expected_failure(self):
        self.fail("an expected failure")

    def test_environment(self):
        # The harness passes env_vars through to the test process.
        self.assertEqual("yes", os.environ.get("STACKTRAIL_SELFCHECK"))


class BrokenClassFixture(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        raise RuntimeError("setUpClass failing on purpose")

    def test_never_runs(self):
        pass


class Slow(testtools.TestCase):

    def test_sleeps(self):
        # Only when asked: the harness's timeout test kills it mid-sleep.
        seconds = float(os.environ.get("STACKTRAIL_SELFCHECK_SLEEP", "0"))
        if not seconds:
            self.skipTest("STACKTRAIL_SELFCHECK_SLEEP is not set")
        time.sleep(seconds)
