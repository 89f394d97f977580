"""Probes that measure facts about Nova's functional harness.

Each probe attaches what it saw as a JSON detail (``attached`` in the
harness result); tests/services/test_nova_harness.py checks the facts the
stacktrail adapter relies on and /tmp/nova_notes.md reports them.

* ``OverlayProbe``: stacktrail installed by ``envs.stacktrail_overlay`` is
  the one imported here, with its entry points (skips unless
  ``STACKTRAIL_OVERLAY`` names the overlay directory).
* ``ConfigSourceProbe``: an ``oslo.config.driver`` selected only by
  environment variables is opened by ``CONF()`` inside Nova's ConfFixture
  (skips unless ``OS_DEFAULT__CONFIG_SOURCE`` is set).
* ``WhereThingsRunProbe``: for one server boot and delete, which thread or
  greenthread runs each stage, whether a ContextVar set by the test
  reaches it, which RPC context keys the messaging driver sees, and which
  database engines the request touches.
"""

# nova.tests first: it applies (or forbids) eventlet's monkey patch.
from nova.tests.functional import integrated_helpers  # noqa: I100

import contextvars
import functools
import importlib.metadata
import json
import os
import sys
import threading
import time

import testtools
from testtools import content

import nova.conf
from nova import context as nova_context
from nova import test
from nova import utils
from nova.db.api import api as api_db_api
from nova.db.main import api as main_db_api

CONF = nova.conf.CONF

#: Set by the test thread before the API request; read by every stage.
PROBE = contextvars.ContextVar("stacktrail_probe", default=None)


def _attach_json(case, name, data):
    case.addDetail(name, content.text_content(
        json.dumps(data, indent=1, sort_keys=True, default=str)))


class OverlayProbe(testtools.TestCase):

    def test_overlay_is_imported(self):
        overlay = os.environ.get("STACKTRAIL_OVERLAY")
        if not overlay:
            self.skipTest("STACKTRAIL_OVERLAY is not set")
        import stacktrail
        self.assertTrue(stacktrail.__file__.startswith(overlay),
                        stacktrail.__file__)
        points = {
            group: sorted(ep.name for ep in importlib.metadata.entry_points(
                group=group) if ep.value.startswith("stacktrail"))
            for group in ("paste.filter_factory", "oslo.config.opts",
                          "oslo.config.driver", "stacktrail.drivers")}
        self.assertIn("stacktrail", points["paste.filter_factory"])
        _attach_json(self, "overlay", {"stacktrail": stacktrail.__file__,
                                       "entry_points": points})


class ConfigSourceProbe(test.NoDBTestCase):
    """Nova's TestCase.setUp parses the configuration (ConfFixture ->
    nova.config.parse_args([]) -> CONF([])): a config source named in the
    environment is opened there, before any service starts."""

    def setUp(self):
        if not os.environ.get("OS_DEFAULT__CONFIG_SOURCE"):
            self.skipTest("OS_DEFAULT__CONFIG_SOURCE is not set")
        from nova_tests import config_source
        self.source = config_source
        self.opened_before = len(config_source.OPENED)
        super().setUp()

    def _report(self):
        opened = self.source.OPENED[self.opened_before:]
        _attach_json(self, "config_source", {
            "opened_in_this_test": opened,
            "opened_before_this_test": self.source.OPENED[:self.opened_before],
            "nova_conf_id": id(CONF),
            "sources_on_nova_conf": len(CONF._sources),
            "config_source": list(CONF.config_source),
            "options_asked": len(self.source.ASKED),
            "some_options_asked": sorted(set(self.source.ASKED), key=str)[:20],
            "profiler_group_registered": "profiler" in CONF,
            "osprofiler_imported": "osprofiler" in sys.modules,
        })
        return [o for o in opened if o["conf_id"] == id(CONF)]

    def test_a_opened_by_conf_fixture(self):
        opened = self._report()
        self.assertEqual(1, len(opened))
        self.assertTrue(
            any("nova/config.py" in line for line in opened[0]["stack"]),
            opened[0]["stack"])

    def test_b_opened_again_by_the_next_test(self):
        # A second test in the same process parses the config again.
        self.assertEqual(1, len(self._report()))


