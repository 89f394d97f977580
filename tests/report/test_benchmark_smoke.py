"""The report benchmark still runs (its timing is not a test here)."""

import pathlib
import subprocess
import sys

SCRIPT = (pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
          / "report_build.py")


def test_benchmark_runs_on_a_small_trace():
    done = subprocess.run([sys.executable, str(SCRIPT), "--points", "2000",
                           "--repeat", "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "points: 2000" in done.stdout and "ratio" in done.stdout
