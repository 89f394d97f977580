"""Virtual environments for the real OpenStack services the tests run.

Each service (Zaqar, Cinder, Nova) lives in a virtual environment of its own,
installed from PyPI, never next to the test suite's own packages: their pins
differ from ours and from each other's.  Building one takes a minute, so it
is cached outside the clone, under ``~/.cache/stacktrail/envs/<name>-<key>``
(``STACKTRAIL_ENV_CACHE`` moves it), where the key hashes the requirements
and the Python version.  An environment is built once, under a file lock,
and marked complete only when pip succeeded, so a killed build is redone.

stacktrail itself is not installed into the cached environment (the code
under test changes with every commit).  ``stacktrail_overlay`` installs the
clone, without dependencies, into a directory the service process gets on
its ``PYTHONPATH``: the package and its entry points (adapters, the
oslo.config driver, paste filters) are found there exactly as after a
``pip install stacktrail``.
"""

import atexit
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1200


class EnvUnavailable(Exception):
    """The environment could not be built (pip failed; see its log)."""


def cache_dir():
    base = os.environ.get("STACKTRAIL_ENV_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "stacktrail", "envs")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def quiet_dir():
    """An empty directory of this test process's own, to run a program in:
    ``python -c`` puts its working directory first on sys.path, and any
    stray module in a shared one (a ``/tmp/attr.py``) would shadow the
    service's (``attrs`` imports ``attr``).  Removed at exit."""
    path = tempfile.mkdtemp(prefix="stacktrail-cwd-")
    atexit.register(shutil.rmtree, path, True)
    return path


def _python():
    """The interpreter the environments are made from (the base one)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _key(requirements):
    text = "\n".join([sys.version] + list(requirements))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Env:
    """A built environment: ``python``, ``bin(name)``, ``run(args)``."""

    def __init__(self, path):
        self.path = Path(path)
        self.python = str(self.path / "bin" / "python")

    def bin(self, name):
        return str(self.path / "bin" / name)

    def environ(self, overlay=None, **extra):
        """os.environ for a process of this env, with ``overlay`` first on
        its path and nothing of the test suite's own venv leaking in."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = str(self.path / "bin") + os.pathsep + env.get("PATH", "")
        if overlay:
            env["PYTHONPATH"] = str(overlay)
        env.update(extra)
        return env


def ensure(name, requirements):
    """The cached environment ``name`` with ``requirements`` installed."""
    path = cache_dir() / ("%s-%s" % (name, _key(requirements)))
    done = path / ".complete"
    if done.exists():
        return Env(path)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build(path, requirements)
            done.write_text("\n".join(requirements) + "\n")
    return Env(path)


def _build(path, requirements):
    shutil.rmtree(path, ignore_errors=True)
    log = Path(str(path) + ".log")
    # To the terminal even under pytest's capture: a first run waits here.
    print("envs: building the %s environment from PyPI, once (log: %s)"
          % (path.name, log), file=sys.__stderr__, flush=True)
    with open(log, "w") as out:
        steps = [[_python(), "-m", "venv", str(path)],
                 [str(path / "bin" / "python"), "-m", "pip", "install",
                  "--disable-pip-version-check", "-q"] + list(requirements)]
        for step in steps:
            code = subprocess.call(step, stdout=out, stderr=subprocess.STDOUT,
                                   timeout=BUILD_TIMEOUT)
            if code:
                raise EnvUnavailable("%s failed (exit %d); see %s"
                                     % (" ".join(step[:4]), code, log))


def stacktrail_overlay(target, env, packages=()):
    """Install this clone (no dependencies) into ``target`` with ``env``'s
    pip, and ``packages`` (requirements, e.g. an extra's: ``orjson``) with
    theirs; returns ``target`` for the service's PYTHONPATH."""
    target = Path(target)
    if (target / "stacktrail").is_dir():
        return target
    for what in filter(None, ([str(ROOT), "--no-deps"], list(packages))):
        code = subprocess.call(
            [env.python, "-m", "pip", "install", "--disable-pip-version-check",
             "-q", "--target", str(target)] + what,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT)
        if code:
            raise EnvUnavailable("installing %s into %s failed"
                                 % (what[0], target))
    return target


def link_test_packages(link_dir, package):
    """Make ``package`` (a folder of tests/services, e.g. ``cinder_tests``)
    and ``in_service`` (what such packages share) importable in a service's
    process: linked into ``link_dir``, which goes on its PYTHONPATH.
    tests/services itself never does: its harness modules (cinder.py,
    nova.py) would shadow the service's own package."""
    here = Path(__file__).resolve().parent
    link_dir = Path(link_dir)
    link_dir.mkdir(exist_ok=True)
    for name in (package, "in_service"):
        (link_dir / name).symlink_to(here / name, target_is_directory=True)
    return link_dir
