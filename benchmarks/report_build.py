"""How long does building the report of a 100,000-point trace take?

Target (issue 3): <= 1 s on this machine.  The synthetic trace looks like a
busy request fanned out over services: a wsgi root, rpc calls to other
services, each doing db queries and http calls, some chains nesting 200
levels deep, some spans running concurrently, shuffled as a store may
return them.

    .venv/bin/python benchmarks/report_build.py [--points N] [--repeat R]
"""

import argparse
import random
import statistics
import time
import uuid

from stacktrail.report import analysis
from stacktrail.report import tree

TARGET_S = 1.0
SERVICES = ["nova-api", "nova-conductor", "nova-compute", "cinder-volume",
            "zaqar-server"]
NAMES = ["rpc-call", "db-query", "http-request", "compute_api", "redis"]


def _messages(name, base_id, parent_id, start_us, stop_us, service, host):
    trace_id = str(uuid.UUID(int=random.getrandbits(128)))

    def message(phase, us):
        return {
            "name": "%s-%s" % (name, phase), "base_id": base_id,
            "trace_id": trace_id, "parent_id": parent_id,
            "timestamp": tree.format_time_us(us),
            "info": {"host": host, "db": {"statement": "SELECT 1"}},
            "project": service.split("-")[0], "service": service,
        }
    return trace_id, [message("start", start_us), message("stop", stop_us)]


def make_trace(points):
    """About ``points`` messages: a wide fan-out with a few deep chains."""
    rng = random.Random(42)
    random.seed(42)
    base_id = str(uuid.uuid4())
    t0 = 1_700_000_000 * 1_000_000
    spans = points // 2
    out = []
    root_id, msgs = _messages("wsgi", base_id, base_id, t0, t0 + 30_000_000,
                              "nova-api", "ctl-1")
    out.extend(msgs)
    # Frontier of (trace_id, start, stop, depth) that may receive children.
    frontier = [(root_id, t0, t0 + 30_000_000, 0)]
    tip = frontier[0]
    while len(out) < spans * 2:
        if rng.random() < 0.3:
            # Nested call chain: a child almost as long as the chain's tip.
            pid, p_start, p_stop, depth = tip
            if depth >= 300 or p_stop - p_start < 40:
                pid, p_start, p_stop, depth = frontier[0]
            a = p_start + rng.randint(1, 10)
            b = p_stop - rng.randint(1, 10)
        else:
            # Fan-out: a shorter call somewhere under any earlier span,
            # overlapping its siblings now and then (concurrency).
            pid, p_start, p_stop, depth = frontier[rng.randrange(
                len(frontier))]
            if p_stop - p_start < 4:
                pid, p_start, p_stop, depth = frontier[0]
            a = rng.randint(p_start, p_stop - 2)
            b = rng.randint(a + 1, min(p_stop, a + (p_stop - p_start) // 4
                                       + 1))
        tid, msgs = _messages(rng.choice(NAMES), base_id, pid, a, b,
                              rng.choice(SERVICES),
                              "node-%d" % rng.randrange(20))
        out.extend(msgs)
        frontier.append((tid, a, b, depth + 1))
        if b - a > 40 and a - p_start <= 10 and p_stop - b <= 10:
            tip = frontier[-1]
    rng.shuffle(out)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    messages = make_trace(args.points)
    times = []
    for _ in range(args.repeat):
        tree._SECOND_CACHE.clear()  # measure timestamp parsing honestly
        tree._SECOND_US.clear()
        started = time.perf_counter()
        report = tree.build(messages)
        times.append(time.perf_counter() - started)
    depth = max(d for _, d in analysis.walk(report)) + 1
    best, median = min(times), statistics.median(times)
    print("points: %d  spans: %d  depth: %d  critical path: %d spans"
          % (len(messages), report["info"]["span_count"], depth,
             len(report["critical_path"])))
    print("build(): best %.3f s, median %.3f s over %d runs"
          % (best, median, len(times)))
    print("ratio to the %.1f s target: %.2f (median)%s"
          % (TARGET_S, median / TARGET_S,
             "" if median <= TARGET_S else "  OVER TARGET"))
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
