"""Lifecycles timed one by one inside a functional harness, for the
overhead benchmarks (``benchmarks/cinder_overhead.py``,
``benchmarks/nova_overhead.py``).

A project's bench test mixes ``LifecycleBench`` into its own test class
and defines ``lifecycle(headers, interval, notified)``: one create + delete
of its resource, returning the phases' end times (``timings`` adds the
process's CPU and garbage-collector time).

Environment:

* ``STACKTRAIL_BENCH_DURATIONS`` (required): a file that gets one JSON line
  per counted lifecycle, ``{"total": s, "post": s, PHASE: s,
  "delete": s, "gone": s, "cpu": s, "main_cpu": s, "gets": n,
  "gc": [s, s, s]}`` (PHASE: ``available`` for a volume, ``active`` for a
  server): seconds
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
* ``STACKTRAIL_BENCH_WAIT``: ``notification`` (default) or ``poll``
  (each project's ``bench`` module says how it waits);
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
  and ``done``, for taking turns with other processes (``Turns``);
  unset, the counted lifecycles run back to back;
* ``STACKTRAIL_BENCH_CORE``: with ``STACKTRAIL_BENCH_CONTROL``, once the
  warm-up is over, every thread of this process (and any it starts later)
  runs on that core only; the start-up used them all;
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

import gc
import importlib
import json
import os
import time

import fixtures

DURATIONS_ENV = "STACKTRAIL_BENCH_DURATIONS"
ITERATIONS_ENV = "STACKTRAIL_BENCH_ITERATIONS"
WARMUP_ENV = "STACKTRAIL_BENCH_WARMUP"
WAIT_ENV = "STACKTRAIL_BENCH_WAIT"
POLL_ENV = "STACKTRAIL_BENCH_POLL"
RPC_POLL_ENV = "STACKTRAIL_BENCH_RPC_POLL"
CONTROL_ENV = "STACKTRAIL_BENCH_CONTROL"
CORE_ENV = "STACKTRAIL_BENCH_CORE"
SIGN_ENV = "STACKTRAIL_BENCH_SIGN"
KEY_ENV = "STACKTRAIL_BENCH_KEY"
IDS_ENV = "STACKTRAIL_BENCH_IDS"
WAIT_TIMEOUT = 60.0


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


def pin_process(cores):
    """Run every thread of this process on ``cores`` (threads started
    later inherit it from their creator)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except OSError:     # a thread that just ended
            pass


class Turns:
    """Lifecycles on a coordinator's word, through two FIFOs in
    ``directory``: this process writes ``ready`` to ``done`` once its
    services run and its warm-up is over, then reads ``go``: ``run N``
    asks for N lifecycles (answered with ``done``), ``enabled true|false``
    sets ``[profiler] enabled`` and reloads the configuration as a SIGHUP
    does (answered with ``done``; benchmarks/instructions.py
    ``--within``), ``stop`` (or the end of the file) ends the test.

    The reads are plain blocking reads (eventlet does not patch the
    built-in ``open``): while it waits for its turn the whole eventlet hub
    waits, so this process's services do nothing, neither loading the
    machine while another process is timed nor moving their own
    left-over work into another's turn (OS threads, such as a trace
    flusher, still run).
    """

    def __init__(self, directory, core=None):
        if core is not None:
            pin_process({core})
        self._done = open(os.path.join(directory, "done"), "w", buffering=1)
        self._done.write("ready\n")
        self._go = open(os.path.join(directory, "go"), "r")

    def __iter__(self):
        while True:
            words = self._go.readline().split()
            if words[:1] == ["enabled"]:
                reload_enabled(words[1] == "true")
                self.done()
                continue
            if not words or words[0] != "run":
                return
            yield int(words[1])

    def done(self):
        self._done.write("done\n")

    def close(self):
        self._go.close()
        self._done.close()


def reload_enabled(enabled):
    """``[profiler] enabled`` switched in the service's configuration,
    applied the way a SIGHUP applies it (oslo.config's mutate hooks)."""
    from oslo_config import cfg
    cfg.CONF.set_override("enabled", enabled, "profiler")
    cfg.CONF.mutate_config_files()


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


class LifecycleBench:
    """The timed loop, mixed into a project's functional test class."""

    def setUp(self):
        pause = float(os.environ.get(RPC_POLL_ENV, "0.002"))
        self.useFixture(fixtures.MonkeyPatch(
            "oslo_messaging._drivers.impl_fake.time", RpcPollClock(pause)))
        super().setUp()
        self.gets = 0
        self.gc_clock = GcClock()
        self.addCleanup(self.gc_clock.close)

    def start_timing(self):
        """Marks taken at a lifecycle's start, for ``timings``."""
        self.notifier.reset()
        self.gets = 0
        return (time.process_time(), time.thread_time(),
                list(self.gc_clock.seconds), time.perf_counter())

    def timings(self, start, **phases):
        """The phases (perf_counter times) from the start, the CPU spent
        and the collector's time, as one JSON-able dict."""
        cpu0, main0, gc0, t0 = start
        out = {name: t - t0 for name, t in phases.items()}
        out.update(cpu=time.process_time() - cpu0,
                   main_cpu=time.thread_time() - main0, gets=self.gets,
                   gc=[b - a for a, b in zip(gc0, self.gc_clock.seconds)])
        return out

    def run_lifecycles(self, lifecycle):
        """Run ``lifecycle(headers, interval, notified)``: the warm-up,
        then the counted ones (on the coordinator's word when
        ``STACKTRAIL_BENCH_CONTROL`` is set), each written as one JSON
        line to ``STACKTRAIL_BENCH_DURATIONS``."""
        environ = os.environ
        iterations = int(environ.get(ITERATIONS_ENV, "10"))
        warmup = int(environ.get(WARMUP_ENV, "2"))
        interval = float(environ.get(POLL_ENV, "0.005"))
        notified = environ.get(WAIT_ENV, "notification") == "notification"
        sign = signer(environ)
        durations = open(environ[DURATIONS_ENV], "a")
        self.addCleanup(durations.close)
        ids = open(environ[IDS_ENV], "a") if sign else None
        if ids:
            self.addCleanup(ids.close)

        def run(counted):
            base_id, headers = sign() if sign else (None, None)
            timings = lifecycle(headers, interval, notified)
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
            return
        core = environ.get(CORE_ENV)
        turns = Turns(environ[CONTROL_ENV],
                      int(core) if core is not None else None)
        self.addCleanup(turns.close)
        for count in turns:
            for _ in range(count):
                run(True)
            turns.done()
