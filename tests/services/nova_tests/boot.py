"""Boot one server through the whole of Nova, then delete it.

Runs inside Nova's functional test harness (``python -m testtools.run
nova_tests.boot`` or ``tests/services/nova.py``), never under pytest.

The request goes the way a real one does, all in one process:

    API (paste pipeline, wsgi-intercept) -> compute API -> RPC cast to the
    conductor -> RPC call to the scheduler (select_destinations; placement
    over HTTP through wsgi-intercept) -> RPC cast to the compute service
    (build_and_run_instance) -> virt driver (nova.virt.fake) ; neutron,
    glance and cinder are in-process Python fakes.

``BootServerTest`` is the shape the adapter tests take: a subclass of
Nova's own base that only adds configuration.  Configuration is added in
two ways, both shown here:

* ``self.flags(...)`` *before* ``super().setUp()``: overrides survive the
  ``ConfFixture`` that ``nova.test.TestCase.setUp`` installs (it only sets
  defaults and calls ``CONF([])``) and are in place before any service
  starts; they are undone by that fixture's cleanup at the end of the test.
* class attributes that Nova's base reads (``CAST_AS_CALL``, ``ADMIN_API``,
  ``microversion``, ...) and ``compute_driver`` here, which this class
  turns into a flag (``ProviderUsageBaseTestCase`` does the same).

Each test attaches a ``timings`` detail (JSON, seconds) that the harness
reports: ``boot`` from POST /servers to ACTIVE, ``delete`` from DELETE to
404, ``setup`` for everything Nova's base does before the test body.
"""

# nova.tests must be the first import: it applies eventlet's monkey patch
# (or, with OS_NOVA_DISABLE_EVENTLET_PATCHING=true, forbids eventlet).
from nova.tests.functional import integrated_helpers  # noqa: I100

import json
import time

from nova import utils
from nova.tests.functional.api import client as api_client
from testtools import content

POLL = 0.05
WAIT = 60.0


class BootServerTest(integrated_helpers._IntegratedTestBase):
    """POST a server, wait for ACTIVE, DELETE it, wait until it is gone."""

    #: Real casts: the API returns before the conductor, scheduler and
    #: compute run (Nova's default for this base is to turn casts into
    #: calls, which hides the asynchrony a trace has to follow).
    CAST_AS_CALL = False

    #: Turned into ``self.flags(compute_driver=...)`` before the base's
    #: setUp.  Nova loads it as ``nova.virt.<value>``.
    compute_driver = "fake.MediumFakeDriver"

    def setUp(self):
        self.flags(compute_driver=self.compute_driver)
        started = time.monotonic()
        super().setUp()
        self._timings = {"setup": round(time.monotonic() - started, 3)}
        self.addDetail("timings", content.Content(
            content.UTF8_TEXT, lambda: [json.dumps(self._timings).encode()]))

    def _wait_for_status(self, server_id, status):
        deadline = time.monotonic() + WAIT
        while True:
            server = self.api.get_server(server_id)
            if server["status"] == status:
                return server
            if server["status"] == "ERROR" or time.monotonic() > deadline:
                self.fail("server %s is %s, not %s: %s" % (
                    server_id, server["status"], status, server))
            time.sleep(POLL)

    def _wait_until_gone(self, server_id):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                server = self.api.get_server(server_id)
            except api_client.OpenStackApiNotFoundException:
                return
            if server["status"] == "ERROR":
                self.fail("server went to ERROR instead of away: %s" % server)
            time.sleep(POLL)
        self.fail("server %s was not deleted in %ss" % (server_id, WAIT))

    def test_boot_and_delete(self):
        # The flag set before super().setUp() reached the compute service.
        self.assertEqual(self.compute_driver.rsplit(".", 1)[1],
                         type(self.compute.manager.driver).__name__)

        started = time.monotonic()
        created = self.api.post_server(
            {"server": self._build_server(name="stacktrail-boot")})
        server = self._wait_for_status(created["id"], "ACTIVE")
        self._timings["boot"] = round(time.monotonic() - started, 3)

        shown = self.admin_api.get_server(server["id"])
        self.assertEqual("compute", shown["OS-EXT-SRV-ATTR:host"])
        self.assertIn(server["id"],
                      self.compute.manager.driver.list_instance_uuids())

        started = time.monotonic()
        self.api.delete_server(server["id"])
        self._wait_until_gone(server["id"])
        self._timings["delete"] = round(time.monotonic() - started, 3)
        self.assertEqual([], self.compute.manager.driver.list_instance_uuids())
        self._timings["mode"] = (
            "threading" if utils.concurrency_mode_threading() else "eventlet")


class BootServerCastAsCallTest(BootServerTest):
    """The same with Nova's default for the base: every cast is a call."""

    CAST_AS_CALL = True
