"""Zaqar: a queue created and a message posted, each one tree
``wsgi -> controller -> redis/db/mongodb``, whatever the stores."""

import uuid

from tempest.lib.common.utils import data_utils
from tempest.lib import decorators

from stacktrail_tempest_plugin.tests import base
from stacktrail_tempest_plugin import traces

CONTROLLER = traces.Step(r".+_controller")
MESSAGE_CONTROLLER = traces.Step(r".+_message_controller")
STORAGE = traces.Step(r"redis|db|mongodb")


class ZaqarTracingTest(base.TracingTest):

    project = "zaqar"

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.client = cls.traced_client(
            base.opts().zaqar_catalog_type, base.CONF.identity.region,
            base.opts().endpoint_type,
            default_headers={"Client-ID": str(uuid.uuid4())})

    def create_queue(self, headers):
        name = data_utils.rand_name("st-trace")
        status, _, _ = self.client.call("PUT", "v2/queues/%s" % name, {},
                                        headers)
        self.assertEqual(201, status)
        self.addCleanup(self.client.call, "DELETE", "v2/queues/%s" % name)
        return name

    def post_message(self, queue, headers, body=None):
        status, _, posted = self.client.call(
            "POST", "v2/queues/%s/messages" % queue,
            {"messages": [{"body": body or {"n": 1}, "ttl": 300}]}, headers)
        self.assertEqual(201, status)
        return posted

    def _root(self, trace, method):
        roots = [r for r in trace.roots if r.name == "wsgi" and
                 r.method == method]
        self.assertEqual(1, len(roots), trace.render())
        return roots[0]

    @decorators.idempotent_id("67cbf872-9f7c-4516-baeb-f4ac6c83893e")
    def test_queue_create_and_message_post_are_traced(self):
        """Signed osprofiler headers: two requests, one trace."""
        ids = traces.Ids.new()
        canary = "st-canary-%s" % uuid.uuid4().hex
        headers = self.signed(ids)
        queue = self.create_queue(headers)
        self.post_message(queue, headers, {"canary": canary})

        trace = self.wait_for_trace(
            ids.base_id, base.closed_roots(base.WSGI, 2))
        self.assert_sound(trace, ids, self.secrets(self.client, canary))
        put, post = self._root(trace, "PUT"), self._root(trace, "POST")
        self.assertEqual((201, 201), (put.status, post.status))
        self.assertIn(queue, put.path)
        self.assert_chain(trace, CONTROLLER, STORAGE, start=put)
        self.assert_chain(trace, MESSAGE_CONTROLLER, STORAGE, start=post)
        self.assertTrue(trace.services())

    @decorators.idempotent_id("c483fa2c-a187-4282-af23-da7f42c8380f")
    def test_both_header_formats_make_one_trace(self):
        """osprofiler's headers and a traceparent for the same ids: the
        trace is the signed one and starts under the caller's span."""
        queue = self.create_queue({})
        ids = traces.Ids.new()
        self.post_message(queue, ids.both_headers(base.opts().hmac_key))

        trace = self.wait_for_trace(
            ids.base_id, base.closed_roots(base.WSGI, 1))
        self.assert_sound(trace, ids, self.secrets(self.client))
        post = self._root(trace, "POST")
        self.assertEqual(ids.parent_id, post.parent_id)
        self.assert_chain(trace, MESSAGE_CONTROLLER, STORAGE, start=post)

    @decorators.idempotent_id("412cb2a2-39bc-453a-881d-52149dfbd372")
    def test_traceparent_alone_is_traced_only_when_trusted(self):
        """A sampled W3C traceparent without a signature starts a trace
        only where the services trust it."""
        queue = self.create_queue({})
        ids = traces.Ids.new()

        def post(headers):
            self.post_message(queue, headers)
        post(ids.traceparent_headers())
        if not base.opts().trust_traceparent:
            self.assert_not_traced(ids, post)
            return
        trace = self.wait_for_trace(
            ids.base_id, base.closed_roots(base.WSGI, 1))
        self.assert_sound(trace, ids, self.secrets(self.client))
        root = self._root(trace, "POST")
        self.assertEqual(ids.parent_id, root.parent_id)
        self.assert_chain(trace, MESSAGE_CONTROLLER, STORAGE, start=root)

    @decorators.idempotent_id("d98be580-40d2-472a-9598-d4ec10b6a886")
    def test_a_forged_signature_is_not_traced(self):
        queue = self.create_queue({})
        ids = traces.Ids.new()

        def post(headers):
            self.post_message(queue, headers)
        post(ids.osprofiler_headers("not-" + base.opts().hmac_key))
        self.assert_not_traced(ids, post)
