"""Fault runs: a Redis outage, and the agent SIGKILLed, under load.

    .venv/bin/python benchmarks/agent_faults.py            # 60 s outage
    .venv/bin/python benchmarks/agent_faults.py --quick    # 5 s outage

1. Outage: a throwaway redis-server (own port) behind a real agent; a
   service-side sink puts 1,000 points/s; Redis is stopped for ``--outage``
   seconds and started again on the same port.  Every point sent must be
   in Redis afterwards (ids compared).
2. Agent SIGKILL: the same load against the local Redis; the agent is
   SIGKILLed and restarted.  The service must see no exception and no
   latency change on ``put``; the loss must be bounded by what was in
   flight, and is reported by the sink's counters.
"""

import argparse
import os
import shutil
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tests.agent import harness  # noqa: E402

RATE = 1000


class Load(threading.Thread):
    """Puts RATE points/s through a real BufferedSink, timing each put."""

    def __init__(self, url):
        super().__init__(daemon=True)
        from stacktrail.drivers import base
        self.sink = base.get_driver(url, project="bench",
                                    service="faults").make_sink()
        self.sent = []
        self.latency = []   # (time, seconds per put)
        self.errors = 0
        self.running = True

    def run(self):
        t0 = time.monotonic()
        n = 0
        while self.running:
            for point in harness.make_points(100):
                t = time.perf_counter()
                try:
                    self.sink.put(point)
                except Exception:
                    self.errors += 1
                self.latency.append((time.monotonic(),
                                     time.perf_counter() - t))
                self.sent.append(point)
            n += 100
            delay = t0 + n / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self):
        self.running = False
        self.join()
        self.sink.flush(10)


def outage(seconds):
    store = harness.ThrowawayRedis().start()
    workdir = harness.short_dir()
    agent = harness.Agent(workdir, [store.url],
                          retry_max_interval=2).start()
    load = Load(agent.url)
    load.start()
    time.sleep(3)
    store.stop()
    print("outage: redis stopped for %d s at %d points/s" % (seconds, RATE))
    time.sleep(seconds)
    during = agent.status()
    store.start()
    time.sleep(3)
    load.stop()
    t = time.monotonic()
    agent.wait_written(len(load.sent), timeout=120)
    caught_up = time.monotonic() - t
    stored = harness.stored_points(store.url)
    want = harness.expected_points(load.sent)
    print("  during the outage: received %d, written %d, backend_errors %d, "
          "spool_bytes %d, lag %.1f s" % (
              during["received"], during["written"],
              during["backend_errors"], during["spool_bytes"],
              during["lag"]))
    print("  after: sent %d, stored %d, all ids present: %s, duplicates %d, "
          "caught up %.1f s after the load stopped; sink dropped %d" % (
              len(load.sent), len(stored), set(want) <= set(stored),
              len(stored) - len(set(stored)), caught_up,
              load.sink.dropped))
    agent.stop()
    store.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return set(want) <= set(stored) and load.sink.dropped == 0


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1e6


def sigkill(redis_url):
    import redis
    redis.Redis.from_url(redis_url).flushdb()
    workdir = harness.short_dir()
    agent = harness.Agent(workdir, [redis_url]).start()
    load = Load(agent.url)
    load.start()
    time.sleep(3)
    killed_at = time.monotonic()
    agent.stop(signal.SIGKILL)
    print("sigkill: agent SIGKILLed under %d points/s, restarted after 1 s"
          % RATE)
    time.sleep(1)
    agent.start()
    restarted_at = time.monotonic()
    time.sleep(4)
    load.stop()
    time.sleep(1)
    status = agent.status()
    stored = set(harness.stored_points(redis_url))
    want = set(harness.expected_points(load.sent))
    lost = len(want - stored)
    windows = {"before": [], "agent down": [], "after": []}
    for at, seconds in load.latency:
        key = ("before" if at < killed_at else
               "agent down" if at < restarted_at else "after")
        windows[key].append(seconds)
    for key, values in windows.items():
        print("  put latency %-10s p50 %.2f us  p99 %.2f us  (%d puts)"
              % (key, _p(values, 0.5), _p(values, 0.99), len(values)))
    print("  service exceptions: %d; sent %d, stored %d, lost %d; the sink "
          "counted dropped %d (%s); agent after restart: received %d, "
          "dropped %s" % (
              load.errors, len(want), len(want & stored), lost,
              load.sink.dropped, load.sink.driver.stats()["drops"],
              status["received"], status["dropped"] or "{}"))
    agent.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    redis.Redis.from_url(redis_url).flushdb()
    return load.errors == 0 and lost <= load.sink.dropped + 2 * RATE


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--quick", action="store_true",
                        help="a 5 s outage instead of 60 s")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    ok = outage(5 if args.quick else args.outage)
    ok = sigkill(args.redis) and ok
    print("fault runs: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
