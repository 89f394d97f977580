"""Volume lifecycles timed one by one, for benchmarks/cinder_overhead.py.

Run inside the Cinder environment (``tests/services/cinder.py``)::

    python -m in_service.runner --results R \\
        cinder_tests.bench.LifecycleBenchTest.test_lifecycles

``LifecycleBenchTest.test_lifecycles`` starts Cinder's services once (the
functional base's ``setUp``: cinder-volume, cinder-scheduler and the
``osapi_volume`` API in this process, configured by ``_get_flags`` and
``CINDER_HARNESS_FLAGS`` as in ``cinder_tests.volumes``), then runs
lifecycles one at a time: POST a 1 GB volume, wait until the API says
``available``, DELETE it, wait until the API answers 404.  Only the
lifecycles are timed, from just before the POST to the 404; the process
start and the services' start are not.

How it waits: everything runs in this one process, so a status GET every
few milliseconds (the usual way, ``cinder_tests.volumes``) takes a large
share of the very CPU the services need: ~15 % of a lifecycle's CPU
with 5 ms polls (measured: 166 ms against 144 ms), all of it untraced,
which would dilute any cost of tracing.  So each wait first watches for
the volume service's own ``volume.create.end`` / ``volume.delete.end``
notification (Cinder's test base keeps every notification in memory; a
look every 2 ms costs microseconds), then asks the API, polling until it
agrees (one GET, normally).  ``STACKTRAIL_BENCH_WAIT=poll`` polls the API only.

Environment: see ``in_service.bench``.

Nothing of stacktrail or osprofiler is imported unless signing asks for it,
so the same test runs with tracing off, armed, triggered or osprofiler's.
"""

import time

from cinder_tests import volumes
from in_service import bench

NOTIFIED_LOOK = 0.002
WAIT_TIMEOUT = bench.WAIT_TIMEOUT


class LifecycleBenchTest(bench.LifecycleBench, volumes.VolumeLifecycleTest):
    """Run with the test id ``cinder_tests.bench.LifecycleBenchTest.
    test_lifecycles`` (the class also inherits the one-lifecycle test)."""

    def _notified(self, event_type):
        """Wait until the services have sent ``event_type``."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        notifications = self.notifier.notifications
        while not any(n["event_type"] == event_type for n in notifications):
            if time.monotonic() > deadline:
                self.fail("no %s notification after %ss"
                          % (event_type, WAIT_TIMEOUT))
            time.sleep(NOTIFIED_LOOK)

    def lifecycle(self, headers, interval, notified):
        """One create + delete; the phases' end times from its start."""
        start = self.start_timing()
        created = self.api.api_post(
            "/volumes", {"volume": {"size": 1}},
            headers=dict(headers or {}))["volume"]
        t_post = time.perf_counter()
        if notified:
            self._notified("volume.create.end")
        found = self._wait_volume(created["id"], ("creating",), interval)
        t_available = time.perf_counter()
        self.assertEqual("available", found["status"])
        self.api.api_delete("/volumes/%s" % created["id"],
                            headers=dict(headers or {}))
        t_delete = time.perf_counter()
        if notified:
            self._notified("volume.delete.end")
        self.assertIsNone(self._wait_volume(created["id"], ("deleting",),
                                            interval))
        t_gone = time.perf_counter()
        return self.timings(start, total=t_gone, post=t_post,
                            available=t_available, delete=t_delete,
                            gone=t_gone)

    def test_lifecycles(self):
        self.run_lifecycles(self.lifecycle)
