"""A real Cinder traced from configuration alone, in its own functional
harness: API -> scheduler -> volume manager -> driver -> database.

Cinder 29 runs from PyPI in its own environment with stacktrail installed
beside it; its test processes are configured only as Cinder's functional
tests are (the oslo.config environment selects stacktrail's config source,
``_get_flags`` gives the ``[profiler]`` section).
"""

import pytest

from tests.services import cinder
from tests.services import tracing

SOURCE = {"OS_DEFAULT__CONFIG_SOURCE": "stacktrail",
          "OS_STACKTRAIL__DRIVER": "stacktrail",
          "OS_STACKTRAIL__ADAPTER": "cinder"}
FLAGS = ("trace_wsgi", "trace_rpc", "trace_drivers", "trace_sqlalchemy",
         "trace_requests")
TRACED = "cinder_tests.traced.TracedVolumeTest"


@pytest.fixture(scope="module")
def overlay(cinder_overlay):
    return cinder_overlay


def profiler_options(store, **changes):
    options = {"enabled": True, "hmac_keys": tracing.KEY,
               "connection_string": store}
    options.update({flag: True for flag in FLAGS})
    options.update(changes)
    return options


def run_traced(overlay, tmp_path, tests=TRACED + ".test_create_and_delete_"
               "volume", **changes):
    """Run signed volume tests; (store, [trace ids])."""
    store = "file://%s" % (tmp_path / "traces.jsonl")
    ids = tmp_path / "ids"
    result = cinder.run_functional(
        tests, overlay=overlay,
        env_vars=dict(SOURCE, STACKTRAIL_TEST_KEY=tracing.KEY,
                      STACKTRAIL_TEST_IDS=str(ids)),
        flags={"profiler": profiler_options(store, **changes)})
    assert result.ok, result.report()
    return store, ids.read_text().split()


def driver_call(spans, method):
    return [m for m in spans.values() if m["name"] == "driver-start" and
            m["info"]["function"]["name"].endswith("." + method)]


def test_volume_create_and_delete_is_one_tree(overlay, tmp_path):
    store, (base_id,) = run_traced(overlay, tmp_path)
    found = tracing.wait_for_messages(store, base_id)
    assert tracing.unclosed(found) == []
    spans = tracing.starts(found)

    created, = driver_call(spans, "create_volume")
    assert tracing.chain(spans, created) == [
        "client@osapi_volume", "http@osapi_volume", "wsgi@osapi_volume",
        "rpc@osapi_volume",            # cast to the scheduler
        "rpc@cinder-scheduler",        # ... served there
        "rpc@cinder-scheduler",        # cast to the volume service
        "rpc@cinder-volume",           # ... served there
        "driver@cinder-volume"]
    deleted, = driver_call(spans, "delete_volume")
    assert tracing.chain(spans, deleted)[-3:] == [
        "rpc@osapi_volume", "rpc@cinder-volume", "driver@cinder-volume"]

    db = [m for m in spans.values() if m["name"] == "db-start"]
    assert {m["service"] for m in db} == {"osapi_volume", "cinder-scheduler",
                                          "cinder-volume"}
    assert not any("params" in m["info"]["db"] for m in db)
    assert tracing.KEY not in str(found)


def test_concurrent_traces_stay_apart_whatever_the_import_order(overlay,
                                                                tmp_path):
    ids = []
    for module in ("cinder_tests.traced", "cinder_tests.traced_after_patch"):
        work = tmp_path / module
        work.mkdir()
        store, found_ids = run_traced(
            overlay, work, module + ".TracedVolumeTest."
            "test_two_volumes_in_concurrent_greenthreads")
        assert len(set(found_ids)) == 2
        ids.append(found_ids)
        for base_id in found_ids:
            spans = tracing.starts(tracing.wait_for_messages(store, base_id))
            # Each trace is whole on its own: one create, one delete, every
            # span's parent in the same trace.
            assert len(driver_call(spans, "create_volume")) == 1
            assert len(driver_call(spans, "delete_volume")) == 1
            roots = [m for m in spans.values()
                     if m["parent_id"] not in spans]
            assert {m["name"] for m in roots} == {"client-start"}
            assert {m["parent_id"] for m in roots} == {base_id}


# flag -> the span name it alone switches
FLAG_SPANS = {"trace_wsgi": "wsgi", "trace_rpc": "rpc",
              "trace_drivers": "driver", "trace_sqlalchemy": "db",
              "trace_requests": "http"}


@pytest.fixture(scope="module")
def everything(overlay, tmp_path_factory):
    store, (base_id,) = run_traced(overlay, tmp_path_factory.mktemp("all"))
    return set(tracing.span_names(tracing.wait_for_messages(store, base_id)))


@pytest.mark.parametrize("flag", sorted(FLAG_SPANS))
def test_each_flag_removes_exactly_its_spans(overlay, tmp_path, everything,
                                             flag):
    store, (base_id,) = run_traced(overlay, tmp_path, **{flag: False})
    names = set(tracing.span_names(tracing.wait_for_messages(store, base_id)))
    assert FLAG_SPANS[flag] in everything
    assert names == everything - {FLAG_SPANS[flag]}


@pytest.mark.parametrize("store", ["agent:///nonexistent/agent.sock",
                                   "file:///proc/not-writable.jsonl"])
def test_cinders_own_tests_pass_with_every_request_traced(overlay, store):
    """Store down or failing, every request sampled: Cinder's own
    functional tests pass unchanged."""
    options = profiler_options(store, sampling_rate=1.0)
    result = cinder.run_functional(
        cinder.CINDER_SELECTION, overlay=overlay, env_vars=dict(
            SOURCE, **{"OS_PROFILER__%s" % k.upper(): str(v)
                       for k, v in options.items()}))
    assert result.ok, result.report()
