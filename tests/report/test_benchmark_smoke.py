"""The report benchmarks still run (their timing is not a test here)."""

import pathlib
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "report_build.py"


def test_benchmark_runs_on_a_small_trace():
    done = subprocess.run([sys.executable, str(SCRIPT), "--points", "2000",
                           "--repeat", "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "points: 2000" in done.stdout and "ratio" in done.stdout


def test_analyze_benchmark_finds_its_plant_in_a_small_store(redis_url):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "analyze.py"),
                           "--traces", "200", "--spans", "12", "--repeat",
                           "1", "--connection-string", redis_url],
                          capture_output=True, text=True, timeout=300)
    assert "planted kind found first: yes" in done.stdout, done.stdout + \
        done.stderr
    assert "window: 100/100 traces read" in done.stdout
