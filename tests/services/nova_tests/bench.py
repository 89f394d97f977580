"""Server lifecycles timed one by one, for benchmarks/nova_overhead.py.

Runs inside Nova's functional harness (``tests/services/nova.py``)::

    python -m in_service.runner --results R \\
        nova_tests.bench.LifecycleBenchTest.test_lifecycles

``LifecycleBenchTest`` is ``nova_tests.boot.BootServerTest`` (real casts,
``CAST_AS_CALL = False``; the fake virt driver): Nova's base starts the
API, conductor, scheduler, placement and one compute service in this
process once, then the test runs lifecycles one at a time: POST a
server, poll until it is ACTIVE, DELETE it, poll until the API answers 404.
Only the lifecycles are timed, from just before the POST to the 404; the
process start and the services' start are not.

How it waits: everything runs in this one process, so a status GET every
few milliseconds (the usual way, ``nova_tests.boot``) takes a large share
of the very CPU the services need (a GET /servers/{id} costs several ms of
it; with 5 ms polls, nearly half of a lifecycle's CPU is polling:
measured 668 ms against 359 ms, all of it untraced, which would dilute
any cost of tracing).  So each wait first
waits for the compute service's own ``instance.create.end`` /
``instance.delete.end`` versioned notification (Nova's
``NotificationFixture``, which the base installs, wakes the waiter), then
asks the API, polling until it agrees (one GET, normally).
``STACKTRAIL_BENCH_WAIT=poll`` polls the API only.

Environment: see ``in_service.bench``.

Nothing of stacktrail or osprofiler is imported unless signing asks for it.
"""

# nova.tests must be the first import (eventlet's monkey patch).
from nova.tests.functional import integrated_helpers  # noqa: F401,I100

import time

from nova.tests.functional.api import client as api_client

from in_service import bench
from nova_tests import boot

WAIT = bench.WAIT_TIMEOUT


class LifecycleBenchTest(bench.LifecycleBench, boot.BootServerTest):
    """Run with the test id ``nova_tests.bench.LifecycleBenchTest.
    test_lifecycles`` (the class also inherits the one-boot test)."""

    def _poll(self, server_id, status, interval):
        """Poll until the server is ``status`` (None: until it is gone)."""
        deadline = time.monotonic() + WAIT
        while True:
            self.gets += 1
            try:
                server = self.api.get_server(server_id)
            except api_client.OpenStackApiNotFoundException:
                if status is None:
                    return None
                raise
            if status is not None and server["status"] == status:
                return server
            if server["status"] == "ERROR" or time.monotonic() > deadline:
                self.fail("server %s is %s, waiting for %s: %s" % (
                    server_id, server["status"], status or "404", server))
            time.sleep(interval)

    def lifecycle(self, body, headers, interval, notified):
        """One boot + delete; the phases' end times from its start."""
        start = self.start_timing()
        created = self.api.api_post("/servers", body,
                                    headers=dict(headers or {})).body
        t_post = time.perf_counter()
        server_id = created["server"]["id"]
        if notified:
            self.notifier.wait_for_versioned_notifications(
                "instance.create.end", timeout=WAIT)
        self._poll(server_id, "ACTIVE", interval)
        t_active = time.perf_counter()
        self.api.api_delete("/servers/%s" % server_id,
                            headers=dict(headers or {}))
        t_delete = time.perf_counter()
        if notified:
            self.notifier.wait_for_versioned_notifications(
                "instance.delete.end", timeout=WAIT)
        self._poll(server_id, None, interval)
        t_gone = time.perf_counter()
        return self.timings(start, total=t_gone, post=t_post,
                            active=t_active, delete=t_delete, gone=t_gone)

    def test_lifecycles(self):
        # The request body once (building it asks the API for an image
        # and a flavor): every lifecycle sends the same.
        body = {"server": self._build_server(name="stacktrail-bench")}
        self.run_lifecycles(
            lambda *args: self.lifecycle(body, *args))
        self.assertEqual([], self.compute.manager.driver.list_instance_uuids())
