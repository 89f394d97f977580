"""The agent throughput benchmark still runs and checks what it claims
(its rate is not a test here: that depends on the machine)."""

import pathlib
import subprocess
import sys

from tests import servers

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / \
    "agent_throughput.py"


def test_agent_throughput_benchmark_counts_every_point():
    redis = servers.ensure("redis")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--points", "20000", "--batch-size",
         "1000", "--redis", "redis://%s:%d/13" % (redis.host, redis.port)],
        capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert ("points sent 20000, received 20000, written 20000, stored in "
            "redis 20000, dropped {}") in out, out + done.stderr
    assert "points/s end to end" in out and "us per point" in out, out
