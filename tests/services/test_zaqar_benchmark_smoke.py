"""The Zaqar benchmarks still run end to end (their timing is not a test
here: a missed target, exit status 1, is accepted)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def run(script, *args, timeout=600):
    """(exit status, stdout, stderr) of a benchmark script."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script)]
                          + list(args), capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def test_benchmark_runs_a_few_rounds(zaqar_env):
    code, out, err = run("zaqar_overhead.py", "--rounds", "5", "--warmup",
                         "2", "--servers", "1", "--blocks", "2")
    assert code in (0, 1), out + err
    for line in ("off ", "armed ", "armed+file ", "triggered ", "osprofiler ",
                 "agent "):
        assert "\n" + line in out, out
    # two blocks, each with new server processes, all counted
    assert "2 blocks of 5 rounds" in out, out
    assert "failed requests: 0 of 100" in out
    assert "stored with both wsgi spans: 14 of 14" in out
    assert "dropped {}" in out


def test_trace_cost_benchmark_splits_a_traced_rounds_cpu(zaqar_env):
    code, out, err = run("zaqar_trace_cost.py", "--blocks", "1",
                         "--block", "10")
    assert code == 0, out + err
    for line in ("unsigned (armed) ", "signed (traced) ", "a trace adds "):
        assert "\n" + line in out, out
    # every request of the warm-up and of the blocks answered, and every
    # point of the signed ones taken by the agent and written
    assert "failed requests: 0;" in out and "dropped {}" in out, out


def test_instruction_count_splits_what_a_trace_adds(zaqar_env):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    code, out, err = run("zaqar_instructions.py", "--rounds", "3",
                         "--warmup", "10", timeout=900)
    assert code == 0, out + err
    ratios = {}
    for kind in ("off", "armed", "headers", "triggered"):
        line = next(ln for ln in out.splitlines()
                    if ln.startswith(kind + " "))
        ratios[kind] = float(line.split()[-1])
    assert ratios["off"] == 1.0
    # Armed, an unsigned request costs the server about what it costs
    # without stacktrail; the trace headers cost their parsing even
    # unsigned, and a signed request more again.
    assert abs(ratios["armed"] - 1.0) < 0.02, out
    assert ratios["triggered"] > ratios["headers"] > ratios["armed"], out
    assert "a trace adds " in out and "its flusher" in out, out
    assert "failed requests: 0" in out, out
