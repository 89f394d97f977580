"""A volume's life through Cinder's own functional harness.

Run inside the Cinder environment (tests/services/cinder.py does it)::

    python -m testtools.run cinder_tests.volumes

``VolumeLifecycleTest`` subclasses Cinder's functional base and adds nothing
but configuration and the test itself.  The base (cinder/tests/functional/
functional_helpers.py ``_FunctionalTestBase.setUp``) starts, in this one
process, a cinder-volume service (FakeLoggingVolumeDriver), a
cinder-scheduler service and the ``osapi_volume`` WSGI API from Cinder's
``api-paste.ini`` on a free port; the test talks HTTP to that API.  So one
create/delete goes API -> scheduler (RPC cast) -> volume manager (RPC cast)
-> driver -> database, the path a trace has to follow.

Configuration is added the way Cinder's own functional tests add it: an
override of ``_get_flags()``, whose ``{name: {'v': value, 'g': group}}``
entries the base applies with ``CONF.set_override`` before any service
starts.  Extra options can also come from the environment, so that a pytest
test can run this class with configuration of its own without writing a
module: ``CINDER_HARNESS_FLAGS`` holds JSON ``{"group": {"name": value}}``
(``"DEFAULT"`` for the default group), e.g.
``{"profiler": {"enabled": true, "hmac_keys": "k"}}``.

Timings (seconds, from the test's point of view) are attached to each test
as the ``timings`` detail (JSON); the runner (``in_service.runner``)
records it.
"""

import json
import os
import time

from oslo_utils import uuidutils
from testtools import content

from cinder.tests.functional.api import client
from cinder.tests.functional import functional_helpers
from cinder.volume import configuration
from cinder.volume import volume_utils

FLAGS_ENV = "CINDER_HARNESS_FLAGS"
WAIT_TIMEOUT = 60.0
POLL_INTERVAL = 0.05


def env_flags(environ=os.environ):
    """The ``_get_flags`` entries that ``CINDER_HARNESS_FLAGS`` asks for."""
    raw = environ.get(FLAGS_ENV)
    if not raw:
        return {}
    flags = {}
    for group, options in json.loads(raw).items():
        for name, value in options.items():
            entry = {"v": value}
            if group not in (None, "", "DEFAULT"):
                entry["g"] = group
            flags[name] = entry
    return flags


class VolumeLifecycleTest(functional_helpers._FunctionalTestBase):
    """Create a volume, wait until available, delete it, wait until gone."""

    def _get_flags(self):
        f = super()._get_flags()
        # The base's TestCase already defaults to this driver
        # (cinder/tests/unit/conf_fixture.py); said again so that the path
        # under test does not depend on that default.
        f["volume_driver"] = {
            "v": "cinder.tests.fake_driver.FakeLoggingVolumeDriver",
            "g": configuration.SHARED_CONF_GROUP}
        f.update(env_flags())
        return f

    gets = 0   # status GETs made (the benchmark reports them)

    def _wait_volume(self, volume_id, while_status, interval=POLL_INTERVAL):
        """Poll every ``interval`` seconds until the volume leaves
        ``while_status``; the volume, or None once it is gone (404)."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            self.gets += 1
            try:
                found = self.api.get_volume(volume_id)
            except client.OpenStackApiException404:
                return None
            if found["status"] not in while_status:
                return found
            if time.monotonic() > deadline:
                self.fail("volume %s still %s after %ss"
                          % (volume_id, found["status"], WAIT_TIMEOUT))
            time.sleep(interval)

    def test_create_and_delete_volume(self):
        t0 = time.monotonic()
        created = self.api.post_volume({"volume": {"size": 1}})
        t_post = time.monotonic()
        volume_id = created["id"]
        self.assertTrue(uuidutils.is_uuid_like(volume_id))

        found = self._wait_volume(volume_id, ("creating",))
        t_available = time.monotonic()
        self.assertIsNotNone(found)
        self.assertEqual("available", found["status"])
        # The scheduler placed it on the volume service this test started
        # (host[@backend]#pool): the request went through both RPC hops.
        self.assertEqual(self.volume.host, volume_utils.extract_host(
            found["os-vol-host-attr:host"], "host"))

        self.api.delete_volume(volume_id)
        t_delete = time.monotonic()
        self.assertIsNone(self._wait_volume(volume_id, ("deleting",)))
        t_gone = time.monotonic()

        self.addDetail("timings", content.json_content({
            "post": t_post - t0,
            "create_until_available": t_available - t0,
            "delete_call": t_delete - t_available,
            "delete_until_gone": t_gone - t_available,
            "total": t_gone - t0,
        }))
