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
    assert result.ok, result.report()
    result.passed                       # ['cinder_tests.volumes....', ...]

The pieces:

- ``cinder_env()``: the cached environment (tests/services/envs.py) with
  Cinder and the few test packages its functional tests import, plus the
  one file layout fix they need (below).  Raises ``envs.EnvUnavailable``.
- ``run_functional(tests, overlay=None, env_vars=None, timeout=...)``:
  runs ``tests`` (test modules, classes or ids: ``cinder.tests.functional.
  test_volumes``, ``cinder_tests.volumes.VolumeLifecycleTest``...) in one
  process of the Cinder environment through ``tests/services/
  functional.py`` (the runner Nova's and Zaqar's tests use too) and
  returns its per-test outcomes.
- Our own test modules live in ``tests/services/cinder_tests`` and are
  importable as ``cinder_tests.<module>`` in that process.
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

import json
import os
import shutil
import sys

from tests.services import envs
from tests.services import functional

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


# --- running -------------------------------------------------------------

def run_functional(tests, overlay=None, env_vars=None,
                   timeout=DEFAULT_TIMEOUT, *, flags=None, env=None,
                   test_timeout=DEFAULT_TEST_TIMEOUT):
    """Run ``tests`` in the Cinder environment (``functional.run``, with
    ``cinder_tests``); a ``functional.FunctionalResult``.

    ``tests``: a name or a list of names that ``testtools.run`` accepts
    (modules, classes, test ids), Cinder's (``cinder.tests.functional...``)
    or ours (``cinder_tests...``).  ``overlay``: a directory put first on
    ``PYTHONPATH`` (a stacktrail install from ``envs.stacktrail_overlay``).
    ``env_vars``: extra environment for the process.  ``flags``: Cinder
    options for ``cinder_tests.volumes`` tests, ``{"group": {"opt": v}}``
    (sets ``CINDER_HARNESS_FLAGS``).  ``timeout``: seconds for the whole
    process; ``test_timeout``: Cinder's per-test ``OS_TEST_TIMEOUT`` (0 for
    none).  ``env``: a Cinder env (default ``cinder_env()``).
    """
    tests = [tests] if isinstance(tests, str) else list(tests)
    if not tests:
        raise ValueError("no tests to run")
    extra = {"PYTHONDONTWRITEBYTECODE": "1",
             "OS_TEST_TIMEOUT": str(int(test_timeout or 0))}
    if flags is not None:
        extra[FLAGS_ENV] = json.dumps(flags)
    extra.update(env_vars or {})
    return functional.run(env or cinder_env(), TESTS_PACKAGE, tests,
                          overlay, extra, timeout)


def main(argv=None):
    """``python -m tests.services.cinder TEST...``: run and summarise."""
    argv = sys.argv[1:] if argv is None else argv
    result = run_functional(argv or CINDER_SELECTION)
    for outcome in result.outcomes:
        print("%-9s %6.2fs %s" % (outcome.status, outcome.duration,
                                  outcome.id))
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
