"""The tempest plugin's trace helpers, without tempest: headers that both
osprofiler and stacktrail accept, the tree and its checks, the polling."""

import json
from pathlib import Path

import pytest
from oslo_config import cfg

from stacktrail.common import ids as st_ids
from stacktrail.common import propagation
from stacktrail_tempest_plugin import config
from stacktrail_tempest_plugin import traces

KEY = "a-long-random-test-key"


def test_osprofiler_headers_validate_in_osprofiler_and_stacktrail():
    from osprofiler import _utils
    ids = traces.Ids.new()
    headers = ids.osprofiler_headers(KEY)
    unpacked = _utils.signed_unpack(headers[traces.X_TRACE_INFO],
                                    headers[traces.X_TRACE_HMAC], [KEY])
    assert unpacked["base_id"] == ids.base_id
    assert unpacked["parent_id"] == ids.parent_id
    assert propagation.unpack_trace_info(
        headers[traces.X_TRACE_INFO], headers[traces.X_TRACE_HMAC],
        [KEY])[:2] == (ids.base_id, ids.parent_id)
    assert propagation.unpack_trace_info(
        headers[traces.X_TRACE_INFO], headers[traces.X_TRACE_HMAC],
        ["another-key"]) is None


def test_traceparent_names_the_same_trace_and_parent():
    ids = traces.Ids.new()
    trace_int, parent_int, sampled = propagation.parse_traceparent(
        ids.traceparent_headers()[traces.TRACEPARENT])
    assert sampled
    assert st_ids.to_uuid(trace_int) == ids.base_id
    assert st_ids.to_uuid(parent_int) == ids.parent_id
    both = ids.both_headers(KEY)
    assert set(both) == {traces.X_TRACE_INFO, traces.X_TRACE_HMAC,
                         traces.TRACEPARENT}
    assert traces.Ids.new().base_id != ids.base_id


def point(name, span, parent, service="api", info=None, ts="0"):
    return {"name": name, "trace_id": span, "parent_id": parent,
            "base_id": "B", "service": service, "timestamp": ts,
            "info": info or {}}


def spans(*specs):
    """(name, id, parent, service, info, closed) -> start/stop points."""
    found = []
    for i, (name, span, parent, service, info, closed) in enumerate(specs):
        found.append(point(name + "-start", span, parent, service, info,
                           "%03d" % i))
        if closed:
            found.append(point(name + "-stop", span, parent, service, {},
                               "%03d" % (i + 50)))
    return found


TREE = spans(
    ("wsgi", "w1", "P", "api", {"request": {"method": "POST",
                                            "path": "/v2/q"}}, True),
    ("redis_message_controller", "c1", "w1", "api",
     {"function": {"name": "zaqar.MessageController.post"}}, True),
    ("redis", "r1", "c1", "api", {}, True),
    ("wsgi", "w2", "P", "api", {"request": {"method": "PUT"}}, True),
    ("sqlalchemy_queue_controller", "q1", "w2", "api", {}, True),
    ("db", "d1", "q1", "api", {"db": {"statement": "SELECT 1"}}, False),
)


def test_the_tree_and_its_checks():
    trace = traces.Trace("B", TREE)
    assert [r.id for r in trace.roots] == ["w1", "w2"]
    assert [s.describe() for s in trace.open_spans()] == ["db@api (open)"]
    assert trace.orphans("P") == []
    assert [s.id for s in trace.orphans("someone-else")] == ["w1", "w2"]
    assert trace.services() == {"api"}
    post = trace.roots[0]
    assert (post.method, post.path) == ("POST", "/v2/q")

    chain = trace.chain(traces.Step(".+_message_controller"),
                        traces.Step("redis|db"), start=post)
    assert [s.id for s in chain] == ["c1", "r1"]
    assert trace.chain(traces.Step("wsgi"), traces.Step("redis"),
                       start=trace.roots[1]) is None
    # Nested at any depth, in order.
    assert trace.chain(traces.Step("wsgi"), traces.Step("redis"))
    assert trace.chain(traces.Step("redis"), traces.Step("wsgi")) is None
    assert trace.chain(traces.Step(".*", function=r"\.post$"))
    assert trace.chain(traces.Step("wsgi", service="^other$")) is None

    text = trace.render()
    assert "wsgi@api POST /v2/q" in text and "(open)" in text


def test_secrets_are_found_anywhere_in_the_points():
    leaky = TREE + [point("db-stop", "d1", "q1", info={
        "db": {"params": {"password": "hunter2-secret"}}})]
    trace = traces.Trace("B", leaky)
    assert trace.secrets_found("hunter2-secret", KEY, None) == [
        "hunter2-secret"]
    assert trace.open_spans() == []


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_for_returns_once_complete_and_settled():
    clock = Clock()
    arriving = [TREE[:4], TREE[:8], TREE, TREE, TREE, TREE]
    reads = []

    def read(base_id):
        reads.append(base_id)
        return arriving[min(len(reads) - 1, len(arriving) - 1)]

    def two_roots(trace):
        return len([r for r in trace.roots if r.closed]) == 2
    trace = traces.wait_for(read, "B", two_roots, timeout=30, interval=0.5,
                            settle=1.0, clock=clock, sleep=clock.sleep)
    assert len(trace) == len(TREE)
    assert clock.now == pytest.approx(2.0)    # 1 s after the last change


def test_wait_for_says_what_the_store_held():
    clock = Clock()

    def until(trace):
        """the impossible"""
        return False
    with pytest.raises(traces.TraceTimeout) as failure:
        traces.wait_for(lambda _: TREE[:2], "B", until, timeout=5,
                        interval=1, settle=0, clock=clock, sleep=clock.sleep)
    message = str(failure.value)
    assert "after 5 s" in message and "the impossible" in message
    assert "trace B: 2 points" in message and "wsgi@api" in message


def test_store_reads_any_stacktrail_store(tmp_path):
    path = tmp_path / "traces.jsonl"
    store = traces.Store("file://%s" % path)
    assert store.messages("B") == []            # no file yet
    path.write_text("".join(json.dumps(p) + "\n" for p in TREE))
    assert len(store.messages("B")) == len(TREE)


def test_options_register_in_their_own_group():
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    group = conf.stacktrail_tracing
    assert (group.services, group.auth_strategy, group.poll_timeout,
            group.trust_traceparent) == ([], "keystone", 60, False)
    assert {o.name for o in config.opts if o.secret} == {
        "hmac_key", "connection_string"}
    assert config.group.name not in ("stacktrail", "profiler")


def test_the_plugin_entry_point_loads_without_tempest(tmp_path):
    from importlib import metadata
    ep, = [ep for ep in metadata.distribution("stacktrail").entry_points
           if ep.group == "tempest.test_plugins"]
    assert ep.name == "stacktrail"
    plugin = ep.load()()
    test_dir, top = plugin.load_tests()
    assert test_dir.endswith("stacktrail_tempest_plugin/tests")
    assert (Path(test_dir) / "test_zaqar.py").exists()
    (group, options), = plugin.get_opt_lists()
    assert group == "stacktrail_tracing" and options is config.opts
