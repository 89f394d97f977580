"""Python code run in a process of its own: what importing a module does
is seen there, not hidden by what the test process imported already."""

import subprocess
import sys


def output(code, timeout=60):
    """The stdout of ``python -c code``; fails the test with its stderr
    when it fails."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout
