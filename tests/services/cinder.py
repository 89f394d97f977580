"""Cinder's own functional test harness (Cinder 29.0.0 from PyPI), run from
our test suite.

Cinder's functional tests (``cinder/tests/functional``) start a
cinder-volume service, a cinder-scheduler service and the ``osapi_volume``
WSGI API inside the test process (eventlet, fake RPC transport, in-memory
SQLite) and talk HTTP to that API.  They run under ``testtools.run`` (pytest
cannot collect them), in the Cinder environment, never in ours.

Typical use::

    env = cinder.cinder_env()
    result = cinder.run_functional(
        ["cinder_tests.volumes", "cinder.tests.functional.test_login"],
        overlay=overlay_dir)            # envs.stacktrail_overlay(...)
    assert result.ok, result.describe()
    result.passed                       # ['cinder_tests.volumes....', ...]

The pieces:

- ``cinder_env()``: the cached environment (tests/services/envs.py) with
  Cinder and the few test packages its functional tests import, plus the
  one file layout fix they need (below).  Raises ``envs.EnvUnavailable``.
- ``run_functional(tests, overlay=None, env_vars=None, timeout=...)``:
  runs ``tests`` (test modules, classes or ids: ``cinder.tests.functional.
  test_volumes``, ``cinder_tests.volumes.VolumeLifecycleTest``...) in one
  ``testtools.run`` process of the Cinder environment and returns a
  ``FunctionalResult`` with per-test outcomes.  The process is
  ``python -m cinder_tests.runner``: testtools.run with its usual text
  report, plus a JSON line per finished test (see cinder_tests/runner.py),
  so outcomes are never guessed from text and a run killed by its timeout
  still reports the tests that finished.
- Our own test modules live in ``tests/services/cinder_tests`` and are
  importable as ``cinder_tests.<module>`` in that process (the directory is
  linked into a per-run directory on ``PYTHONPATH``: putting
  ``tests/services`` itself there would make this file shadow the real
  ``cinder`` package).  ``overlay`` (a stacktrail install from
  ``envs.stacktrail_overlay``) comes first on ``PYTHONPATH``.
- ``cinder_tests.volumes.VolumeLifecycleTest`` reads extra Cinder options
  from ``CINDER_HARNESS_FLAGS`` (JSON ``{"group": {"option": value}}``);
  ``run_functional(..., flags={...})`` sets it.

The layout fix: the functional base loads ``<site-packages>/etc/cinder/
api-paste.ini`` (a path relative to the source tree, cinder/tests/
functional/functional_helpers.py ``_start_api_service``) and the unit base
``<site-packages>/etc/cinder/resource_filters.json``; a wheel installs both
under ``<venv>/etc/cinder``.  ``cinder_env()`` copies them next to the
package once.  Facts about the harness for the adapter: /tmp/cinder_notes.md
at the time of writing, and the docstrings in cinder_tests/.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import servers
from tests.services import envs

CINDER_VERSION = "29.0.0"
# Cinder itself plus what its functional tests import that Cinder does not
# install: testtools (the runner, every TestCase) and fixtures (cinder/tests/
# unit/test.py).  Not ddt: only api_sample_tests.test_{services,clusters}
# need it, and every api_sample_test fails anyway on the API samples
# (api-ref/source/v3/samples), which are in Cinder's source tree, not in its
# wheel.  Cinder's own dependencies are left to its metadata.
CINDER_REQUIREMENTS = [
    "cinder==%s" % CINDER_VERSION,
    "testtools==2.9.1",
    "fixtures==4.3.2",
]
TESTS_PACKAGE = "cinder_tests"
FLAGS_ENV = "CINDER_HARNESS_FLAGS"
DEFAULT_TIMEOUT = 600.0
# Cinder's base TestCase turns OS_TEST_TIMEOUT into a per-test
# fixtures.Timeout (cinder/tests/unit/test.py, TestCase.setUp): a hung test
# fails on its own instead of eating the whole run's timeout.
DEFAULT_TEST_TIMEOUT = 120
KILL_GRACE = 5.0
ETC_FILES = ("api-paste.ini", "resource_filters.json")

# A selection of Cinder's own functional tests that exercise the API, the
# scheduler and the volume service (create/delete through all three), plus
# the login path; each takes 2-3 s (mostly the services' start).
CINDER_SELECTION = [
    "cinder.tests.functional.test_login.LoginTest.test_login",
    "cinder.tests.functional.test_volumes.VolumesTest."
    "test_create_and_delete_volume",
    "cinder.tests.functional.test_volumes.VolumesTest."
    "test_create_volume_with_metadata",
    "cinder.tests.functional.test_volumes.VolumesTest.test_get_volumes",
]


# --- the environment -----------------------------------------------------

def cinder_env():
    """The cached environment with Cinder (built on first use; raises
    envs.EnvUnavailable when pip fails)."""
    env = envs.ensure("cinder", CINDER_REQUIREMENTS)
    _place_etc_files(env)
    return env


def site_packages(env):
    """``env``'s site-packages directory."""
    found = sorted((env.path / "lib").glob("python3*/site-packages"))
    if not found:
        raise envs.EnvUnavailable("no site-packages in %s" % env.path)
    return found[0]


