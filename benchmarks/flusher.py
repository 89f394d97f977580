"""Buffer and flusher: request-path cost of ``put`` and store throughput.

Run: .venv/bin/python benchmarks/flusher.py [connection_string ...]
     (default: a temporary file:// store; try redis://127.0.0.1:6379/9)

For each store: the cost of one ``put`` (what the request thread pays),
then how many points per second the flusher delivers in batches, and the
counters at the end (nothing should be dropped at these volumes).
"""

import os
import sys
import tempfile
import time

from stacktrail.common import buffer
from stacktrail.common import ids
from stacktrail.drivers import base

POINTS = 100_000


def _points(n):
    base_id = ids.new_id()
    now = time.time_ns()
    return [("bench-span", i & 1, base_id, base_id, ids.new_id(), now + i,
             {"n": i}) for i in range(n)]


def measure(connection_string):
    driver = base.get_driver(connection_string, project="bench",
                             service="bench")
    sink = buffer.BufferedSink(driver, max_points=POINTS * 2)
    batch = _points(POINTS)
    started = time.perf_counter()
    for point in batch:
        sink.put(point)
    put_ns = (time.perf_counter() - started) / POINTS * 1e9
    drained = sink.flush(120)
    total = time.perf_counter() - started
    print("%-40s put %6.0f ns   %8.0f points/s delivered   %s%s" % (
        connection_string[:40], put_ns, POINTS / total, sink.stats(),
        "" if drained else "  NOT DRAINED"))
    sink.close(5)


def main(argv):
    targets = argv or ["file://%s" % os.path.join(tempfile.mkdtemp(),
                                                  "bench.jsonl")]
    for target in targets:
        measure(target)


if __name__ == "__main__":
    main(sys.argv[1:])
