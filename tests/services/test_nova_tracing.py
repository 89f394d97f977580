"""A real Nova traced from configuration alone, in its own functional
harness: wsgi -> compute_api -> conductor -> scheduler -> compute -> driver,
with db spans of every cell and http calls to placement."""

import pytest

from stacktrail.drivers import base
from tests.services import nova
from tests.services import tracing

FLAGS = ("trace_wsgi", "trace_rpc", "trace_drivers", "trace_sqlalchemy",
         "trace_requests")
TRACED = "nova_tests.traced.TracedBootTest.test_boot_and_delete"


@pytest.fixture(scope="module")
def overlay(nova_overlay):
    return nova_overlay


@pytest.fixture(scope="module")
def osprofiler_overlay(nova_env, tmp_path_factory):
    """osprofiler installed beside Nova too (it is an optional extra)."""
    import subprocess
    target = tmp_path_factory.mktemp("osprofiler") / "site"
    subprocess.run([nova_env.python, "-m", "pip", "install", "-q",
                    "--no-deps", "--target", str(target), "osprofiler==4.4.0",
                    "prettytable"], check=True, timeout=300,
                   capture_output=True)
    return target


def environment(store, **changes):
    """The oslo.config environment that switches Nova's tracing on."""
    options = {"enabled": True, "hmac_keys": tracing.KEY,
               "connection_string": store}
    options.update({flag: True for flag in FLAGS})
    options.update(changes)
    env = {"OS_DEFAULT__CONFIG_SOURCE": "stacktrail",
           "OS_STACKTRAIL__DRIVER": "stacktrail",
           "OS_STACKTRAIL__ADAPTER": "nova"}
    env.update({"OS_PROFILER__%s" % name.upper(): str(value)
                for name, value in options.items()})
    return env


def run_traced(overlay, tmp_path, tests=TRACED, extra_env=None, **changes):
    store = "file://%s" % (tmp_path / "traces.jsonl")
    ids = tmp_path / "ids"
    env = environment(store, **changes)
    env.update(STACKTRAIL_TEST_KEY=tracing.KEY, STACKTRAIL_TEST_IDS=str(ids))
    env.update(extra_env or {})
    result = nova.run_functional(tests, overlay=overlay, env_vars=env)
    assert result.ok, result.report()
    return store, ids.read_text().split()


def functions(spans, name, method):
    return [m for m in spans.values() if m["name"] == name + "-start" and
            m["info"]["function"]["name"].endswith("." + method)]


def rpc_server(spans, method):
    return [m for m in spans.values() if m["name"] == "rpc-start" and
            m["info"]["rpc"] == {"method": method, "type": "server",
                                 **{k: v for k, v in m["info"]["rpc"].items()
                                    if k not in ("method", "type")}}]


@pytest.mark.parametrize("mode", ["eventlet", "threading", "osprofiler"])
def test_boot_is_one_tree(overlay, osprofiler_overlay, tmp_path, mode):
    """Under eventlet and native threads, and with osprofiler installed
    (then Nova calls it itself, and stacktrail takes it over)."""
    paths = [overlay, osprofiler_overlay] if mode == "osprofiler" \
        else overlay
    store, (base_id,) = run_traced(
        paths, tmp_path, extra_env=nova.THREADING if mode == "threading"
        else None)
    found = tracing.wait_for_messages(store, base_id)
    assert tracing.unclosed(found) == []
    spans = tracing.starts(found)

    spawn, = functions(spans, "driver", "spawn")
    assert tracing.chain(spans, spawn) == [
        "client@runner", "http@runner", "wsgi@osapi_compute",
        "compute_api@osapi_compute",
        "rpc@osapi_compute",           # cast to the conductor
        "rpc@nova-conductor",          # ... served there
        "rpc@nova-conductor",          # cast to the compute service
        "rpc@nova-compute",            # ... served there
        "driver@nova-compute"]         # in the compute's build pool
    select, = rpc_server(spans, "select_destinations")
    assert tracing.chain(spans, select)[-3:] == [
        "rpc@nova-conductor", "rpc@nova-conductor", "rpc@nova-scheduler"]
    # The scheduler asks placement over HTTP.
    placement = [m for m in spans.values() if m["name"] == "http-start" and
                 m["service"] == "nova-scheduler"]
    assert any("allocation_candidates" in m["info"]["requests"]["path"]
               for m in placement)
    # Statements of the API database and of the cell database (only a
    # cell database has an instances table).
    statements = [m["info"]["db"]["statement"] for m in spans.values()
                  if m["name"] == "db-start"]
    assert any(s.startswith("INSERT INTO instances ") for s in statements)
    assert any(s.startswith("INSERT INTO build_requests ")
               for s in statements)
    destroy, = functions(spans, "driver", "destroy")
    assert tracing.chain(spans, destroy)[-2:] == ["rpc@nova-compute",
                                                  "driver@nova-compute"]
    text = str(found)
    assert tracing.KEY not in text and "admin_password" not in text


