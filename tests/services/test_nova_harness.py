"""The harness that runs Nova 34's functional tests (tests/services/nova.py).

Proves that our boot test (nova_tests/boot.py) and a selection of Nova's
own functional tests pass inside Nova's harness, in eventlet and native
threading modes; that outcomes, timeouts and environment reach us; and
measures the facts the Nova adapter relies on (nova_tests/probes.py).

The first run builds the Nova environment (about a minute, cached under
~/.cache/stacktrail/envs).  A run of one module costs about 4 s of process
start plus 2-3 s per server boot test.  Timings are printed (``-s``) and
recorded as junit properties.
"""

import json

import pytest

from tests.services import envs
from tests.services import nova

pytestmark = pytest.mark.timeout(1200)

# Small, quick and central: the plain boot/delete test, plus two modules.
NOVA_OWN = [
    "nova.tests.functional.test_servers.ServersTest."
    "test_create_and_delete_server",
    "nova.tests.functional.test_server_faults",
    "nova.tests.functional.test_images",
]
BOOT_TESTS = [
    "nova_tests.boot.BootServerTest.test_boot_and_delete",
    "nova_tests.boot.BootServerCastAsCallTest.test_boot_and_delete",
]
MODES = {"eventlet": {}, "threading": nova.THREADING}


def _note(record_property, result, label):
    record_property(label + "_seconds", round(result.duration, 2))
    for test_id, seconds in result.timings().items():
        record_property(test_id, seconds)
    print("\n%s: %.1fs wall; %s" % (label, result.duration, json.dumps(
        result.timings())))


def test_outcomes_reach_the_result(nova_env):
    result = nova.run_functional(
        ["nova_tests.selfcheck", "nova_tests.no_such_module"],
        env_vars={"STACKTRAIL_SELFCHECK": "yes"}, env=nova_env)
    status = {o.id: o.status for o in result.outcomes}
    base = "nova_tests.selfcheck.Outcomes."
    assert status[base + "test_passes"] == "passed", result.report()
    assert status[base + "test_environment"] == "passed", result.report()
    assert status[base + "test_fails"] == "failed"
    assert status[base + "test_errors"] == "errored"
    assert status[base + "test_skips"] == "skipped"
    assert status[base + "test_expected_failure"] == "xfail"
    assert status["nova_tests.no_such_module"] == "errored"
    assert any("BrokenClassFixture" in i and s == "errored"
               for i, s in status.items()), status
    assert "failing on purpose" in result.outcome(base + "test_fails").details
    assert result.outcome(base + "test_passes").attached == {
        "note": "attached by the test"}
    assert result.returncode == 1 and not result.ok
    assert set(result.failed) >= {base + "test_fails"}
    assert base + "test_errors" in result.errored


def test_timeout_kills_the_run(nova_env):
    result = nova.run_functional(
        "nova_tests.selfcheck.Slow", timeout=5, env=nova_env,
        env_vars={"STACKTRAIL_SELFCHECK_SLEEP": "120"})
    assert result.timed_out and not result.ok
    assert result.duration < 60
    assert result.errored == ["<timeout>"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_boot_server_in_nova_harness(nova_env, mode, record_property):
    result = nova.run_functional("nova_tests.boot", env=nova_env,
                                 env_vars=MODES[mode])
    _note(record_property, result, "boot_" + mode)
    assert result.ok, result.report()
    assert sorted(result.passed) == sorted(BOOT_TESTS), result.report()
    for test_id in BOOT_TESTS:
        timings = json.loads(result.outcome(test_id).attached["timings"])
        print("  %s: %s" % (test_id.split(".")[2], timings))
        assert timings["mode"] == mode
        assert timings["boot"] > 0 and timings["delete"] > 0


def test_nova_own_functional_tests(nova_env, record_property):
    result = nova.run_functional(NOVA_OWN, env=nova_env)
    _note(record_property, result, "nova_own")
    assert result.ok, result.report()
    assert len(result.passed) == 4, result.report()
    assert NOVA_OWN[0] in result.passed


@pytest.mark.parametrize("mode", sorted(MODES))
def test_where_a_boot_runs(nova_env, mode, record_property):
    """Facts the adapter builds on (see /tmp/nova_notes.md)."""
    result = nova.run_functional(
        "nova_tests.probes.WhereThingsRunProbe", env=nova_env,
        env_vars=MODES[mode])
    _note(record_property, result, "probe_" + mode)
    assert result.ok, result.report()
    facts = json.loads(result.outcomes[0].attached["where"])
    assert facts["mode"] == mode
    stages = {s["stage"]: s for s in facts["stages"]}
    # The API and the compute API run in the test's own thread (the request
    # goes through wsgi-intercept), so a ContextVar set there is seen.
    for stage in ("api ServersController.create", "compute_api API.create"):
        assert stages[stage]["same_thread_as_test"]
        assert stages[stage]["contextvar"] == "set-in-test"
    # Every RPC server, and the compute's build worker, runs elsewhere and
    # starts with an empty context: nothing follows unless carried.
    for stage in ("conductor schedule_and_build_instances",
                  "scheduler select_destinations",
                  "compute build_and_run_instance (RPC handler)",
                  "compute _do_build_and_run_instance (worker)",
                  "driver FakeDriver.spawn"):
        assert not stages[stage]["same_thread_as_test"], stage
        assert stages[stage]["contextvar"] is None, stage
    sends = [(s["topic"], s["method"], s["call"]) for s in facts["rpc_sends"]]
    assert ("conductor", "schedule_and_build_instances", False) in sends
    assert ("scheduler", "select_destinations", True) in sends
    assert ("compute", "build_and_run_instance", False) in sends
    keys = facts["rpc_sends"][0]["context_keys"]
    assert "trace_info" not in keys and "db_connection" in keys
    assert not facts["profiler_group_registered"]   # no osprofiler
    assert set(facts["engines"]) == {"api", "main (untargeted)", "cell0",
                                     "cell1"}


def test_overlay_and_config_source(nova_env, tmp_path_factory,
                                   record_property):
    """stacktrail from the clone is importable in Nova's process with its
    entry points, and an oslo.config driver selected by environment
    variables alone is opened by Nova's ConfFixture in every test."""
    overlay = envs.stacktrail_overlay(
        tmp_path_factory.mktemp("overlay") / "site", nova_env)
    probe = tmp_path_factory.mktemp("probe")
    dist = probe / "stacktrail_nova_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stacktrail-nova-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[oslo.config.driver]\n"
        "stacktrail_probe = nova_tests.config_source:ProbeDriver\n")
    result = nova.run_functional(
        ["nova_tests.probes.OverlayProbe",
         "nova_tests.probes.ConfigSourceProbe"],
        overlay=overlay, extra_paths=[probe], env=nova_env,
        env_vars={"STACKTRAIL_OVERLAY": str(overlay),
                  "OS_DEFAULT__CONFIG_SOURCE": "stacktrail_probe",
                  "OS_STACKTRAIL_PROBE__DRIVER": "stacktrail_probe"})
    _note(record_property, result, "overlay_config_source")
    assert result.ok, result.report()
    assert len(result.passed) == 3 and not result.skipped, result.report()
    seen = json.loads(result.outcome(
        "nova_tests.probes.ConfigSourceProbe.test_a_opened_by_conf_fixture"
    ).attached["config_source"])
    # Nova's early, bare ConfigOpts in nova/monkey_patch.py opens the source
    # too, before eventlet is imported: the driver module is imported then.
    early = seen["opened_before_this_test"]
    assert early and not early[0]["eventlet_imported"]
    assert any("nova/monkey_patch.py" in line for line in early[0]["stack"])
