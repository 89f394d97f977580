"""Synthetic requests spanning two nodes, for the tail sampling test and
benchmark: an API service on node a (the root span) calls a worker on
node b (a child span).  Some are slow (the root takes 800 ms), some fail
(the worker's span stops with an error)."""

import time

from stacktrail.common import ids

SLOW_NS = 800 * 1000000
FAST_NS = 5 * 1000000


def request(kind="ok", now_ns=None):
    """(base_id, points of node a, points of node b)."""
    t = now_ns or time.time_ns()
    base, root, call = ids.new_id(), ids.new_id(), ids.new_id()
    took = SLOW_NS if kind == "slow" else FAST_NS
    error = {"etype": "RemoteError", "message": "boom"} \
        if kind == "error" else None
    node_a = [("wsgi", 0, base, base, root, t,
               {"request": {"method": "GET", "path": "/v1/things"}}),
              ("wsgi", 1, base, base, root, t + took, None)]
    node_b = [("rpc", 0, base, root, call, t + 1000, None),
              ("rpc", 1, base, root, call, t + 2000000, error)]
    return base, node_a, node_b


def kind_of(i, every=100):
    """1 in ``every`` requests slow, 1 in ``every`` failing."""
    if i % every == 0:
        return "slow"
    if i % every == 1:
        return "error"
    return "ok"


def stored_counts(redis_url):
    """{base_id uuid: points stored} in the Redis store at the URL."""
    import redis
    client = redis.Redis.from_url(redis_url)
    try:
        return {key.decode().split(":", 1)[1]: client.llen(key)
                for key in client.scan_iter("osprofiler_opt:*", count=1000)}
    finally:
        client.close()
