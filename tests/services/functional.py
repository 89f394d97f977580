"""Run testtools tests inside a service's own environment: the service's
test suite, or ours in its harness (Nova's functional tests, Zaqar's
storage tests, Cinder's functional tests).

pytest cannot collect them; they run with ``python -m in_service.runner``
(``tests/services/in_service/runner.py``), which loads test names exactly
as ``python -m testtools.run`` does and writes one JSON line per finished
test::

    from tests.services import functional

    result = functional.run(env, "nova_tests", ["nova_tests.boot"])
    assert result.ok, result.report()
    result.passed          # ['nova_tests.boot.BootServerTest.test_...', ...]
    result.outcome(test_id).attached["timings"]

Our package (``tests/services/nova_tests``...) is importable in that
process as a top-level package (through a symlink in a temporary folder:
putting ``tests/services`` itself on the path would let its harness
modules shadow the real ``nova``).  ``overlay``
(``envs.stacktrail_overlay``) comes first on the path, so the stacktrail
under test and its entry points are found as after ``pip install
stacktrail``.
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

DEFAULT_TIMEOUT = 900
BAD = ("failed", "errored", "uxsuccess")


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
    def missing(self):
        """Names asked for that no finished test matches (a timeout, a
        crash, a test that never ran)."""
        ids = [o.id for o in self.outcomes]
        # A test id may carry a scenario: "module.Class.test(scenario)".
        return [name for name in self.names
                if not any(i == name or i.startswith((name + ".", name + "("))
                           for i in ids)]

    @property
    def ok(self):
        """At least one test ran, every name asked for ran, none failed or
        errored, and the run finished by itself."""
        return (self.returncode == 0 and not self.timed_out
                and bool(self.passed) and not self._ids(*BAD)
                and not self.missing)

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
                lines.append("--- %s: %s\n%s" % (outcome.status,
                                                 outcome.id, text))
        if not self.outcomes or self.timed_out:
            lines.append("--- output (end)\n" + self.output[-limit:])
        return "\n".join(lines)


def _pythonpath(package, overlay, extra_paths, workdir):
    link_dir = envs.link_test_packages(Path(workdir) / "path", package)
    if overlay is None:
        overlay = []
    elif isinstance(overlay, (str, os.PathLike)):
        overlay = [overlay]
    parts = [str(p) for p in overlay] + [str(link_dir)]
    parts += [str(p) for p in (extra_paths or [])]
    return os.pathsep.join(parts)


def read_results(path):
    """([Outcome], summary or None) of a results file the runner wrote."""
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


def run(env, package, modules_or_test_ids, overlay=None, env_vars=None,
        timeout=DEFAULT_TIMEOUT, extra_paths=None):
    """Run tests in the service environment ``env``; a
    ``FunctionalResult``.

    ``package``: our folder of tests/services run there (``nova_tests``),
    importable under that name beside ``in_service``.
    ``modules_or_test_ids``: a name or a list of names as for
    ``python -m testtools.run`` (``nova.tests.functional.test_images``,
    ``nova_tests.boot.BootServerTest``, one test id, ...).
    ``overlay``: a directory (or several) put first on PYTHONPATH, usually
    ``envs.stacktrail_overlay(tmp, env)``.
    ``env_vars``: extra environment for the test process (oslo.config
    reads ``OS_<GROUP>__<OPTION>`` too).
    ``extra_paths``: more directories appended to PYTHONPATH.
    ``timeout``: seconds for the whole run; on expiry the process group is
    killed and the tests that had not finished are reported as errored.
    """
    names = ([modules_or_test_ids] if isinstance(modules_or_test_ids, str)
             else list(modules_or_test_ids))
    prefix = "stacktrail-%s-" % package
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        results = Path(workdir) / "results.jsonl"
        log = Path(workdir) / "output.log"
        extra = dict(env_vars or {})
        extra["PYTHONPATH"] = _pythonpath(package, overlay, extra_paths,
                                          workdir)
        extra["TMPDIR"] = workdir       # sqlite files, lock dirs
        command = [env.python, "-m", "in_service.runner",
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
        outcomes, summary = read_results(results)
        output = log.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        outcomes.append(Outcome(
            "<timeout>", "errored", duration,
            "the run was killed after %ss; tests not listed did not "
            "finish" % timeout))
    return FunctionalResult(names, returncode, outcomes, output, duration,
                            timed_out, summary)
