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

import gc
import importlib
import json
import os
import time

import fixtures
from nova.tests.functional.api import client as api_client

from nova_tests import boot

DURATIONS_ENV = "STACKTRAIL_BENCH_DURATIONS"
ITERATIONS_ENV = "STACKTRAIL_BENCH_ITERATIONS"
WARMUP_ENV = "STACKTRAIL_BENCH_WARMUP"
WAIT_ENV = "STACKTRAIL_BENCH_WAIT"
POLL_ENV = "STACKTRAIL_BENCH_POLL"
RPC_POLL_ENV = "STACKTRAIL_BENCH_RPC_POLL"
CONTROL_ENV = "STACKTRAIL_BENCH_CONTROL"
SIGN_ENV = "STACKTRAIL_BENCH_SIGN"
KEY_ENV = "STACKTRAIL_BENCH_KEY"
IDS_ENV = "STACKTRAIL_BENCH_IDS"
WAIT = 60.0


def signer(environ=os.environ):
    """A function returning (trace id, headers) of a new signed trace, or
    None when ``STACKTRAIL_BENCH_SIGN`` is unset."""
    library = environ.get(SIGN_ENV)
    if not library:
        return None
    if library not in ("stacktrail", "osprofiler"):
        raise ValueError("%s=%r: stacktrail or osprofiler"
                         % (SIGN_ENV, library))
    profiler = importlib.import_module(library + ".profiler")
    web = importlib.import_module(library + ".web")
    key = environ[KEY_ENV]

    def sign():
        prof = profiler.init(key)
        try:
            return prof.get_base_id(), web.get_trace_id_headers()
        finally:
            profiler.clean()   # the client itself records nothing
    return sign


class Turns:
    """Lifecycles on a coordinator's word, through two FIFOs in
    ``directory``: this process writes ``ready`` to ``done`` once its
    services run and its warm-up is over, then reads ``go``: ``run N``
    asks for N lifecycles (answered with ``done``), ``stop`` (or the end
    of the file) ends the test.

    The reads are plain blocking reads (eventlet does not patch the
    built-in ``open``): while it waits for its turn the whole eventlet hub
    waits, so this process's services do nothing, neither loading the
    machine while another process is timed nor moving their own
    left-over work into another's turn (OS threads, such as a trace
    flusher, still run).
    """

    def __init__(self, directory):
        self._done = open(os.path.join(directory, "done"), "w", buffering=1)
        self._done.write("ready\n")
        self._go = open(os.path.join(directory, "go"), "r")

    def __iter__(self):
        while True:
            words = self._go.readline().split()
            if not words or words[0] != "run":
                return
            yield int(words[1])

    def done(self):
        self._done.write("done\n")

    def close(self):
        self._go.close()
        self._done.close()


class GcClock:
    """Seconds the process spent in the garbage collector, by generation
    (``gc.callbacks``): tracing allocates, and a collection that lands in a
    lifecycle is part of what it costs."""

    def __init__(self):
        self.seconds = [0.0, 0.0, 0.0]
        self._started = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds[info["generation"]] += (time.perf_counter()
                                                 - self._started)
            self._started = None

    def close(self):
        gc.callbacks.remove(self._callback)


class RpcPollClock:
    """What oslo.messaging's fake driver sees as ``time``: the same clock,
    with its listeners' poll pauses cut to ``pause`` seconds."""

    def __init__(self, pause):
        self.pause = pause

    def time(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(min(seconds, self.pause))   # eventlet's, once patched


class LifecycleBenchTest(boot.BootServerTest):
    """Run with the test id ``nova_tests.bench.LifecycleBenchTest.
    test_lifecycles`` (the class also inherits the one-boot test)."""

    def setUp(self):
        pause = float(os.environ.get(RPC_POLL_ENV, "0.002"))
        self.useFixture(fixtures.MonkeyPatch(
            "oslo_messaging._drivers.impl_fake.time", RpcPollClock(pause)))
        super().setUp()
        self.gets = 0
        self.gc_clock = GcClock()
        self.addCleanup(self.gc_clock.close)

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
        self.notifier.reset()
        self.gets = 0
        cpu0, main0 = time.process_time(), time.thread_time()
        gc0 = list(self.gc_clock.seconds)
        t0 = time.perf_counter()
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
        return {"total": t_gone - t0, "post": t_post - t0,
                "active": t_active - t0, "delete": t_delete - t0,
                "gone": t_gone - t0,
                "cpu": time.process_time() - cpu0,
                "main_cpu": time.thread_time() - main0,
                "gets": self.gets,
                "gc": [b - a for a, b in zip(gc0, self.gc_clock.seconds)]}

    def test_lifecycles(self):
        environ = os.environ
        iterations = int(environ.get(ITERATIONS_ENV, "10"))
        warmup = int(environ.get(WARMUP_ENV, "2"))
        interval = float(environ.get(POLL_ENV, "0.005"))
        notified = environ.get(WAIT_ENV, "notification") == "notification"
        sign = signer(environ)
        # The request body once (building it asks the API for an image
        # and a flavor): every lifecycle sends the same.
        body = {"server": self._build_server(name="stacktrail-bench")}
        durations = open(environ[DURATIONS_ENV], "a")
        self.addCleanup(durations.close)
        ids = open(environ[IDS_ENV], "a") if sign else None
        if ids:
            self.addCleanup(ids.close)

        def run(counted):
            base_id, headers = sign() if sign else (None, None)
            timings = self.lifecycle(body, headers, interval, notified)
            if counted:
                durations.write(json.dumps(timings) + "\n")
                durations.flush()
                if ids:
                    ids.write(base_id + "\n")
                    ids.flush()

        for _ in range(warmup):
            run(False)
        if not environ.get(CONTROL_ENV):
            for _ in range(iterations):
                run(True)
        else:
            turns = Turns(environ[CONTROL_ENV])
            self.addCleanup(turns.close)
            for count in turns:
                for _ in range(count):
                    run(True)
                turns.done()
        self.assertEqual([], self.compute.manager.driver.list_instance_uuids())
