"""Run Nova's own functional tests (and ours, in Nova's harness).

Nova's functional tests are testtools tests that pytest cannot collect;
they run in a Nova 34 environment of their own (``nova_env()``, cached by
``tests/services/envs.py``) through ``tests/services/functional.py``, with
``tests/services/nova_tests`` importable as ``nova_tests``::

    from tests.services import nova

    result = nova.run_functional(["nova_tests.boot"])
    assert result.ok, result.report()
    result.passed          # ['nova_tests.boot.BootServerTest.test_...', ...]

Nova's test tree is in the wheel; its test requirements are not (they are
listed below, found from what ``nova/test.py``, ``nova/tests/fixtures`` and
``nova/tests/functional`` import).
"""

import os

from tests.services import envs
from tests.services import functional


NOVA_REQUIREMENTS = [
    "nova==34.0.0",
    "openstack-placement==16.0.0",     # the release of the same cycle
    # SQLAlchemy 2.1 deprecates orm.noload(), which Nova 34 uses; Nova's
    # WarningsFixture turns the warning into an error (API 500s).
    "SQLAlchemy==2.0.58",
    # What the harness is made of; pinned to the versions it passes with.
    "eventlet==0.41.3",
    "futurist==3.5.0",
    "oslo.config==10.7.0",
    "oslo.db==18.1.1",
    "oslo.messaging==18.3.1",
    "oslo.service==4.8.0",
    # Nova's functional test requirements (not in the wheel's metadata).
    "fixtures==4.3.2",
    "testtools==2.9.1",
    "testscenarios==0.7.0",
    "oslotest==6.1.1",
    "ddt==1.7.2",
    "wsgi-intercept==1.13.1",
]

#: env_vars for running Nova in native threading mode instead of eventlet
#: (nova/monkey_patch.py reads it when nova.tests is first imported).
THREADING = {"OS_NOVA_DISABLE_EVENTLET_PATCHING": "true"}

#: What Nova's tox.ini sets for its test runs, plus a per-test timeout
#: (oslotest's fixtures.Timeout) below the harness's own.
DEFAULT_ENV = {
    "OS_STDOUT_CAPTURE": "1",
    "OS_STDERR_CAPTURE": "1",
    "OS_TEST_TIMEOUT": "240",
    "PYTHONDONTWRITEBYTECODE": "1",
}

DEFAULT_TIMEOUT = functional.DEFAULT_TIMEOUT


def nova_env():
    """The cached Nova 34 environment (built on first use, ~1 minute).

    Raises ``envs.EnvUnavailable`` when pip fails."""
    env = envs.ensure("nova", NOVA_REQUIREMENTS)
    _link_paste_config(env)
    return env


def _site_packages(env):
    found = sorted(env.path.glob("lib/python3*/site-packages"))
    if not found:
        raise envs.EnvUnavailable("no site-packages in %s" % env.path)
    return found[0]


def _link_paste_config(env):
    """Make ``$pybasedir/etc/nova/api-paste.ini`` exist.

    Nova's ConfFixture points ``[wsgi] api_paste_config`` at
    ``$state_path/etc/nova/api-paste.ini`` and ``$state_path`` defaults to
    ``$pybasedir``, the folder holding the ``nova`` package: right in a
    source checkout, but the wheel installs the file as data, under
    ``<venv>/etc/nova``.  A symlink from site-packages fixes every test,
    Nova's own included, without touching configuration.
    """
    site = _site_packages(env)
    link = site / "etc" / "nova"
    if (link / "api-paste.ini").exists():
        return
    target = env.path / "etc" / "nova"
    if not (target / "api-paste.ini").exists():
        raise envs.EnvUnavailable("%s has no api-paste.ini" % target)
    link.parent.mkdir(exist_ok=True)
    tmp = link.parent / (".nova.%d" % os.getpid())
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)       # atomic: concurrent callers both succeed


def run_functional(modules_or_test_ids, overlay=None, env_vars=None,
                   timeout=DEFAULT_TIMEOUT, extra_paths=None, env=None):
    """Run tests in the Nova environment (``functional.run``, with Nova's
    test environment and ``nova_tests``); a ``FunctionalResult``.
    ``env_vars``: e.g. ``THREADING``."""
    return functional.run(env or nova_env(), "nova_tests",
                          modules_or_test_ids, overlay,
                          dict(DEFAULT_ENV, **(env_vars or {})), timeout,
                          extra_paths)
