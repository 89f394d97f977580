"""``tempest run`` of the plugin's Zaqar tests against a real zaqar-server.

The server is Zaqar 23 (tests/services/zaqar.py) without auth, Redis for
messages and SQLite for queues, traced through the shipped fragment
``etc/zaqar/stacktrail.conf`` into a Redis trace store.  tempest comes from
PyPI in a cached environment (tests/services/envs.py) with this clone
installed beside it, found through its ``tempest.test_plugins`` entry
point as after ``pip install stacktrail``.

The gate must be able to fail: the same run against a server with tracing
switched off, or with a switch that removes the spans the tests expect,
fails, and says why.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.services import envs
from tests.services import tracing
from tests.services import zaqar

ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = ROOT / "etc" / "zaqar" / "stacktrail.conf"
TEMPEST_REQUIREMENTS = ["tempest==47.0.0", "redis>=4.5", "wrapt>=1.14"]
PLUGIN_TESTS = r"^stacktrail_tempest_plugin\."
ZAQAR_TESTS = r"^stacktrail_tempest_plugin\.tests\.test_zaqar\."
SIGNED = ZAQAR_TESTS + "ZaqarTracingTest.test_queue_create_and_message_post"
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def tempest_env():
    try:
        return envs.ensure("tempest", TEMPEST_REQUIREMENTS)
    except envs.EnvUnavailable as exc:
        pytest.skip("tempest environment unavailable: %s" % exc)


@pytest.fixture(scope="module")
def tempest_overlay(stacktrail_overlay):
    """The clone, as installed for zaqar-server: tempest finds the plugin
    there through its entry point."""
    return stacktrail_overlay


@pytest.fixture
def server(tmp_path, redis_url, second_redis_url, zaqar_env,
           stacktrail_overlay):
    """server(**profiler overrides) -> a running traced zaqar-server, whose
    trace store is ``second_redis_url``."""
    running = []

    def start(sections=None, **overrides):
        directory = tmp_path / ("zaqar%d" % len(running))
        directory.mkdir()
        extra = [FRAGMENT]
        if overrides:
            extra.append(zaqar.write_overrides(directory, overrides))
        context = zaqar.zaqar_server(
            directory, redis_url, env=zaqar_env, overlay=stacktrail_overlay,
            extra_conf_files=extra,
            profiler={"connection_string": second_redis_url,
                      "hmac_keys": tracing.KEY}, **(sections or {}))
        running.append(context)
        return context.__enter__()

    yield start
    for context in running:
        context.__exit__(None, None, None)


def write_tempest_conf(directory, endpoint, store, **tracing_options):
    options = {
        "auth_strategy": "noauth",
        "endpoints": "zaqar:%s" % endpoint,
        "hmac_key": tracing.KEY,
        "connection_string": store,
        "services": "zaqar",
        "poll_timeout": 20,
        "poll_interval": 0.2,
        "settle_time": 0.6,
    }
    options.update(tracing_options)
    path = Path(directory) / "tempest.conf"
    path.write_text(zaqar.render_conf({
        "DEFAULT": {"log_file": "tempest.log"},
        "oslo_concurrency": {"lock_path": str(Path(directory) / "locks")},
        "auth": {"use_dynamic_credentials": False},
        "stacktrail_tracing": options,
    }))
    return path


class Run:
    def __init__(self, proc, seconds):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.seconds = seconds

    def total(self, what):
        """The count tempest printed for Passed/Failed/Skipped."""
        found = re.findall(r"- %s: (\d+)" % what, self.output)
        return int(found[-1]) if found else None

    def __repr__(self):
        return "tempest run (exit %s):\n%s" % (
            self.returncode, self.output[-6000:])


def tempest_run(env, overlay, workdir, regex, server_, store, **options):
    workdir = Path(workdir)
    workdir.mkdir(exist_ok=True)
    conf = write_tempest_conf(workdir, server_.url, store, **options)
    started = time.monotonic()
    proc = subprocess.run(
        [env.bin("tempest"), "run", "--config-file", str(conf),
         "--regex", regex, "--concurrency", "1"],
        cwd=str(workdir), env=env.environ(overlay=overlay, HOME=str(workdir)),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL)
    return Run(proc, time.monotonic() - started)


def test_the_plugin_is_found_by_tempest(tempest_env, tempest_overlay,
                                        tmp_path):
    proc = subprocess.run(
        [tempest_env.bin("tempest"), "list-plugins"], cwd=str(tmp_path),
        env=tempest_env.environ(overlay=tempest_overlay, HOME=str(tmp_path)),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stacktrail_tempest_plugin.plugin:StacktrailTempestPlugin" in \
        proc.stdout


# devstack's Zaqar (ZAQAR_BACKEND=redis): pooling on, the configured Redis
# store as the virtual pool, SQL for queues and the catalogue.
DEVSTACK_LAYOUT = {"DEFAULT": {"pooling": True, "unreliable": True},
                   "pooling:catalog": {"enable_virtual_pool": True}}


@pytest.mark.parametrize("sections", [None, DEVSTACK_LAYOUT],
                         ids=["standalone", "devstack-pooled"])
def test_tempest_run_passes_against_a_traced_zaqar(
        server, tempest_env, tempest_overlay, tmp_path, second_redis_url,
        sections):
    traced = server(sections)
    run = tempest_run(tempest_env, tempest_overlay, tmp_path / "run",
                      PLUGIN_TESTS, traced, second_redis_url)
    assert run.returncode == 0, run
    # Cinder's and Nova's tests load and skip: not in "services" here.
    assert (run.total("Passed"), run.total("Failed"),
            run.total("Skipped")) == (4, 0, 2), run
    assert re.search(r"CinderTracingTest\) \.\.\. SKIPPED: cinder is not",
                     run.output), run


def test_a_trusted_traceparent_alone_is_traced(
        server, tempest_env, tempest_overlay, tmp_path, second_redis_url):
    """Services that trust W3C traceparent: the same test now checks that
    the traceparent alone started the trace, under the caller's span."""
    trusting = server(trust_traceparent=True)
    run = tempest_run(tempest_env, tempest_overlay, tmp_path / "run",
                      ZAQAR_TESTS + "ZaqarTracingTest.test_traceparent",
                      trusting, second_redis_url, trust_traceparent=True)
    assert run.returncode == 0, run
    assert run.total("Passed") == 1, run
    # ... and a gate told to expect untrusted traceparents fails there.
    run = tempest_run(tempest_env, tempest_overlay, tmp_path / "run2",
                      ZAQAR_TESTS + "ZaqarTracingTest.test_traceparent",
                      trusting, second_redis_url, trust_traceparent=False)
    assert run.returncode != 0 and run.total("Failed") == 1, run
    assert re.search(r"Expected 0, got \d+|0 != \d+", run.output), run


@pytest.mark.parametrize("overrides, reason", [
    ({"enabled": False}, r"after \d+ s the store does not hold the expected "
                         r"trace"),
    ({"trace_redis": False}, r"no chain Step\('\.\+_message_controller'\) "
                             r"-> Step\('redis\|db\|mongodb'\)"),
], ids=["enabled-false", "trace_redis-false"])
def test_tempest_run_fails_when_the_spans_are_gone(
        server, tempest_env, tempest_overlay, tmp_path, second_redis_url,
        overrides, reason):
    untraced = server(**overrides)
    run = tempest_run(tempest_env, tempest_overlay, tmp_path / "run",
                      SIGNED, untraced, second_redis_url, poll_timeout=4)
    assert run.returncode != 0, run
    assert run.total("Failed") == 1, run
    assert re.search(reason, run.output), run
