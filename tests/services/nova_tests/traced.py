"""A server boot and delete, signed as an operator's client signs them.

Run inside the Nova environment by tests/services/test_nova_tracing.py.
Nova is configured only through the oslo.config environment
(``OS_DEFAULT__CONFIG_SOURCE=stacktrail``, ``OS_PROFILER__...``), which its
``ConfFixture`` parses in every test: stacktrail's config source loads the
Nova adapter while Nova parses.

Each test starts a trace with ``STACKTRAIL_TEST_KEY``, signs the POST and
the DELETE with ``web.get_trace_id_headers()`` inside a ``client`` span,
polls untraced, and writes the trace id to ``STACKTRAIL_TEST_IDS``.
"""

import os

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import context

from nova_tests import boot


class TracedBootTest(boot.BootServerTest):

    def _signed(self, call, *args):
        with profiler.Trace("client"):
            return call(*args, headers=web.get_trace_id_headers())

    def boot_and_delete(self):
        prof = profiler.init(os.environ["STACKTRAIL_TEST_KEY"])
        created = self._signed(
            self.api.api_post, "/servers",
            {"server": self._build_server(name="stacktrail-traced")}).body
        server_id = created["server"]["id"]
        trace = context.capture()
        profiler.clean()
        self._wait_for_status(server_id, "ACTIVE")
        with context.restored(trace):
            self._signed(self.api.api_delete, "/servers/%s" % server_id)
        self._wait_until_gone(server_id)
        return prof.get_base_id()

    def test_boot_and_delete(self):
        with open(os.environ["STACKTRAIL_TEST_IDS"], "a") as out:
            out.write(self.boot_and_delete() + "\n")
