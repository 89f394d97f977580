"""Run Nova's own functional tests (and ours, in Nova's harness).

Nova's functional tests are testtools tests that pytest cannot collect;
they run in a Nova 34 environment of their own (``nova_env()``, cached by
``tests/services/envs.py``) with ``python -m nova_tests.runner``, a small
runner that loads test names exactly as ``python -m testtools.run`` does and
writes one JSON line per finished test (see nova_tests/runner.py)::

    from tests.services import nova

    result = nova.run_functional(["nova_tests.boot"])
    assert result.ok, result.report()
    result.passed          # ['nova_tests.boot.BootServerTest.test_...', ...]
    result.outcome(test_id).attached["timings"]

``tests/services/nova_tests`` is importable in that process as the
top-level package ``nova_tests`` (through a symlink in a temporary folder:
putting ``tests/services`` itself on the path would let this very module
shadow the real ``nova``).  ``overlay`` (``envs.stacktrail_overlay``) comes
first on the path, so the stacktrail under test and its entry points are
found as after ``pip install stacktrail``.

Nova's test tree is in the wheel; its test requirements are not (they are
listed below, found from what ``nova/test.py``, ``nova/tests/fixtures`` and
``nova/tests/functional`` import).
"""

import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests import servers
from tests.services import envs


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

DEFAULT_TIMEOUT = 900

BAD = ("failed", "errored", "uxsuccess")


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


@dataclasses.dataclass
class Outcome:
    id: str
    status: str            # passed failed errored skipped xfail uxsuccess
    duration: float
    details: str = ""      # traceback and attached details, when not passed
    attached: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FunctionalResult:
    names: list
    returncode: int
    outcomes: list
    output: str
    duration: float
    timed_out: bool = False
    summary: dict = None

    def _ids(self, *statuses):
        return [o.id for o in self.outcomes if o.status in statuses]

    @property
    def passed(self):
        return self._ids("passed")

    @property
    def failed(self):
        return self._ids("failed", "uxsuccess")

    @property
    def errored(self):
        return self._ids("errored")

    @property
    def skipped(self):
        return self._ids("skipped")

    @property
    def ok(self):
        """At least one test ran, none failed or errored, and the run
        finished by itself."""
        return (self.returncode == 0 and not self.timed_out
                and bool(self.passed) and not self._ids(*BAD))

    def outcome(self, test_id):
        for outcome in self.outcomes:
            if outcome.id == test_id:
                return outcome
        raise KeyError(test_id)

    def timings(self):
        """{test id: seconds} for every test that ran."""
        return {o.id: o.duration for o in self.outcomes}

    def report(self, limit=6000):
        """A short text for assertion messages: the counts, then the
        details of every test that did not pass (each cut to ``limit``),
        or the end of the output when no test reported at all."""
        lines = ["%s: rc=%s%s in %.1fs; passed %d, failed %d, errored %d, "
                 "skipped %d" % (" ".join(self.names), self.returncode,
                                 " (timed out)" if self.timed_out else "",
                                 self.duration, len(self.passed),
                                 len(self.failed), len(self.errored),
                                 len(self.skipped))]
        for outcome in self.outcomes:
            if outcome.status in BAD:
                text = outcome.details
                if len(text) > limit:
                    text = "[...]\n" + text[-limit:]
                lines.append("--- %s: %s\n%s" % (outcome.status, outcome.id,
                                                  text))
        if not self.outcomes or self.timed_out:
            lines.append("--- output (end)\n" + self.output[-limit:])
        return "\n".join(lines)


def _pythonpath(overlay, extra_paths, workdir):
    link_dir = envs.link_test_packages(Path(workdir) / "path", "nova_tests")
    if overlay is None:
        overlay = []
    elif isinstance(overlay, (str, os.PathLike)):
        overlay = [overlay]
    parts = [str(p) for p in overlay] + [str(link_dir)]
    parts += [str(p) for p in (extra_paths or [])]
    return os.pathsep.join(parts)


def _read_results(path):
    outcomes, summary = [], None
    if not path.exists():
        return outcomes, summary
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue            # a line cut short by a kill
        if "summary" in record:
            summary = record["summary"]
            continue
        outcomes.append(Outcome(record["id"], record["status"],
                                record["duration"], record.get("details", ""),
                                record.get("attached") or {}))
    return outcomes, summary


def run_functional(modules_or_test_ids, overlay=None, env_vars=None,
                   timeout=DEFAULT_TIMEOUT, extra_paths=None, env=None):
    """Run tests in the Nova environment; returns a ``FunctionalResult``.

    ``modules_or_test_ids``: a name or a list of names as for
    ``python -m testtools.run`` (``nova.tests.functional.test_images``,
    ``nova_tests.boot.BootServerTest``, one test id, ...).
    ``overlay``: a directory (or several) put first on PYTHONPATH, usually
    ``envs.stacktrail_overlay(tmp, nova_env())``.
    ``env_vars``: extra environment for the test process (e.g.
    ``THREADING``; oslo.config reads ``OS_<GROUP>__<OPTION>`` too).
    ``extra_paths``: more directories appended to PYTHONPATH.
    ``timeout``: seconds for the whole run; on expiry the process group is
    killed and the tests that had not finished are reported as errored.
    """
    names = ([modules_or_test_ids] if isinstance(modules_or_test_ids, str)
             else list(modules_or_test_ids))
    env = env or nova_env()
    with tempfile.TemporaryDirectory(prefix="stacktrail-nova-") as workdir:
        results = Path(workdir) / "results.jsonl"
        log = Path(workdir) / "output.log"
        extra = dict(DEFAULT_ENV)
        extra.update(env_vars or {})
        extra["PYTHONPATH"] = _pythonpath(overlay, extra_paths, workdir)
        extra["TMPDIR"] = workdir       # Nova's sqlite files, lock dirs
        command = [env.python, "-m", "nova_tests.runner",
                   "--results", str(results)] + names
        started = time.monotonic()
        timed_out = False
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, cwd=workdir, env=env.environ(**extra),
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                servers.end_group(proc, signal.SIGKILL)
                returncode = proc.wait()
            except BaseException:
                servers.end_group(proc, signal.SIGKILL)
                raise
        duration = time.monotonic() - started
        outcomes, summary = _read_results(results)
        output = log.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        outcomes.append(Outcome(
            "<timeout>", "errored", duration,
            "the run was killed after %ss; tests not listed did not "
            "finish" % timeout))
    return FunctionalResult(names, returncode, outcomes, output, duration,
                            timed_out, summary)
