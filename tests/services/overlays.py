"""One install of this clone for every service and tool environment of a
test session.

``envs.stacktrail_overlay`` installs the clone without dependencies into a
directory put on a process's PYTHONPATH.  What it installs is pure Python
and the same for every environment made from this interpreter, so the
service tests (Zaqar, Cinder, Nova) and the devstack and tempest tests
(zaqar-server, stacktrail-agent, tempest) share one, built on first use
and removed at exit.
"""

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from tests.services import envs

_lock = threading.Lock()
_built = []


def shared_overlay(env):
    """The session's overlay (installed with ``env``'s pip the first time);
    envs.EnvUnavailable when the install fails."""
    with _lock:
        if not _built:
            top = Path(tempfile.mkdtemp(prefix="st-overlay-"))
            atexit.register(shutil.rmtree, top, True)
            _built.append(envs.stacktrail_overlay(top / "site", env))
        return _built[0]


def overlay_for(env):
    """The shared overlay, for a fixture: the test is skipped when it
    cannot be installed."""
    try:
        return shared_overlay(env)
    except envs.EnvUnavailable as exc:
        pytest.skip(str(exc))
