"""The agent's benchmarks still run and check what they claim (their rates
are not tests here: those depend on the machine)."""

import pathlib
import subprocess
import sys

from tests import servers

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script, *args):
    redis = servers.ensure("redis")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--redis",
         "redis://%s:%d/13" % (redis.host, redis.port)],
        capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


def test_agent_throughput_benchmark_counts_every_point():
    out = _run("agent_throughput.py", "--points", "20000",
               "--batch-size", "1000")
    assert ("points sent 20000, received 20000, written 20000, stored in "
            "redis 20000, dropped {}") in out, out
    assert "points/s end to end" in out and "us per point" in out, out


def test_agent_low_rate_benchmark_sends_paced_then_back_to_back():
    out = _run("agent_low_rate.py", "--seconds", "1", "--idle", "0.2")
    # 25 requests of 32 points paced, then the same again back to back
    assert "points sent 1600, written 1600, stored 1600, dropped {}" in out, \
        out
    assert "the same requests back to back:" in out, out
