"""The read-side benchmark still runs (its timing is not a test here)."""

import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / \
    "trace_show.py"


def test_trace_show_benchmark_runs_on_a_small_trace():
    done = subprocess.run([sys.executable, str(SCRIPT), "--points", "2000",
                           "--stores", "file", "--formats", "text,json",
                           "--repeat", "1"], capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines()
             if line.startswith("file")]
    assert len(lines) == 2, done.stdout + done.stderr
    assert all("osprofiler get_report" in line and "ratio" in line
               for line in lines)