def _place_etc_files(env):
    """Copy ``<venv>/etc/cinder/{api-paste.ini,resource_filters.json}`` to
    ``<site-packages>/etc/cinder/`` where Cinder's test bases look (once;
    each copy is a rename, so concurrent callers never see half a file)."""
    source = env.path / "etc" / "cinder"
    target = site_packages(env) / "etc" / "cinder"
    for name in ETC_FILES:
        dest = target / name
        if dest.exists():
            continue
        if not (source / name).exists():
            raise envs.EnvUnavailable("%s missing from the Cinder wheel's "
                                      "data files" % (source / name))
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / (".%s.%d" % (name, os.getpid()))
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, dest)


# --- results -------------------------------------------------------------

@dataclasses.dataclass
class TestOutcome:
    """One test's outcome as cinder_tests.runner recorded it."""
    id: str
    status: str            # success failure error skip xfail uxsuccess
    seconds: float | None
    details: dict          # name -> text (traceback, timings, log...)


@dataclasses.dataclass
class FunctionalResult:
    """What one ``run_functional`` process did."""
    requested: list
    command: list
    returncode: int | None     # None when killed on timeout
    timed_out: bool
    elapsed: float
    output: str                # stdout + stderr, testtools' text report
    tests: dict                # id -> TestOutcome, in finishing order

    def _with(self, *statuses):
        return [t.id for t in self.tests.values() if t.status in statuses]

    @property
    def passed(self):
        return self._with("success", "xfail")

    @property
    def failed(self):
        return self._with("failure", "uxsuccess")

    @property
    def errored(self):
        """Errors, including modules or ids that failed to import
        (``unittest.loader._FailedTest.<name>``)."""
        return self._with("error")

    @property
    def skipped(self):
        return self._with("skip")

    @property
    def missing(self):
        """Requested names that no finished test matches (a timeout, a
        crash, a test that never ran)."""
        ids = list(self.tests)
        return [name for name in self.requested
                if not any(i == name or i.startswith(name + ".")
                           for i in ids)]

    @property
    def ok(self):
        """Every requested test ran and passed, and the process said so."""
        return (self.returncode == 0 and not self.timed_out
                and bool(self.tests) and not self.failed
                and not self.errored and not self.missing)

    def seconds(self, test_id):
        return self.tests[test_id].seconds

    def details(self, test_id):
        return self.tests[test_id].details

    def timings(self, test_id):
        """The ``timings`` detail of a cinder_tests test, parsed."""
        return json.loads(self.tests[test_id].details["timings"])

    def describe(self, tail=4000):
        """A summary for assertion messages: counts, each failure's
        traceback, and the end of the output."""
        lines = ["returncode=%s timed_out=%s elapsed=%.1fs"
                 % (self.returncode, self.timed_out, self.elapsed),
                 "passed=%d failed=%s errored=%s skipped=%s missing=%s"
                 % (len(self.passed), self.failed, self.errored,
                    self.skipped, self.missing)]
        for test_id in self.failed + self.errored:
            details = self.tests[test_id].details
            lines.append("--- %s: %s" % (self.tests[test_id].status,
                                         test_id))
            lines.append(details.get("traceback", "(no traceback)"))
        if tail:
            lines.append("--- output (last %d chars)" % tail)
            lines.append(self.output[-tail:])
        return "\n".join(lines)


