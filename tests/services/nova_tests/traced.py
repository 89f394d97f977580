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

    def test_boots_at_once(self):
        """Two traced boots and an untraced one posted back to back: their
        builds run at the same time in the conductor's and the compute's
        green threads and pools."""
        key = os.environ["STACKTRAIL_TEST_KEY"]
        booted = []   # (server id, its trace or None, base id or None)
        for name in ("stacktrail-one", "stacktrail-two", "untraced"):
            body = {"server": self._build_server(name=name)}
            if name == "untraced":
                created = self.api.api_post("/servers", body).body
                booted.append((created["server"]["id"], None, None))
                continue
            prof = profiler.init(key)
            created = self._signed(self.api.api_post, "/servers", body).body
            booted.append((created["server"]["id"], context.capture(),
                           prof.get_base_id()))
            profiler.clean()
        for server_id, _, _ in booted:
            self._wait_for_status(server_id, "ACTIVE")
        for server_id, trace, _ in booted:
            if trace is None:
                self.api.api_delete("/servers/%s" % server_id)
                continue
            with context.restored(trace):
                self._signed(self.api.api_delete, "/servers/%s" % server_id)
        for server_id, _, _ in booted:
            self._wait_until_gone(server_id)
        with open(os.environ["STACKTRAIL_TEST_IDS"], "a") as out:
            out.writelines(base_id + "\n" for _, _, base_id in booted
                           if base_id)
