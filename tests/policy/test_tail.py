"""Tail sampling: every slow or failed trace is kept whole across two
agents, the configured share of the rest, nothing else reaches the store."""

import os
import time

from stacktrail import policy_client
from stacktrail.agent import tail
from stacktrail.common import ids
from stacktrail.common import policy
from stacktrail.drivers import base as drivers
from tests.agent import harness
from tests.policy import traffic

RATE = 0.1
POLICY = {"default_rate": RATE, "slow_ms": {"default": 500}}


class Frame:
    def __init__(self, origin, points):
        self.origin = origin
        self._points = points

    def points(self):
        return self._points


def stage(**options):
    emitted = []
    current = policy.parse(dict(POLICY, always_keep={"paths": ["/admin*"]}))
    options.setdefault("decisions", tail.LocalDecisions())
    return tail.TailStage(lambda payload, frame, n: emitted.append(frame),
                          lambda: current, **options), emitted


def kept_ids(emitted):
    return {ids.to_uuid(p[2]) for frame in emitted for p in frame.points()}


def test_keeps_errors_slow_and_rules_drops_the_rest_counted():
    t, emitted = stage(timeout=30, settle=0)
    cases = {}
    for kind in ("ok", "slow", "error"):
        base, a, b = traffic.request(kind)
        while kind == "ok" and tail.lot(ids.to_uuid(base)) < RATE:
            base, a, b = traffic.request(kind)   # one the rate leaves out
        t.offer(Frame(("p", "api", "a"), a))
        t.offer(Frame(("p", "worker", "b"), b))
        cases[kind] = ids.to_uuid(base)
    base, a, _ = traffic.request()
    a[0][6]["request"]["path"] = "/admin/x"
    t.offer(Frame(("p", "api", "a"), a))
    t.decide(time.monotonic())
    kept = kept_ids(emitted)
    assert {cases["slow"], cases["error"], ids.to_uuid(base)} <= kept
    assert cases["ok"] not in kept
    status = t.status()
    assert status["kept_traces"]["slow"] == 1
    assert status["kept_traces"]["always"] == 1
    assert t.drops() == {"tail_sampled_out": 4}


def test_memory_is_bounded():
    t, emitted = stage(timeout=30, settle=30, max_traces=10)
    for _ in range(50):
        _, a, _ = traffic.request()
        t.offer(Frame(("p", "api", "a"), a[:1]))   # never ends
    assert t.status()["held_traces"] == 10
    t.decide(time.monotonic())
    assert t.status()["dropped_traces"] + sum(
        t.status()["kept_traces"].values()) == 40


def test_late_points_follow_the_decision():
    t, emitted = stage(timeout=0, settle=0)
    base, a, b = traffic.request("error")
    t.offer(Frame(("p", "worker", "b"), b))
    t.decide(time.monotonic())
    t.offer(Frame(("p", "api", "a"), a))     # after the keep decision
    t.decide(time.monotonic())
    assert sum(f.n for f in emitted) == 4


def test_two_agents_keep_slow_and_failed_traces_whole(workdir, redis_url):
    policy_file = os.path.join(workdir, "policy.json")
    with open(policy_file, "w") as f:
        f.write(policy.parse(POLICY).dumps())
    nodes = []
    for name in ("a", "b"):
        path = os.path.join(workdir, name)
        os.makedirs(path)
        nodes.append(harness.Agent(
            path, [redis_url], sampling_policy_file=policy_file,
            tail_sampling=True, tail_timeout=3, tail_settle=0.5).start())
    sinks = [drivers.get_driver(node.url, project="demo",
                                service=service).make_sink()
             for node, service in zip(nodes, ("api", "worker"))]
    kinds = {}
    try:
        # services record every request; the agents apply the rate
        served = policy_client.fetch(nodes[0].listen[len("unix://"):] +
                                     ".policy")
        assert served.default_rate == 1.0
        for i in range(1000):
            kind = traffic.kind_of(i)
            base, a, b = traffic.request(kind)
            kinds[ids.to_uuid(base)] = kind
            for sink, points in zip(sinks, (a, b)):
                for point in points:
                    sink.put(point)
        for sink in sinks:
            assert sink.flush(10)
        harness.wait_for(
            lambda: all(n.status()["tail_sampling"]["held_traces"] == 0
                        for n in nodes), 15, what="every trace decided")
        expected = {b for b, k in kinds.items()
                    if k != "ok" or tail.lot(b) < RATE}
        # every kept trace whole (4 points), nothing else
        harness.wait_for(lambda: traffic.stored_counts(redis_url) ==
                         dict.fromkeys(expected, 4), 10,
                         what="the kept traces stored whole")
        stored = traffic.stored_counts(redis_url)
        assert sum(k != "ok" for k in kinds.values()) == 20
        ok_kept = sum(kinds[b] == "ok" for b in stored)
        assert 0.05 < ok_kept / 980 < 0.15
        dropped = sum(n.status()["dropped"]["tail_sampled_out"]
                      for n in nodes)
        assert dropped == 4 * (1000 - len(stored))
    finally:
        for sink in sinks:
            sink.close(1)
        for node in nodes:
            node.stop()
