"""Other projects' test suites give the same results traced.

Each library that an integration instruments runs (a part of) its own test
suite twice, in processes of its own: as published, then with the
integration on and every test inside a trace (``tests.thirdparty.traced``).
Every test that passes untraced must pass traced, and the traced run must
have recorded the integration's spans.  The suites are the installed
version's: oslo.messaging's and oslo.db's ship in their wheels; requests'
and SQLAlchemy's come from their source distributions (downloaded once
into the cache, with the test requirements their suites import).
"""

import dataclasses
import fcntl
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.services import envs
from tests.services import functional

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600


@dataclasses.dataclass
class Suite:
    distribution: str
    integration: str       # a module of stacktrail.integrations
    span: str              # the span it records
    tests: tuple           # pytest paths in the sdist, or testtools names
    requirements: tuple = ()
    sdist: bool = True     # else the tests are in the installed package
    pytest_args: tuple = ()

    @property
    def version(self):
        return importlib.metadata.version(self.distribution)


SUITES = {
    "sqlalchemy": Suite(
        "SQLAlchemy", "sqlalchemy", "db",
        ("test/engine/test_execute.py", "test/engine/test_transaction.py",
         "test/orm/test_session.py", "test/sql/test_resultset.py")),
    "requests": Suite(
        "requests", "http", "http", ("tests",),
        ("pytest-httpbin==2.1.0", "httpbin~=0.10.0", "trustme", "pysocks"),
        # timeouts against unroutable addresses: half a minute of waiting,
        # and they need a network this machine does not have
        pytest_args=("-k", "not TestTimeout")),
    "oslo.messaging": Suite(
        "oslo.messaging", "rpc", "rpc",
        ("oslo_messaging.tests.rpc.test_client",
         "oslo_messaging.tests.rpc.test_server",
         "oslo_messaging.tests.rpc.test_dispatcher",
         "oslo_messaging.tests.notify.test_dispatcher",
         "oslo_messaging.tests.notify.test_listener",
         "oslo_messaging.tests.notify.test_notifier"),
        ("testscenarios", "oslotest", "testtools", "fixtures"), sdist=False),
    "oslo.db": Suite(
        "oslo.db", "sqlalchemy", "db",
        ("oslo_db.tests.sqlalchemy.test_exc_filters",
         "oslo_db.tests.sqlalchemy.test_enginefacade",
         "oslo_db.tests.sqlalchemy.test_sqlalchemy",
         "oslo_db.tests.sqlalchemy.test_utils",
         "oslo_db.tests.sqlalchemy.test_update_match"),
        ("testresources", "testscenarios", "oslotest", "testtools",
         "fixtures"), sdist=False),
}


def _pip(*args):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check",
                    "-q"] + list(args), check=True, capture_output=True,
                   timeout=900)


def prepared(suite):
    """(source folder or None, test requirements folder), cached by
    version and built once."""
    home = envs.cache_dir() / "suites" / ("%s-%s" % (suite.distribution,
                                                     suite.version))
    home.mkdir(parents=True, exist_ok=True)
    done = home / ".complete"
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build(suite, home)
            done.write_text("ok\n")
    source = next((home / "src").iterdir()) if suite.sdist else None
    return source, home / "deps"


def _build(suite, home):
    if suite.sdist:
        wanted = "%s==%s" % (suite.distribution, suite.version)
        _pip("download", "--no-deps", "--no-binary", ":all:", "-d",
             str(home / "sdist"), wanted)
        archive, = (home / "sdist").iterdir()
        with tarfile.open(archive) as tar:
            tar.extractall(home / "src", filter="data")
    (home / "deps").mkdir(exist_ok=True)
    if suite.requirements:
        _pip("install", "--target", str(home / "deps"),
             *suite.requirements)


def _plugin_path(workdir):
    """A folder where this package is the top-level ``stacktrail_suite``:
    a suite run from its source folder has a ``tests`` package of its
    own, which hides ours."""
    path = workdir / "path"
    if not path.exists():
        path.mkdir()
        (path / "stacktrail_suite").symlink_to(Path(__file__).parent,
                                               target_is_directory=True)
    return path


def _environ(workdir, deps, traced, spans):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_plugin_path(workdir)), str(ROOT), str(deps)])
    if traced:
        env.update(STACKTRAIL_SUITE_INTEGRATION=traced,
                   STACKTRAIL_SUITE_SPANS=str(spans))
    return env


def run_pytest(suite, source, deps, workdir, traced):
    """{test id: passed|failed|errored|skipped} of one pytest run."""
    report = workdir / ("%s.xml" % ("traced" if traced else "plain"))
    plugin = ["-p", "stacktrail_suite.traced"] if traced else []
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--junitxml", str(report)] + plugin + list(suite.pytest_args)
        + list(suite.tests),
        cwd=source, env=_environ(workdir, deps, traced and suite.integration,
                                 workdir / "spans.json"),
        capture_output=True, text=True, timeout=TIMEOUT)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test = "%s::%s" % (case.get("classname"), case.get("name"))
        status = "passed"
        for child, name in (("failure", "failed"), ("error", "errored"),
                            ("skipped", "skipped")):
            if case.find(child) is not None:
                status = name
        outcomes[test] = status
    return outcomes


def run_testtools(suite, deps, workdir, traced):
    results = workdir / ("%s.jsonl" % ("traced" if traced else "plain"))
    done = subprocess.run(
        [sys.executable, "-m", "tests.thirdparty.testtools_run",
         "--results", str(results)] + list(suite.tests),
        cwd=workdir, env=_environ(workdir, deps,
                                  traced and suite.integration,
                                  workdir / "spans.json"),
        capture_output=True, text=True, timeout=TIMEOUT)
    outcomes, _ = functional.read_results(results)
    assert outcomes, done.stdout[-3000:] + done.stderr[-3000:]
    return {o.id: o.status for o in outcomes}


@pytest.mark.timeout(3 * TIMEOUT)
@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_passes_traced(name, tmp_path):
    suite = SUITES[name]
    source, deps = prepared(suite)
    if suite.sdist:
        def run(traced):
            return run_pytest(suite, source, deps, tmp_path, traced)
    else:
        def run(traced):
            return run_testtools(suite, deps, tmp_path, traced)
    plain = run(False)
    passed = {test for test, status in plain.items() if status == "passed"}
    assert len(passed) >= 100, plain
    traced = run(True)
    broken = sorted(test for test in passed if traced.get(test) != "passed")
    assert not broken, broken
    spans = json.loads((tmp_path / "spans.json").read_text())
    assert spans.get(suite.span, 0) >= 100, spans
