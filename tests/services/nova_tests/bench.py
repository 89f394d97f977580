"""Server lifecycles timed one by one, for benchmarks/nova_overhead.py.

Runs inside Nova's functional harness (``tests/services/nova.py``)::

    python -m nova_tests.runner --results R \\
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

Environment (the same as cinder_tests.bench):

* ``STACKTRAIL_BENCH_DURATIONS`` (required): a file that gets one JSON line
  per counted lifecycle, ``{"total": s, "post": s, "active": s,
  "delete": s, "gone": s, "cpu": s, "main_cpu": s, "gets": n,
  "gc": [s, s, s]}``: seconds
  from the POST's start to the end of each phase (``total`` is ``gone``),
  the CPU time the process spent meanwhile, all its threads (``cpu``) and
  the main thread alone (``main_cpu``: the eventlet hub, where every
  service and the client run; the rest is other OS threads, e.g. a
  flusher), the number of status GETs, and the seconds spent in the
  garbage collector by generation (``gc``: [gen0, gen1, gen2]);
* ``STACKTRAIL_BENCH_ITERATIONS`` (default 10): counted lifecycles, back
  to back (without ``STACKTRAIL_BENCH_CONTROL``);
  ``STACKTRAIL_BENCH_WARMUP`` (default 2): lifecycles run first and not
  written;
* ``STACKTRAIL_BENCH_WAIT``: ``notification`` (default) or ``poll``, above;
  ``STACKTRAIL_BENCH_POLL`` (default 0.005): seconds between two status
  GETs;
* ``STACKTRAIL_BENCH_RPC_POLL`` (default 0.002): the longest pause of the
  fake RPC transport's listeners between two looks at their queues
  (oslo.messaging's fake driver sleeps 50 ms there, which rounds every
  cast's delivery up to the next look; ``0.05`` keeps it as shipped);
* ``STACKTRAIL_BENCH_CONTROL``: a directory holding two FIFOs, ``go``
  and ``done``, for taking turns with other processes (see ``Turns``);
  unset, the counted lifecycles run back to back;
* ``STACKTRAIL_BENCH_SIGN``: unset, nothing is signed; ``stacktrail`` or
  ``osprofiler``, the POST and the DELETE of each lifecycle carry the
  headers of a new trace made by that library's
  ``profiler.init(STACKTRAIL_BENCH_KEY)`` and ``web.get_trace_id_headers()``
  before the lifecycle's clock starts (the status GETs are never signed); each
  trace id goes to the file ``STACKTRAIL_BENCH_IDS``, one per line.

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
