"""Every test of another project's suite inside a trace.

Loaded into that suite's own process: as a pytest plugin (``-p
stacktrail_suite.traced``, this folder linked under that name) or by
``tests.thirdparty.testtools_run``.  The
environment names what to switch on:

* ``STACKTRAIL_SUITE_INTEGRATION``: the integration, a module of
  ``stacktrail.integrations`` (``sqlalchemy``, ``http``, ``rpc``...),
  enabled for every engine, session or client the suite makes;
* ``STACKTRAIL_SUITE_SPANS``: a file that gets, at exit, the JSON
  ``{span name: spans recorded}``.

Points go to a notifier that counts them: nothing of a store is involved,
only what the integration does to the calls it traces.
"""

import atexit
import collections
import importlib
import json
import os
import unittest

import pytest

from stacktrail import notifier
from stacktrail import profiler

KEY = "5e0c7a1d9b3f4e2a8c6d0b1f7a3e9c2d"
_counts = collections.Counter()


def _count(message, *args, **kwargs):
    name = message.get("name", "")
    if name.endswith("-start"):
        _counts[name[:-len("-start")]] += 1


def _write_counts():
    with open(os.environ["STACKTRAIL_SUITE_SPANS"], "w") as out:
        json.dump(dict(_counts), out)


def start():
    """Switch the integration on; spans are counted and written at exit."""
    notifier.set(_count)
    name = os.environ["STACKTRAIL_SUITE_INTEGRATION"]
    module = importlib.import_module("stacktrail.integrations." + name)
    module.enable()
    atexit.register(_write_counts)


def in_a_trace(run):
    """``run`` (a test method's run) inside a trace of its own."""
    def traced(self, *args, **kwargs):
        profiler.init(KEY)
        try:
            with profiler.Trace("test"):
                return run(self, *args, **kwargs)
        finally:
            profiler.clean()
    return traced


def trace_unittest():
    """Every unittest and testtools test in a trace (testtools has a
    ``run`` of its own)."""
    classes = [unittest.TestCase]
    try:
        import testtools
        classes.append(testtools.TestCase)
    except ImportError:
        pass
    for cls in classes:
        cls.run = in_a_trace(cls.run)


# --- as a pytest plugin ----------------------------------------------------

def pytest_configure(config):
    start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Set-up, call and teardown of each test in one trace."""
    profiler.init(KEY)
    try:
        with profiler.Trace("test"):
            yield
    finally:
        profiler.clean()
