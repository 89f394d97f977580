"""The bottleneck where OpenStack hides it: a real Cinder's volume create
and a real Nova's boot, whose critical paths run on through the
scheduler, the volume manager or the compute service, and the driver,
after the API has answered, each span named after the service that ran
it; and the toolkit entry an adapter uses to name that service
when several share a process."""

import pytest
from oslo_config import cfg

from stacktrail import initializer
from stacktrail import notifier
from stacktrail import profiler
from stacktrail import runtime
from stacktrail.adapters import toolkit
from stacktrail.common import settings
from stacktrail.common import sink
from stacktrail.report import analysis
from stacktrail.report import tree
from tests.services import test_nova_tracing as nova_tracing
from tests.services import tracing
from tests.services.test_cinder_tracing import run_traced

KEY = "bottleneck-test-key"


@pytest.fixture
def two_services(tmp_path):
    """One process initialised as cinder-scheduler then osapi_volume
    (the default from then on), recording into a file store."""
    store = tmp_path / "traces.jsonl"
    path = tmp_path / "cinder.conf"
    path.write_text("[profiler]\nenabled = true\nhmac_keys = %s\n"
                    "connection_string = file://%s\n" % (KEY, store))
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="cinder", prog="cinder")
    for service in ("cinder-scheduler", "osapi_volume"):
        initializer.init_from_conf(conf, None, "cinder", service, "ctl-1")
    yield "file://%s" % store
    profiler.clean()
    runtime.reset()
    notifier.set(sink.NoopSink())
    notifier.clear_notifier_cache()
    settings.current = settings.Settings()


def flush(*services):
    for service, host in services:
        runtime.sink_for(service, host).flush(timeout=10)


def test_serving_names_the_service_that_ran_the_span(two_services):
    api = profiler.init(KEY)
    with profiler.Trace("wsgi"):
        carried = api.get_id()
    profiler.clean()
    # The cast is served here by cinder-volume on another host, whatever
    # service was initialised last.
    with toolkit.serving("cinder-volume", "stor-7"):
        profiler.init(KEY, base_id=api.get_base_id(), parent_id=carried)
        with profiler.Trace("rpc"):
            pass
        profiler.clean()
    profiler.init(KEY, base_id=api.get_base_id(), parent_id=carried)
    with profiler.Trace("db"):
        pass
    profiler.clean()
    flush(("osapi_volume", "ctl-1"), ("cinder-volume", "stor-7"))
    found = tracing.messages(two_services, api.get_base_id())
    where = {m["name"]: (m["service"], m["info"]["host"]) for m in found}
    assert where == {"wsgi-start": ("osapi_volume", "ctl-1"),
                     "wsgi-stop": ("osapi_volume", "ctl-1"),
                     "rpc-start": ("cinder-volume", "stor-7"),
                     "rpc-stop": ("cinder-volume", "stor-7"),
                     "db-start": ("osapi_volume", "ctl-1"),
                     "db-stop": ("osapi_volume", "ctl-1")}


def after_the_response(store, base_id, request):
    """The report of a recorded trace, the critical path's (name, service)
    that started after the API answered ``request`` ("POST /v3/volumes"),
    and the driver call on the path named ``method``, which must be one
    of them."""
    report = tree.build(tracing.wait_for_messages(store, base_id))
    info = report["info"]
    wsgi, = [node for node, _ in analysis.walk(report)
             if node["info"]["name"] == "wsgi"
             and node["info"]["detail"].startswith(request)]
    answered = wsgi["info"]["finished_us"]
    path = report["critical_path"]
    assert info["end_to_end_us"] > info["response_us"]
    # Transaction statements are folded, not on the path; every
    # microsecond of the end-to-end time is someone's.
    assert not any(e["detail"].startswith("BEGIN") for e in path)
    assert sum(e["contribution_us"] for e in path) + info["untraced_us"] \
        == info["end_to_end_us"]
    return [e for e in path if e["started_us"] > answered]


def driver_calls(entries, method):
    return [e["service"] for e in entries if e["name"] == "driver"
            and e["detail"].endswith("." + method)]


def test_cinder_create_path_runs_past_the_response(
        cinder_overlay, tmp_path):
    store, (base_id,) = run_traced(cinder_overlay, tmp_path)
    after = after_the_response(store, base_id, "POST /v3/volumes")
    # The create's path goes on after the API answered: the scheduler,
    # the volume manager and its driver, each named after its service.
    served = {(e["name"], e["service"]) for e in after}
    assert {("rpc", "cinder-scheduler"), ("rpc", "cinder-volume")} <= served
    assert driver_calls(after, "create_volume") == ["cinder-volume"]


def test_nova_boot_path_runs_past_the_response(nova_overlay, tmp_path):
    store, (base_id,) = nova_tracing.run_traced(nova_overlay, tmp_path)
    after = after_the_response(store, base_id, "POST /v2.1/servers")
    # The conductor, then the compute service and its virt driver's spawn.
    served = {(e["name"], e["service"]) for e in after}
    assert {("rpc", "nova-conductor"), ("rpc", "nova-compute")} <= served
    assert driver_calls(after, "spawn") == ["nova-compute"]
