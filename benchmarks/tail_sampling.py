"""Tail sampling at about 1,000 requests/s across two agents.

    .venv/bin/python benchmarks/tail_sampling.py [--rps 1000] [--seconds 10]
        [--rate 0.1] [--redis URL]
    .venv/bin/python benchmarks/tail_sampling.py policy [--changes 6]

Two real stacktrail-agents (nodes a and b) write to one Redis (a
redis-server of its own unless ``--redis`` names a db, which is flushed).
Each request is a root ``wsgi`` span recorded through node a's agent and
a child ``rpc`` span through node b's (tests/policy/traffic.py);
1 in 100 requests is slow (800 ms root, policy slow_ms 500) and 1 in 100
fails (an error on node b).  The same traffic runs twice: agents without
tail sampling (every trace stored), then with ``tail_sampling = true`` and
the policy's rate ``--rate``.  Prints, per run: traces stored, slow/failed
traces stored whole, the share of the other traces stored, and the service
side's cost per request (put us: the request thread's four ``put`` calls;
cpu us: the whole sending process, which also makes up the traffic, and
its flusher threads), and the two agents' CPU per request.

``policy`` measures how long a policy change takes to reach services: two
agents reading the policy from one Redis, a service process behind each
(tests/policy/test_two_nodes.py), ``--changes`` times ``stacktrail
sampling set`` switching the rate between 1 and 0, each timed until both
services trace accordingly.
"""

import argparse
import contextlib
import io
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from stacktrail.agent import tail  # noqa: E402
from stacktrail.common import ids  # noqa: E402
from stacktrail.common import policy  # noqa: E402
from stacktrail.drivers import base  # noqa: E402
from tests.agent import harness  # noqa: E402
from tests.policy import traffic  # noqa: E402


def run(args, tail_sampling):
    import redis
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    workdir = harness.short_dir()
    policy_file = os.path.join(workdir, "policy.json")
    with open(policy_file, "w") as f:
        f.write(policy.parse({"default_rate": args.rate,
                              "slow_ms": {"default": 500}}).dumps())
    options = dict(sampling_policy_file=policy_file)
    if tail_sampling:
        options.update(tail_sampling=True, tail_timeout=5, tail_settle=1)
    nodes = []
    for name in ("a", "b"):
        path = os.path.join(workdir, name)
        os.makedirs(path)
        nodes.append(harness.Agent(path, [args.redis], **options).start())
    sinks = [base.get_driver(node.url, project="bench",
                             service=service).make_sink()
             for node, service in zip(nodes, ("api", "worker"))]
    kinds = {}
    put_ns = 0
    total = int(args.rps * args.seconds)
    cpu0 = time.process_time()
    start = time.monotonic()
    try:
        for i in range(total):
            # pace: request i is due at start + i / rps
            delay = start + i / args.rps - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
            kind = traffic.kind_of(i)
            base_id, a, b = traffic.request(kind)
            kinds[ids.to_uuid(base_id)] = kind
            t0 = time.perf_counter_ns()
            for sink, points in zip(sinks, (a, b)):
                for point in points:
                    sink.put(point)
            put_ns += time.perf_counter_ns() - t0
        elapsed = time.monotonic() - start
        for sink in sinks:
            sink.flush(30)
        cpu = time.process_time() - cpu0
        harness.wait_for(lambda: all(
            (n.status().get("tail_sampling") or {}).get("held_traces", 0)
            == 0 and n.status()["lag"] == 0 for n in nodes), 60,
            interval=0.2, what="agents caught up")
        time.sleep(1.0)
        stored = traffic.stored_counts(args.redis)
        statuses = [n.status() for n in nodes]
        agent_cpu = sum(n.cpu_seconds() for n in nodes)
    finally:
        for sink in sinks:
            sink.close(1)
        for node in nodes:
            node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    special = [b for b, k in kinds.items() if k != "ok"]
    ordinary = [b for b, k in kinds.items() if k == "ok"]
    return {
        "requests": total,
        "rps": total / elapsed,
        "stored": len(stored),
        "special_whole": sum(stored.get(b) == 4 for b in special),
        "special": len(special),
        "ordinary_share": sum(b in stored for b in ordinary) / len(ordinary),
        "expected_share": sum(tail.lot(b) < args.rate for b in ordinary)
        / len(ordinary),
        "partial": sum(count != 4 for count in stored.values()),
        "put_us": put_ns / total / 1000.0,
        "cpu_us": cpu * 1e6 / total,
        "agent_cpu_us": agent_cpu * 1e6 / total,
        "dropped": [s["dropped"] for s in statuses],
        "written": sum(s["written"] for s in statuses),
    }


def policy_latency(changes):
    from tests.policy import test_two_nodes as two
    server = harness.ThrowawayRedis().start()
    workdir = harness.short_dir()
    took = []
    try:
        with two.two_nodes(workdir, server.url) as (_, services):
            two.wait_traced(services, [0, 0])
            for i in range(changes):
                rate = 1 - i % 2
                with contextlib.redirect_stdout(io.StringIO()):
                    two.set_policy(server.url, "--default-rate", str(rate))
                took.append(two.wait_traced(services, [200 * rate] * 2, 30))
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("policy change applied in both services after (s): %s"
          % " ".join("%.2f" % t for t in took))


def main():
    if sys.argv[1:2] == ["policy"]:
        parser = argparse.ArgumentParser(prog="tail_sampling.py policy")
        parser.add_argument("--changes", type=int, default=6)
        return policy_latency(parser.parse_args(sys.argv[2:]).changes)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--redis", default=None,
                        help="a Redis db to flush and use (default: a "
                             "redis-server started for the run)")
    args = parser.parse_args()
    server = None
    if args.redis is None:
        server = harness.ThrowawayRedis().start()
        args.redis = server.url
    try:
        results = {"agent:// alone": run(args, False),
                   "agent:// + tail": run(args, True)}
    finally:
        if server is not None:
            server.close()
    print("%-16s %6s %7s %13s %8s %8s %7s %7s %10s" % (
        "run", "req/s", "stored", "slow+failed", "others", "partial",
        "put us", "cpu us", "agents us"))
    for name, r in results.items():
        print("%-16s %6.0f %7d %6d/%-6d %7.1f%% %8d %7.2f %7.1f %10.1f" % (
            name, r["rps"], r["stored"], r["special_whole"], r["special"],
            100 * r["ordinary_share"], r["partial"], r["put_us"],
            r["cpu_us"], r["agent_cpu_us"]))
    tail_run = results["agent:// + tail"]
    print("tail: policy rate %.3f, expected share of the others %.1f%% "
          "(hash lot), points dropped by the agents: %s"
          % (args.rate, 100 * tail_run["expected_share"],
             tail_run["dropped"]))


if __name__ == "__main__":
    main()
