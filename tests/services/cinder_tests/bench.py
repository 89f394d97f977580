"""Volume lifecycles timed one by one, for benchmarks/cinder_overhead.py.

Run inside the Cinder environment (``tests/services/cinder.py``)::

    python -m cinder_tests.runner --results=R \\
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

Environment:

* ``STACKTRAIL_BENCH_DURATIONS`` (required): a file that gets one JSON line
  per counted lifecycle, ``{"total": s, "post": s, "available": s,
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
  written (the first requests of a process fill caches);
* ``STACKTRAIL_BENCH_WAIT``: ``notification`` (default) or ``poll``, above;
  ``STACKTRAIL_BENCH_POLL`` (default 0.005): seconds between two status
  GETs;
* ``STACKTRAIL_BENCH_RPC_POLL`` (default 0.002): the longest pause of the
  fake RPC transport's listeners between two looks at their queues.
  oslo.messaging's fake driver (the harness's transport) sleeps 50 ms
  there, so each of the lifecycle's three casts waits 0-50 ms for the next
  look: the lifecycle's time then moves in steps of ~50 ms whatever the
  work, and a difference of a few ms is lost in them.  ``0.05`` keeps the
  harness as shipped;
* ``STACKTRAIL_BENCH_CONTROL``: a directory holding two FIFOs, ``go``
  and ``done``, for taking turns with other processes (see ``Turns``);
  unset, the counted lifecycles run back to back;
* ``STACKTRAIL_BENCH_SIGN``: unset, every request is unsigned; ``stacktrail``
  or ``osprofiler``, the POST and the DELETE of each lifecycle carry the
  ``X-Trace-Info``/``X-Trace-HMAC`` headers of a new trace made by that
  library's ``profiler.init(STACKTRAIL_BENCH_KEY)`` and
  ``web.get_trace_id_headers()`` (the bytes are the same for both), made
  before the lifecycle's clock starts; the status GETs are never signed.
  Each trace id goes to the file ``STACKTRAIL_BENCH_IDS``, one per line.

Nothing of stacktrail or osprofiler is imported unless signing asks for it,
so the same test runs with tracing off, armed, triggered or osprofiler's.
"""

import time

from cinder.tests.functional.api import client

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

    def _poll(self, volume_id, while_status, interval):
        """Like ``_wait_volume``, polling every ``interval`` seconds."""
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

    def lifecycle(self, headers, interval, notified):
        """One create + delete; the phases' end times from its start."""
        start = self.start_timing()
        created = self.api.api_post(
            "/volumes", {"volume": {"size": 1}},
            headers=dict(headers or {}))["volume"]
        t_post = time.perf_counter()
        if notified:
            self._notified("volume.create.end")
        found = self._poll(created["id"], ("creating",), interval)
        t_available = time.perf_counter()
        self.assertEqual("available", found["status"])
        self.api.api_delete("/volumes/%s" % created["id"],
                            headers=dict(headers or {}))
        t_delete = time.perf_counter()
        if notified:
            self._notified("volume.delete.end")
        self.assertIsNone(self._poll(created["id"], ("deleting",), interval))
        t_gone = time.perf_counter()
        return self.timings(start, total=t_gone, post=t_post,
                            available=t_available, delete=t_delete,
                            gone=t_gone)

    def test_lifecycles(self):
        self.run_lifecycles(self.lifecycle)