def test_boots_at_once_stay_in_their_own_traces(overlay, tmp_path):
    """Work handed to green threads and pools never lands in another
    request's trace, nor records an untraced request's."""
    store, base_ids = run_traced(
        overlay, tmp_path, "nova_tests.traced.TracedBootTest."
        "test_boots_at_once")
    assert len(base_ids) == 2
    servers = set()
    for base_id in base_ids:
        found = tracing.wait_for_messages(store, base_id)
        assert tracing.unclosed(found) == []
        spans = tracing.starts(found)
        assert len(functions(spans, "driver", "spawn")) == 1
        assert len(functions(spans, "driver", "destroy")) == 1
        assert len(rpc_server(spans, "build_and_run_instance")) == 1
        assert len(rpc_server(spans, "select_destinations")) == 1
        deletes = [m["info"]["request"]["path"] for m in spans.values()
                   if m["name"] == "wsgi-start" and
                   m["info"]["request"]["method"] == "DELETE"]
        assert len(deletes) == 1
        servers.add(deletes[0])
    assert len(servers) == 2   # each trace deleted its own server
    # Nothing of the untraced boot was recorded in any trace.
    every = base.get_driver(store).list_traces()
    assert sorted(t["base_id"] for t in every) == sorted(base_ids)


FLAG_SPANS = {"trace_wsgi": {"wsgi"}, "trace_rpc": {"rpc"},
              "trace_drivers": {"driver"}, "trace_sqlalchemy": {"db"},
              "trace_requests": {"http", "neutron_api", "nova_image"}}


@pytest.fixture(scope="module")
def everything(overlay, tmp_path_factory):
    store, (base_id,) = run_traced(overlay, tmp_path_factory.mktemp("all"))
    return set(tracing.span_names(tracing.wait_for_messages(store, base_id)))


@pytest.mark.parametrize("flag", sorted(FLAG_SPANS))
def test_each_flag_removes_exactly_its_spans(overlay, tmp_path, everything,
                                             flag):
    store, (base_id,) = run_traced(overlay, tmp_path, **{flag: False})
    names = set(tracing.span_names(tracing.wait_for_messages(store, base_id)))
    assert FLAG_SPANS[flag] <= everything
    assert names == everything - FLAG_SPANS[flag]


SELECTION = ["nova.tests.functional.test_servers.ServersTest."
             "test_create_and_delete_server",
             "nova.tests.functional.test_server_faults",
             "nova.tests.functional.test_images"]


@pytest.mark.parametrize("store", ["agent:///nonexistent/agent.sock",
                                   "file:///proc/not-writable.jsonl"])
def test_novas_own_tests_pass_with_every_request_traced(overlay, store):
    """Store down or failing, every request sampled: Nova's own
    functional tests pass unchanged."""
    result = nova.run_functional(SELECTION, overlay=overlay, env_vars=(
        environment(store, sampling_rate=1.0)))
    assert result.ok, result.report()