def _read_results(path):
    tests = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return tests
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue   # a line cut short by a kill
        tests[record["id"]] = TestOutcome(
            record["id"], record["status"], record.get("seconds"),
            record.get("details") or {})
    return tests


# --- running -------------------------------------------------------------

def run_functional(tests, overlay=None, env_vars=None,
                   timeout=DEFAULT_TIMEOUT, *, flags=None, env=None,
                   test_timeout=DEFAULT_TEST_TIMEOUT):
    """Run ``tests`` with Cinder's test runner; a FunctionalResult.

    ``tests``: a name or a list of names that ``testtools.run`` accepts
    (modules, classes, test ids), Cinder's (``cinder.tests.functional...``)
    or ours (``cinder_tests...``).  ``overlay``: a directory put first on
    ``PYTHONPATH`` (a stacktrail install from ``envs.stacktrail_overlay``).
    ``env_vars``: extra environment for the process.  ``flags``: Cinder
    options for ``cinder_tests.volumes`` tests, ``{"group": {"opt": v}}``
    (sets ``CINDER_HARNESS_FLAGS``).  ``timeout``: seconds for the whole
    process, which is then killed (its process group) and the result says
    ``timed_out``; ``test_timeout``: Cinder's per-test ``OS_TEST_TIMEOUT``
    (0 for none).  ``env``: a Cinder env (default ``cinder_env()``).
    """
    if isinstance(tests, str):
        tests = [tests]
    tests = list(tests)
    if not tests:
        raise ValueError("no tests to run")
    env = env or cinder_env()
    with tempfile.TemporaryDirectory(prefix="cinder-functional-") as work:
        work = Path(work)
        envs.link_test_packages(work / "path", TESTS_PACKAGE)
        results = work / "results.jsonl"
        log = work / "output.log"
        path = [str(overlay)] if overlay else []
        path.append(str(work / "path"))
        extra = {
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OS_TEST_TIMEOUT": str(int(test_timeout or 0)),
        }
        if flags is not None:
            extra[FLAGS_ENV] = json.dumps(flags)
        extra.update(env_vars or {})
        environ = env.environ(**extra)
        command = [env.python, "-m", TESTS_PACKAGE + ".runner",
                   "--results=%s" % results] + tests
        start = time.monotonic()
        timed_out = False
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, cwd=str(work), env=environ,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
                servers.end_group(proc, grace=KILL_GRACE)
            except BaseException:
                servers.end_group(proc, grace=KILL_GRACE)
                raise
        elapsed = time.monotonic() - start
        return FunctionalResult(
            requested=tests, command=command, returncode=returncode,
            timed_out=timed_out, elapsed=elapsed,
            output=log.read_text(errors="replace"),
            tests=_read_results(results))


def main(argv=None):
    """``python -m tests.services.cinder TEST...``: run and summarise."""
    argv = sys.argv[1:] if argv is None else argv
    result = run_functional(argv or CINDER_SELECTION)
    for outcome in result.tests.values():
        print("%-9s %6.2fs %s" % (outcome.status, outcome.seconds or 0,
                                 outcome.id))
    print(result.describe(tail=0 if result.ok else 4000))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
