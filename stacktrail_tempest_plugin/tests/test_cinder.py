"""Cinder: a volume created is one tree from the API to the volume driver,
``wsgi -> rpc (scheduler, volume service) -> driver``, with the volume
service's SQL under its RPC span."""

import time

from tempest.lib.common.utils import data_utils
from tempest.lib import decorators
from tempest.lib import exceptions

from stacktrail_tempest_plugin.tests import base
from stacktrail_tempest_plugin import traces

CONF = base.CONF
CREATE = traces.Step("driver", function=r"create_volume$")


class CinderTracingTest(base.TracingTest):

    project = "cinder"

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.client = cls.traced_client(
            CONF.volume.catalog_type, CONF.volume.region or
            CONF.identity.region, CONF.volume.endpoint_type)

    def wait_for_status(self, volume_id, status):
        deadline = time.monotonic() + CONF.volume.build_timeout
        while True:
            _, _, body = self.client.call("GET", "volumes/%s" % volume_id)
            current = body["volume"]["status"]
            if current == status:
                return
            if current.startswith("error") or time.monotonic() > deadline:
                self.fail("volume %s is %s, not %s" % (volume_id, current,
                                                       status))
            time.sleep(CONF.volume.build_interval)

    def delete(self, volume_id):
        try:
            self.client.call("DELETE", "volumes/%s" % volume_id)
        except exceptions.NotFound:
            return
        deadline = time.monotonic() + CONF.volume.build_timeout
        while time.monotonic() < deadline:
            try:
                self.client.call("GET", "volumes/%s" % volume_id)
            except exceptions.NotFound:
                return
            time.sleep(CONF.volume.build_interval)

    @decorators.idempotent_id("1c172b69-6a8b-456c-bbd9-f9c17bee09b5")
    def test_volume_create_is_traced_to_the_driver(self):
        ids = traces.Ids.new()
        status, _, body = self.client.call(
            "POST", "volumes",
            {"volume": {"size": CONF.volume.volume_size,
                        "name": data_utils.rand_name("st-trace")}},
            self.signed(ids))
        self.assertEqual(202, status)
        volume_id = body["volume"]["id"]
        self.addCleanup(self.delete, volume_id)
        self.wait_for_status(volume_id, "available")

        trace = self.wait_for_trace(ids.base_id, base.closed_span(CREATE))
        self.assert_sound(trace, ids, self.secrets(self.client))
        root, = [r for r in trace.roots if r.name == "wsgi"]
        self.assertEqual("POST", root.method)
        rpc, driver = self.assert_chain(trace, traces.Step("rpc"), CREATE,
                                        start=root)
        volume = "^%s$" % driver.service
        self.assert_chain(trace, traces.Step("rpc", service=volume),
                          traces.Step("db", service=volume), start=root)
        self.assertGreaterEqual(len(trace.services()), 2, trace.render())
