"""How long does ``stacktrail analyze`` take over 10,000 traces?

Target: 10,000 traces of 100 points each in under 10 s on this
machine, with a progress line, in bounded memory.

The store (a Redis database of the local server by default) is filled
with generated Cinder volume creates (``tests/report/opgen.py``: 50 spans
each, casts that outlive the API request, a third of the statements
BEGIN): half of them in a baseline hour, half in the same hour a day
later, when the volume driver is planted 60 ms slower.  Then the
``stacktrail`` command analyzes the later hour against the baseline, as
an operator would, and the script checks the answer names the planted
kind first and reports the time taken.

    .venv/bin/python benchmarks/analyze.py [--traces 10000] [--spans 50]
        [--connection-string redis://127.0.0.1:6379/N | postgresql://...]
        [--jobs N] [--keep]

Without ``--connection-string`` it takes a free Redis database of the
local server the way the tests do (a lock file per database; the
database is flushed first and afterwards).  A given store must be empty.
"""

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacktrail.drivers import base  # noqa: E402
from tests.report import opgen  # noqa: E402

TARGET_S = 10.0
DAY_US = 86_400_000_000
BASELINE = datetime.datetime(2024, 5, 1, 10, 0, tzinfo=datetime.timezone.utc)
PLANT = opgen.Plant(opgen.VOLUME, "driver", 30.0)   # x2 driver spans: +60 ms


def window_text(start):
    end = start + datetime.timedelta(hours=1)
    return "%s/%s" % (start.strftime("%Y-%m-%dT%H:%M"),
                      end.strftime("%Y-%m-%dT%H:%M"))


def fill(connection_string, traces, spans):
    """Write ``traces`` generated traces, half per window."""
    driver = base.get_driver(connection_string)
    start_us = int(BASELINE.timestamp() * 1_000_000)
    half = traces // 2
    every = 3_600_000_000 // max(1, half)
    started = time.perf_counter()
    written = 0
    try:
        for day, plant in ((0, None), (1, PLANT)):
            batch = []
            for _, messages in opgen.window(start_us + day * DAY_US, half,
                                            every, seed=day + 1, plant=plant,
                                            spans=spans, error_every=50,
                                            other_every=10):
                batch += messages
                if len(batch) >= 5000:
                    driver.write_messages(batch)
                    written += len(batch)
                    batch = []
            if batch:
                driver.write_messages(batch)
                written += len(batch)
    finally:
        driver.close()
    return written, time.perf_counter() - started


def analyze(connection_string, jobs=None):
    """Run the CLI as an operator would; (seconds, answer, stderr)."""
    later = BASELINE + datetime.timedelta(days=1)
    command = [str(pathlib.Path(sys.executable).with_name("stacktrail")),
               "analyze", "--connection-string", connection_string,
               "--window", window_text(later), "--baseline=-1d",
               "--json"]
    if jobs:
        command += ["--jobs", str(jobs)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=600)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit("stacktrail analyze failed: %s" % done.stderr)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, json.loads(done.stdout), done.stderr, usage.ru_maxrss


@contextlib.contextmanager
def local_redis():
    from tests import servers
    server = servers.ensure("redis")
    with servers.redis_db(server) as db:
        url = "redis://%s:%s/%d" % (server.host, server.port, db)
        try:
            yield url
        finally:
            import redis
            redis.Redis(host=server.host, port=server.port, db=db).flushdb()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=50)
    parser.add_argument("--connection-string")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with (contextlib.nullcontext(args.connection_string)
          if args.connection_string else local_redis()) as url:
        written, fill_s = fill(url, args.traces, args.spans)
        print("store: %s  traces: %d  points: %d (written in %.1f s)"
              % (url, args.traces, written, fill_s))
        times = []
        for _ in range(args.repeat):
            took, answer, progress, rss = analyze(url, args.jobs)
            times.append(took)
        changes = answer["changes"]
        top = changes[0]
        read = answer["traces"]["read"] + answer["baseline"]["traces"]["read"]
        print("analyze: %d traces read, %d + %d matched" % (
            read, answer["traces"]["matched"],
            answer["baseline"]["traces"]["matched"]))
        print("progress (stderr of the last run):")
        for line in progress.splitlines():
            print("   " + line)
        print("latency p50/p90/p99: before %s, after %s ms" % (
            "/".join("%.1f" % (answer["baseline"]["latency"]["end_to_end"]
                               ["p%d_us" % p] / 1000) for p in (50, 90, 99)),
            "/".join("%.1f" % (answer["latency"]["end_to_end"]["p%d_us" % p]
                               / 1000) for p in (50, 90, 99))))
        print("first change: %s %s %+.1f ms (%.0f%% of the change)" % (
            top["service"], top["kind"], top["change_us"] / 1000,
            100 * (top["share_of_change"] or 0)))
        print("wall clock (CLI, %d runs): %s s; largest process %.0f MiB"
              % (len(times), ", ".join("%.2f" % t for t in times),
                 rss / 1024))
        best = min(times)
        found = (top["service"], top["kind"]) == (PLANT.service, PLANT.kind)
        print("planted kind found first: %s" % ("yes" if found else "NO"))
        print("ratio to the %.0f s target: %.2f (best)%s" % (
            TARGET_S, best / TARGET_S, "" if best <= TARGET_S
            else "  OVER TARGET"))
        return 0 if found and best <= TARGET_S else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