class WhereThingsRunProbe(integrated_helpers._IntegratedTestBase):
    """Records, for one boot and delete, where each stage runs."""

    CAST_AS_CALL = False

    STAGES = {
        "api ServersController.create":
            "nova.api.openstack.compute.servers.ServersController.create",
        "compute_api API.create": "nova.compute.api.API.create",
        "conductor schedule_and_build_instances":
            "nova.conductor.manager.ComputeTaskManager."
            "schedule_and_build_instances",
        "scheduler select_destinations":
            "nova.scheduler.manager.SchedulerManager.select_destinations",
        "compute build_and_run_instance (RPC handler)":
            "nova.compute.manager.ComputeManager.build_and_run_instance",
        "compute _do_build_and_run_instance (worker)":
            "nova.compute.manager.ComputeManager._do_build_and_run_instance",
        "neutron API.allocate_for_instance":
            "nova.network.neutron.API.allocate_for_instance",
        "driver FakeDriver.spawn": "nova.virt.fake.FakeDriver.spawn",
        "placement GET (report client)":
            "nova.scheduler.client.report.SchedulerReportClient.get",
        "compute_api API.delete": "nova.compute.api.API.delete",
        "compute terminate_instance":
            "nova.compute.manager.ComputeManager.terminate_instance",
        "driver FakeDriver.destroy": "nova.virt.fake.FakeDriver.destroy",
    }

    def setUp(self):
        super().setUp()
        self.seen = []
        self.sends = []
        self.test_thread = threading.get_ident()
        for label, path in self.STAGES.items():
            self._wrap(label, path)
        self._wrap_driver_send()

    def _where(self, label):
        from oslo_context import context as common_context
        current = common_context.get_current()
        return {
            "stage": label,
            "thread": threading.current_thread().name,
            # Under eventlet every greenthread is named MainThread; the
            # ident (the greenlet's) tells them apart.
            "ident": threading.get_ident(),
            "same_thread_as_test": threading.get_ident() == self.test_thread,
            "contextvar": PROBE.get(),
            "oslo_context_request_id": getattr(current, "request_id", None),
        }

    def _wrap(self, label, path):
        module_name, cls_name, attr = path.rsplit(".", 2)
        cls = getattr(sys.modules[module_name], cls_name)
        original = getattr(cls, attr)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if len([s for s in self.seen if s["stage"] == label]) < 2:
                self.seen.append(self._where(label))
            return original(*args, **kwargs)

        self.stub_out(path, wrapper)

    def _wrap_driver_send(self):
        from oslo_messaging._drivers import impl_fake
        original = impl_fake.FakeDriver.send
        sends = self.sends

        def send(driver, target, ctxt, message, *args, **kwargs):
            keys = sorted(ctxt)
            sends.append({
                "topic": target.topic, "server": target.server,
                "method": message.get("method"),
                "call": bool(args[0] if args else
                             kwargs.get("wait_for_reply")),
                "context_keys": (keys if not sends or
                                 keys != sends[0]["context_keys"]
                                 else "same as the first send"),
            })
            return original(driver, target, ctxt, message, *args, **kwargs)

        self.stub_out(
            "oslo_messaging._drivers.impl_fake.FakeDriver.send", send)

    def _engines(self):
        ctxt = nova_context.get_admin_context()
        engines = {"api": str(api_db_api.get_engine().url),
                   "main (untargeted)": str(
                       main_db_api.get_context_manager(ctxt)
                       .writer.get_engine().url)}
        for name, mapping in sorted(self.cell_mappings.items()):
            with nova_context.target_cell(ctxt, mapping) as cctxt:
                engines[name] = str(
                    cctxt.db_connection.writer.get_engine().url)
        return engines

    def test_boot_and_delete(self):
        token = PROBE.set("set-in-test")
        try:
            server = self.api.post_server(
                {"server": self._build_server(name="probe")})
            posted = time.monotonic()
            server = self._wait_for_state_change(server, "ACTIVE")
            active = time.monotonic()
            self._delete_server(server)
        finally:
            PROBE.reset(token)
        stages = {s["stage"] for s in self.seen}
        for label in self.STAGES:
            self.assertIn(label, stages)
        _attach_json(self, "where", {
            "mode": ("threading" if utils.concurrency_mode_threading()
                     else "eventlet"),
            "eventlet_imported": "eventlet" in sys.modules,
            "boot_seconds_to_active_seen": round(active - posted, 3),
            "stages": self.seen,
            "rpc_sends": self.sends,
            "engines": self._engines(),
            "profiler_group_registered": "profiler" in CONF,
            "api_paste_config": CONF.wsgi.api_paste_config,
            "compute_driver": CONF.compute_driver,
            "transport_url": CONF.transport_url,
            # Only when run with the ConfigSourceProbe's environment.
            "config_source_opened": [
                dict(o, nova_conf=o["conf_id"] == id(CONF),
                     stack=o["stack"][-5:])
                for o in getattr(sys.modules.get("nova_tests.config_source"),
                                 "OPENED", [])],
        })
