"""Nova: a server boot is one tree from the API to the virt driver,
``wsgi -> rpc (conductor, scheduler) -> rpc served by nova-compute ->
driver``."""

import time

from tempest.lib.common.utils import data_utils
from tempest.lib import decorators
from tempest.lib import exceptions

from stacktrail_tempest_plugin.tests import base
from stacktrail_tempest_plugin import traces

CONF = base.CONF
COMPUTE = "^nova-compute$"
SPAWN = traces.Step("driver", service=COMPUTE, function=r"spawn$")
# "networks": "none" needs 2.37: the boot needs no network.
MICROVERSION = {"OpenStack-API-Version": "compute 2.37",
                "X-OpenStack-Nova-API-Version": "2.37"}


class NovaTracingTest(base.TracingTest):

    project = "nova"

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.compute.image_ref or not CONF.compute.flavor_ref:
            raise cls.skipException("[compute] image_ref and flavor_ref "
                                    "are needed")

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.client = cls.traced_client(
            CONF.compute.catalog_type, CONF.compute.region or
            CONF.identity.region, CONF.compute.endpoint_type,
            default_headers=MICROVERSION)

    def wait_for_status(self, server_id, status):
        deadline = time.monotonic() + CONF.compute.build_timeout
        while True:
            _, _, body = self.client.call("GET", "servers/%s" % server_id)
            current = body["server"]["status"]
            if current == status:
                return
            if current == "ERROR" or time.monotonic() > deadline:
                self.fail("server %s is %s, not %s" % (server_id, current,
                                                       status))
            time.sleep(CONF.compute.build_interval)

    def delete(self, server_id):
        try:
            self.client.call("DELETE", "servers/%s" % server_id)
        except exceptions.NotFound:
            return
        deadline = time.monotonic() + CONF.compute.build_timeout
        while time.monotonic() < deadline:
            try:
                self.client.call("GET", "servers/%s" % server_id)
            except exceptions.NotFound:
                return
            time.sleep(CONF.compute.build_interval)

    @decorators.idempotent_id("180c432a-f562-43e8-9c87-05f4291046ce")
    def test_server_boot_is_traced_to_the_virt_driver(self):
        ids = traces.Ids.new()
        status, _, body = self.client.call(
            "POST", "servers",
            {"server": {"name": data_utils.rand_name("st-trace"),
                        "imageRef": CONF.compute.image_ref,
                        "flavorRef": CONF.compute.flavor_ref,
                        "networks": "none"}},
            self.signed(ids))
        self.assertEqual(202, status)
        server_id = body["server"]["id"]
        self.addCleanup(self.delete, server_id)
        self.wait_for_status(server_id, "ACTIVE")

        trace = self.wait_for_trace(ids.base_id, base.closed_span(SPAWN))
        self.assert_sound(trace, ids, self.secrets(self.client))
        root, = [r for r in trace.roots if r.name == "wsgi"]
        self.assertEqual("POST", root.method)
        self.assert_chain(trace, traces.Step("rpc"),
                          traces.Step("rpc", service=COMPUTE), SPAWN,
                          start=root)
        self.assertIn("nova-compute", trace.services())
        self.assertGreaterEqual(len(trace.services()), 2, trace.render())
