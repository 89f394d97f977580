"""What a Cinder volume's life costs with tracing off, armed, triggered and \
osprofiler.

    .venv/bin/python benchmarks/cinder_overhead.py [--rounds N]
        [--iterations N]

Cinder 29 in its own functional harness (tests/services/cinder.py: the
API, the scheduler and the volume service in one eventlet process, fake RPC
transport, in-memory SQLite, fake volume driver).  One lifecycle is what a
user waits for: POST /volumes (1 GB), wait until the API says
``available``, DELETE, wait until the API answers 404
(tests/services/cinder_tests/bench.py; the work goes API -> scheduler ->
volume manager -> driver, and the database all along).  Five
configurations:

* ``off``: Cinder as published, nothing of stacktrail on its path and no
  config source (its own osprofiler installed, disabled as shipped);
* ``armed``: stacktrail switched on from configuration the way Cinder's
  functional tests take configuration: ``etc/cinder/stacktrail.conf``'s
  ``[DEFAULT]`` and ``[stacktrail]`` in the oslo.config environment
  (``OS_DEFAULT__CONFIG_SOURCE=stacktrail`` ...), its ``[profiler]`` through
  ``_get_flags`` with ``connection_string = agent://<socket>`` and a key;
  requests not signed;
* ``triggered``: the same, the POST and the DELETE of every lifecycle
  signed (a new trace each), points going through a real stacktrail-agent
  into the local Redis (a db of its own);
* ``osprofiler``: Cinder's own osprofiler 4.4.0, ``enabled``,
  ``trace_sqlalchemy`` and ``trace_requests`` as in the fragment,
  ``connection_string = redis://`` (another db; the ``redis`` package,
  which Cinder does not install, comes from an overlay directory used for
  this configuration only), every lifecycle signed with osprofiler's
  headers (the same bytes as ours).  Cinder's test base replaces
  ``osprofiler.profiler.trace_cls`` with a no-op and Cinder never
  registers its SQL hook, so osprofiler records the API's two ``wsgi``
  spans and nothing else: compare the points per trace before the times;
* ``control``: ``off`` once more, in a process of its own: what two
  processes of the very same configuration differ by, the resolution of
  the run.  With ``--shaped-control`` it is ``off`` in armed's shape
  instead: an empty directory where armed has stacktrail's overlay on
  PYTHONPATH, and armed's environment variables renamed so that nothing
  reads them (``XS_PROFILER__ENABLED`` ...): what the harness's way of
  installing and configuring stacktrail costs without stacktrail (a
  deployment has neither: it installs into site-packages and configures
  in files).  With ``--noop-control`` it is ``triggered`` with
  ``connection_string = noop://`` instead: every lifecycle signed, its
  points made and thrown away (no buffer, no flusher, no agent), so
  what triggered costs divides into the request path's work (this
  control) and the flusher's (the rest).

How it is timed.  Each round starts one test process per configuration,
all at once; once each has started its services and run ``--warmup``
uncounted lifecycles, they take turns of ``--batch`` lifecycles until
each has run ``--iterations``.  Between turns a process waits in a
blocking read, services included (only OS threads such as stacktrail's
flusher run).  Two schedules (``--schedule``):

* ``together`` (the default): every turn, all the processes run their
  lifecycles at once, pinned to one core once started (``--core``; the
  agent and Redis have the other to themselves), and each lifecycle is
  measured by the CPU time its process spent on it (all threads: the
  flusher's work counts).  This machine's
  speed changes by up to half from one second to the next (a fixed loop
  timed every 0.6 s: 25 to 48 ms), and a lifecycle takes about as long, so
  lifecycles timed one after the other differ by that much whatever they
  do.  Sharing one core, the processes are interleaved every few
  milliseconds by the kernel, so each one's lifecycle meets the same
  speeds: three ``off`` processes run together measured 587, 584 and 588
  ms of CPU per lifecycle, turn by turn within 2 %.  A lifecycle is CPU
  work from end to end (alone, its CPU time is 98 % of its wall time, the
  rest the fake RPC's short polls), so its CPU time is what tracing adds
  to what the user waits for; stacktrail's agent:// adds no wait of its
  own.  osprofiler's synchronous Redis writes wait for Redis, which CPU
  time leaves out: its wall time is beside it.  The ratio judged is the
  median over turns of each turn's CPU time / ``off``'s in the same turn
  (``paired``).
* ``turns``: one process at a time, in an order shuffled per turn, each
  lifecycle timed from the POST to the 404 (wall time); the ratio judged
  is the pooled p50.  The machine's changes of speed fall on every
  configuration alike only over many turns.

The processes of one round share a hash seed (``PYTHONHASHSEED``, the
round's number), one source less of the differences between processes.
Three harness settings, the same for every configuration, keep a
lifecycle's time the time of its work:

* a wait ends on the service's own end notification (held in memory by
  the harness) and then one GET that the API agrees; status GETs every
  5 ms would take ~15 % of a Cinder lifecycle's CPU (and nearly half of a
  Nova one's), all untraced (``--wait poll`` does that instead);
* status GETs, when needed, are ``--poll`` seconds apart;
* oslo.messaging's fake transport looks at its queues every ``--rpc-poll``
  seconds instead of every 50 ms (otherwise each of the three casts waits
  0-50 ms for the next look and a lifecycle's time moves in steps of
  ~50 ms; ``--rpc-poll 0.05`` runs the harness as shipped).

Printed per configuration, in the measure of the schedule (CPU time
together, wall time by turns): the p50 of a lifecycle, its ratio to
``off``'s pooled over all lifecycles and paired (the median over turns of
the turn's ratio), a 95 % bootstrap interval of the ratio judged
(resampling rounds, then turns within them), the p90 and its ratio; the
other measure's p50 and ratio, the CPU time outside the main thread
(``other thr.``: eventlet runs every service in the main thread, so that
is stacktrail's flusher) and the mean time in the garbage collector; the
agent's CPU per triggered lifecycle on a line of its own, how busy the
machine was, and when each phase ended.  Targets: armed <= 1.01 x off,
triggered <= 1.05 x off; osprofiler is shown for comparison.
``--save FILE`` writes every lifecycle's figures as JSON.

Checked at the end: every triggered trace id is in the agent's store, a
sample of them (``--sample``) is complete (both ``wsgi`` spans, the
driver's create and delete, no span left open), a sample of the osprofiler
traces is in its store with both ``wsgi`` spans, and the agent dropped
nothing.  Exit status 0: targets met; 1: a target missed; 2: a test process
failed or a trace is missing.  About 8 minutes with the defaults.

tests/services/cinder_tests/bench.py holds the per-lifecycle timing;
benchmarks/nova_overhead.py reuses the machinery below for Nova.
"""

import argparse
import configparser
import contextlib
import errno
import json
import os
import random
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _procstat import cpu_seconds, machine_busy, pct  # noqa: E402
from _procstat import verdicts  # noqa: E402
from _procstat import flush_redis as _flush  # noqa: E402
from tests import servers  # noqa: E402
from tests.agent import harness  # noqa: E402
from tests.services import envs  # noqa: E402
from tests.services import tracing  # noqa: E402

CONFIGS = ("off", "armed", "triggered", "osprofiler", "control")
SIGNED = {"triggered": "stacktrail", "osprofiler": "osprofiler"}
TARGETS = {"armed": 1.01, "triggered": 1.05}
# What the control process runs (``--shaped-control``, ``--noop-control``).
CONTROLS = {
    "off": "off in a process of its own",
    "shaped": "off in armed's shape",
    "noop": "triggered into noop:// (its points thrown away)"}
# [profiler] options of the fragment that osprofiler knows too.
OSPROFILER_OPTIONS = ("enabled", "trace_sqlalchemy", "trace_requests")
REDIS_DBS = (10, 15)


# --- measuring -------------------------------------------------------------

def fragment(path):
    """``{group: {option: value}}`` of a shipped config fragment, booleans
    as booleans."""
    parser = configparser.ConfigParser(default_section="\0",
                                       interpolation=None)
    parser.read(path)
    out = {}
    for group in parser.sections():
        out[group] = {}
        for name, value in parser.items(group):
            low = value.strip().lower()
            out[group][name] = (low == "true") if low in ("true", "false") \
                else value.strip()
    return out


# Every test process gets the same number of environment variables of its
# own (padded with unused ones): requests reads all of them on every call
# (urllib's proxy lookup), so a configuration given through more variables
# (oslo.config's OS_<GROUP>__<OPTION>) would be slower for that alone
# (measured in Nova: about 570 more Python calls a lifecycle).
ENV_SIZE = 40


def padded(env_vars, added=0):
    """``env_vars`` and unused variables up to ENV_SIZE, counting
    ``added`` more that the service's run adds itself."""
    missing = ENV_SIZE - len(env_vars) - added
    return dict(env_vars, **{"STACKTRAIL_BENCH_PAD_%02d" % i: "x" * 32
                             for i in range(max(0, missing))})


def oslo_environ(groups):
    """oslo.config's environment source for ``{group: {option: value}}``:
    ``OS_<GROUP>__<OPTION>``."""
    return {"OS_%s__%s" % (group.upper(), name.upper()): str(value)
            for group, options in groups.items()
            for name, value in options.items()}


def install_overlay(env, target, packages):
    """``pip install --no-deps --target`` with ``env``'s pip: a directory
    for one configuration's PYTHONPATH (the cached env is left alone)."""
    done = subprocess.run(
        [env.python, "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "--no-deps", "--target",
         str(target)] + list(packages),
        capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit("pip install %s failed:\n%s" % (
            " ".join(packages), done.stdout + done.stderr))
    return target


def armed_shape(empty, armed_env):
    """``off`` in armed's shape (``--shaped-control``): an empty directory
    named as long as armed's overlay where that overlay is, and armed's
    variables renamed so that nothing reads them (``OS_`` -> ``XS_``):
    the process differs from armed's only by what stacktrail does."""
    empty.mkdir(exist_ok=True)
    return empty, {"X" + name[1:]: value
                   for name, value in armed_env.items()}, None


class Config:
    """One configuration: where it comes from and what it measured."""

    def __init__(self, name, overlay, env_vars, profiler, sign=None):
        self.name = name
        self.overlay = overlay          # a directory, or None
        self.env_vars = env_vars        # extra environment
        self.profiler = profiler        # [profiler] options, or None
        # the library whose headers sign each lifecycle, or None
        self.sign = sign or SIGNED.get(name)
        self.rows = []                  # per counted lifecycle
        self.turns = {}                 # turn number -> [total, ...]
        self.round_of = {}              # turn number -> round number
        self.rounds = []                # [total, ...] of each round
        self.round_rows = []            # [row, ...] of each round
        self.trace_ids = []
        self.failures = []              # (round, report)


class Service:
    """What differs between the services measured (Cinder here)."""

    title = ("Cinder 29.0.0 functional harness (eventlet, fake RPC, SQLite, "
             "fake volume driver); one lifecycle = POST /volumes (1 GB), "
             "wait until available, DELETE, wait until 404")
    test_id = "cinder_tests.bench.LifecycleBenchTest.test_lifecycles"
    fragment = Path(ROOT) / "etc" / "cinder" / "stacktrail.conf"
    osprofiler_packages = ("redis",)
    phases = ("post", "available", "delete", "gone")
    driver_calls = ("create_volume", "delete_volume")

    def env(self):
        from tests.services import cinder
        return cinder.cinder_env()

    def added_environ(self, config):
        """How many environment variables ``run`` adds for ``config``."""
        return 1 if config.profiler else 0   # cinder.FLAGS_ENV

    def run(self, env, config, env_vars, timeout):
        """Run the bench test once; None when it passed, else a report."""
        from tests.services import cinder
        flags = {"profiler": config.profiler} if config.profiler else None
        result = cinder.run_functional(
            [self.test_id], overlay=config.overlay, env_vars=env_vars,
            timeout=timeout, flags=flags, env=env, test_timeout=0)
        return None if result.ok else result.report()

    def stacktrail_settings(self, agent_url, key):
        """(env vars, [profiler] options) of ``armed`` and ``triggered``:
        the fragment's ``[DEFAULT]`` and ``[stacktrail]`` from the
        environment, its ``[profiler]`` through ``_get_flags``."""
        groups = fragment(self.fragment)
        profiler = dict(groups.pop("profiler"), connection_string=agent_url,
                        hmac_keys=key)
        return oslo_environ(groups), profiler

    def osprofiler_settings(self, redis_url, key):
        profiler = {name: value for name, value
                    in fragment(self.fragment)["profiler"].items()
                    if name in OSPROFILER_OPTIONS}
        profiler.update(connection_string=redis_url, hmac_keys=key)
        return {}, profiler

    def complete(self, found):
        """A triggered trace is complete: both requests, the driver calls
        that create and delete, every span closed."""
        drivers = {m["info"].get("function", {}).get("name", "")
                   .rsplit(".", 1)[-1] for m in found
                   if m["name"] == "driver-start"}
        return (wsgi_pair(found) and set(self.driver_calls) <= drivers
                and not tracing.unclosed(found))


def build_configs(service, env, workdir, agent_url, osprofiler_url, key,
                  control="off"):
    """The configurations of a run; ``control`` is what the control
    process runs: ``off``, ``shaped`` or ``noop`` (see the docstring)."""
    overlay = envs.stacktrail_overlay(workdir / "stacktrail-site", env)
    osp_overlay = install_overlay(env, workdir / "osprofiler-site",
                                  service.osprofiler_packages)
    st_env, st_profiler = service.stacktrail_settings(agent_url, key)
    osp_env, osp_profiler = service.osprofiler_settings(osprofiler_url, key)
    settings = {"off": (None, {}, None),
                "armed": (overlay, st_env, st_profiler),
                "triggered": (overlay, st_env, st_profiler),
                "osprofiler": (osp_overlay, osp_env, osp_profiler)}
    settings["control"] = settings["off"]
    if control == "shaped":
        settings["control"] = armed_shape(workdir / "stacktrail-none", dict(
            st_env, **oslo_environ({"profiler": st_profiler})))
    elif control == "noop":
        settings["control"] = (overlay, st_env, dict(
            st_profiler, connection_string="noop://"), "stacktrail")
    return [Config(name, *settings[name]) for name in CONFIGS]


class Channel:
    """The coordinator's end of one test process's two FIFOs (see
    ``Turns`` in cinder_tests/bench.py): ``done`` is read without
    blocking, so that a process that died is noticed."""

    def __init__(self, directory):
        self.go_path = directory / "go"
        self.done_path = directory / "done"
        os.mkfifo(self.go_path)
        os.mkfifo(self.done_path)
        self._done = os.open(self.done_path, os.O_RDONLY | os.O_NONBLOCK)
        self._go = None
        self._buffer = b""

    def expect(self, word, alive, timeout):
        """Wait for the line ``word``; False when the process ended or the
        time ran out."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if not alive() or time.monotonic() > deadline:
                return False
            ready, _, _ = select.select([self._done], [], [], 0.2)
            if ready:
                chunk = os.read(self._done, 4096)
                if not chunk:               # no writer (yet, or any more)
                    time.sleep(0.05)
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode() == word

    def send(self, line, alive, timeout=30):
        """Write ``line`` to ``go`` (opened once the process reads it)."""
        deadline = time.monotonic() + timeout
        while self._go is None:
            try:
                self._go = os.open(self.go_path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(self._go, True)
            except OSError as exc:
                if exc.errno != errno.ENXIO or not alive() or \
                        time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        try:
            os.write(self._go, (line + "\n").encode())
            return True
        except BrokenPipeError:
            return False

    def close(self):
        for fd in (self._go, self._done):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Process:
    """One configuration's test process for one round, run in a thread."""

    def __init__(self, service, env, config, args, key, workdir, n):
        self.config = config
        directory = Path(tempfile.mkdtemp(
            prefix="%s-%d-" % (config.name, n), dir=workdir))
        self.durations = directory / "durations.jsonl"
        self.ids = directory / "ids"
        self.channel = Channel(directory)
        env_vars = dict(config.env_vars,
                        STACKTRAIL_BENCH_DURATIONS=str(self.durations),
                        STACKTRAIL_BENCH_WARMUP=str(args.warmup),
                        STACKTRAIL_BENCH_WAIT=args.wait,
                        STACKTRAIL_BENCH_POLL=str(args.poll),
                        STACKTRAIL_BENCH_RPC_POLL=str(args.rpc_poll),
                        STACKTRAIL_BENCH_CONTROL=str(directory),
                        PYTHONHASHSEED=str(n + 1))
        if config.sign:
            env_vars.update(STACKTRAIL_BENCH_SIGN=config.sign,
                            STACKTRAIL_BENCH_KEY=key,
                            STACKTRAIL_BENCH_IDS=str(self.ids))
        if args.schedule == "together":
            env_vars.update(STACKTRAIL_BENCH_CORE=str(args.core))
        env_vars = padded(env_vars, service.added_environ(config))
        timeout = 600 + 10 * (args.iterations + args.warmup) * (
            len(CONFIGS) if args.schedule == "together" else 1)
        self.failure = None
        self.turns = []                 # (turn number, lifecycles) done
        self.thread = threading.Thread(target=self._run, args=(
            service, env, config, env_vars, timeout), daemon=True)
        self.thread.start()
        self.live = True

    def _run(self, service, env, config, env_vars, timeout):
        try:
            self.failure = service.run(env, config, env_vars, timeout)
        except Exception as exc:        # reported, the others go on
            self.failure = "%s: %s" % (type(exc).__name__, exc)

    def alive(self):
        return self.thread.is_alive()

    def fail(self, why):
        self.live = False
        self.channel.close()
        self.thread.join(60)
        self.failure = "%s\n%s" % (why, self.failure or "")


def run_round(service, env, configs, args, key, workdir, n, rng, turn):
    """One process per configuration, all started at once; once each has
    started its services and run its warm-up, turns of ``--batch``
    lifecycles until each has run ``--iterations``: all processes at once
    on one core (``together``), or one process at a time in an order
    shuffled per turn (``turns``)."""
    processes = [Process(service, env, config, args, key, workdir, n)
                 for config in configs]
    for proc in processes:
        if not proc.channel.expect("ready", proc.alive, timeout=600):
            proc.fail("no 'ready' from the test process")
    left = args.iterations
    while left > 0:
        count = min(args.batch, left)
        left -= count
        order = [p for p in processes if p.live]
        rng.shuffle(order)
        groups = [order] if args.schedule == "together" else \
            [[proc] for proc in order]
        for group in groups:
            sent = [proc for proc in group
                    if proc.channel.send("run %d" % count, proc.alive)]
            for proc in group:
                if proc in sent and proc.channel.expect(
                        "done", proc.alive,
                        timeout=60 + 30 * count * len(group)):
                    proc.turns.append((turn, count))
                else:
                    proc.fail("the test process stopped taking turns")
        turn += 1
    for proc in processes:
        if proc.live:
            proc.channel.send("stop", proc.alive)
    for proc in processes:
        proc.thread.join()
        proc.channel.close()
        config = proc.config
        rows = ([json.loads(line) for line in proc.durations.read_text()
                 .splitlines()] if proc.durations.exists() else [])
        failure = proc.failure
        if failure is None and len(rows) != args.iterations:
            failure = "%d lifecycles of %d" % (len(rows), args.iterations)
        if failure is not None:
            config.failures.append((n, failure))
        config.rows.extend(rows)
        config.rounds.append([row[args.measure] for row in rows])
        config.round_rows.append(rows)
        start = 0
        for number, count in proc.turns:
            config.turns[number] = [r[args.measure]
                                    for r in rows[start:start + count]]
            config.round_of[number] = n
            start += count
        if proc.ids.exists():
            config.trace_ids.extend(proc.ids.read_text().split())
    print("  round %d: %s" % (n + 1, ", ".join(
        "%s p50 %.1f ms%s" % (
            c.name, statistics.median(c.rounds[-1]) * 1e3
            if c.rounds[-1] else float("nan"),
            " FAILED" if c.failures and c.failures[-1][0] == n else "")
        for c in configs)), file=sys.stderr, flush=True)
    return turn


def wait_agent_idle(agent, timeout=60):
    """The agent's status once everything it received is written."""
    deadline = time.monotonic() + timeout
    while True:
        status = agent.status()
        if status["written"] >= status["received"] or \
                time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def check_traces(url, trace_ids, complete, timeout):
    """(complete, points per complete trace, incomplete ids)."""
    from stacktrail.drivers import base
    driver = base.get_driver(url)
    pending = list(trace_ids)
    points = {}
    deadline = time.monotonic() + timeout
    while True:
        still = []
        for base_id in pending:
            found = driver.get_messages(base_id)
            if complete(found):
                points[base_id] = len(found)
            else:
                still.append(base_id)
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    with contextlib.suppress(Exception):
        driver.close()
    return len(points), points, pending


def stored(url, trace_ids):
    """The ids among ``trace_ids`` that have a key in the Redis store."""
    import redis
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for base_id in trace_ids:
            pipe.exists("osprofiler_opt:" + base_id)
        return [i for i, there in zip(trace_ids, pipe.execute()) if there]
    finally:
        client.close()


def wsgi_pair(found):
    names = [m["name"] for m in found]
    return names.count("wsgi-start") == 2 and names.count("wsgi-stop") == 2


def parse_args(description, rounds, iterations, batch, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="rounds; each runs every configuration once")
    parser.add_argument("--iterations", type=int, default=iterations,
                        help="timed lifecycles per test process")
    parser.add_argument("--batch", type=int, default=batch,
                        help="lifecycles per turn")
    parser.add_argument("--schedule", choices=("together", "turns"),
                        default="together",
                        help="together: the processes run their turns at "
                        "once on one core, compared by CPU time; turns: "
                        "one process at a time, compared by wall time")
    parser.add_argument("--core", type=int, default=0,
                        help="the core the test processes share once "
                        "started (together)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="lifecycles per process first, not timed")
    parser.add_argument("--wait", choices=("notification", "poll"),
                        default="notification",
                        help="how a wait for a status ends: the service's "
                        "notification, then the API agrees; or API polls "
                        "alone")
    parser.add_argument("--poll", type=float, default=0.005,
                        help="seconds between two status GETs")
    parser.add_argument("--rpc-poll", type=float, default=0.002,
                        help="fake RPC listeners' longest pause (Cinder "
                        "and Nova ship 0.05)")
    parser.add_argument("--sample", type=int, default=30,
                        help="traces read back in full, per library")
    parser.add_argument("--seed", type=int, default=None)
    controls = parser.add_mutually_exclusive_group()
    controls.add_argument("--shaped-control", dest="control",
                          action="store_const", const="shaped",
                          default="off",
                          help="the control runs off in armed's shape (an "
                          "empty directory for its overlay, its "
                          "environment variables renamed): what the "
                          "shape alone costs")
    controls.add_argument("--noop-control", dest="control",
                          action="store_const", const="noop",
                          help="the control runs triggered into noop:// "
                          "(points made and thrown away): what the "
                          "request path alone costs")
    parser.add_argument("--save", metavar="FILE",
                        help="write every configuration's lifecycles "
                        "(JSON) to FILE")
    args = parser.parse_args(argv)
    args.measure = "cpu" if args.schedule == "together" else "total"
    return args


def main(service, args):
    rng = random.Random(args.seed)
    key = "bench-" + secrets.token_hex(16)
    env = service.env()
    redis_server = servers.ensure("redis")
    workdir = Path(tempfile.mkdtemp(prefix="st-svcbench-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        stack.callback(redis_server.stop)
        urls = {}
        for what in ("stacktrail", "osprofiler"):
            db = stack.enter_context(servers.redis_db(
                redis_server, *REDIS_DBS))
            urls[what] = "redis://%s:%d/%d" % (redis_server.host,
                                               redis_server.port, db)
            stack.callback(_flush, urls[what])
        agent = harness.Agent(harness.short_dir("st-svcagent-"),
                              [urls["stacktrail"]], flush_interval=0.2,
                              retry_max_interval=10)
        stack.callback(shutil.rmtree, agent.workdir, True)
        agent.start()
        stack.callback(agent.stop)
        configs = build_configs(service, env, workdir, agent.url,
                                urls["osprofiler"], key, args.control)

        agent_before = cpu_seconds(agent.proc.pid)
        machine_before = machine_busy()
        started = time.monotonic()
        turn = 0
        for n in range(args.rounds):
            turn = run_round(service, env, configs, args, key, workdir, n,
                             rng, turn)
        elapsed = time.monotonic() - started
        machine_after = machine_busy()
        if args.save:
            with open(args.save, "w") as out:
                json.dump({c.name: {"rounds": c.round_rows,
                                    "failures": c.failures} for c in configs},
                          out)

        wait_agent_idle(agent)
        agent_cpu = cpu_seconds(agent.proc.pid) - agent_before
        by_name = {c.name: c for c in configs}
        triggered, osp = by_name["triggered"], by_name["osprofiler"]
        present = stored(urls["stacktrail"], triggered.trace_ids)
        sample = rng.sample(triggered.trace_ids,
                            min(args.sample, len(triggered.trace_ids)))
        checked = check_traces(urls["stacktrail"], sample,
                               service.complete, timeout=30)
        osp_sample = rng.sample(osp.trace_ids,
                                min(args.sample, len(osp.trace_ids)))
        osp_checked = check_traces(urls["osprofiler"], osp_sample,
                                   wsgi_pair, timeout=10)
        status = agent.status()

    busy, total = (a - b for a, b in zip(machine_after, machine_before))
    busy_cores = busy / total * os.cpu_count() if total else 0.0
    # Traced lifecycles: the triggered process's.
    lifecycles = args.rounds * (args.iterations + args.warmup)
    return report(service, args, configs, elapsed, busy_cores, agent_cpu,
                  lifecycles, status, len(present), checked, len(sample),
                  osp_checked, len(osp_sample))


# --- reporting -------------------------------------------------------------

def shared_turns(config, off):
    """The turns in which both this configuration and ``off`` ran."""
    return sorted(t for t in set(config.turns) & set(off.turns)
                  if config.turns[t] and off.turns[t])


def pooled(config, off, turns):
    """p50 of this configuration's lifecycles in ``turns`` / off's."""
    return (statistics.median(v for t in turns for v in config.turns[t]) /
            statistics.median(v for t in turns for v in off.turns[t]))


def paired(config, off, turns):
    """Median over ``turns`` of (this turn's p50 / off's p50 in it)."""
    return statistics.median(
        statistics.median(config.turns[t]) / statistics.median(off.turns[t])
        for t in turns)


def interval(statistic, config, off, resamples=2000):
    """95 % bootstrap interval of ``statistic`` at two levels: rounds
    (each has a process of its own per configuration), then turns within
    each round drawn."""
    rng = random.Random(0)
    by_round = {}
    for turn in shared_turns(config, off):
        by_round.setdefault(config.round_of[turn], []).append(turn)
    rounds = list(by_round.values())
    ratios = []
    for _ in range(resamples if rounds else 0):
        turns = [rng.choice(within) for within in
                 (rng.choice(rounds) for _ in rounds) for _ in within]
        ratios.append(statistic(config, off, turns))
    return (pct(ratios, 0.025), pct(ratios, 0.975)) if ratios else (0, 0)


def report(service, args, configs, elapsed, busy_cores, agent_cpu,
           lifecycles, status, present, checked, sampled, osp_checked,
           osp_sampled):
    by_name = {c.name: c for c in configs}
    off = by_name["off"]
    print(service.title)
    together = args.schedule == "together"
    print("%d rounds of %d processes, one per configuration, %s, turns of "
          "%d lifecycles: %d timed lifecycles per process (+%d warm-up); "
          "%.0f s" % (
              args.rounds, len(configs),
              "running at once on core %d" % args.core if together else
              "one at a time (order shuffled per turn)", args.batch,
              args.iterations, args.warmup, elapsed))
    print("waits: %s; status GETs %g s apart (median %g per lifecycle); "
          "fake RPC listeners look every %g s"
          % ("the service's notification, then the API"
             if args.wait == "notification" else "API polls",
             args.poll, statistics.median(
                 [r["gets"] for c in configs for r in c.rows] or [0]),
             args.rpc_poll))
    print("machine: %.2f of %d cores busy during the rounds"
          % (busy_cores, os.cpu_count()))
    control = by_name["control"]
    signed = len(control.trace_ids)
    print("control: %s%s" % (CONTROLS[args.control], "; signed "
                             "lifecycles: %d" % signed if signed else ""))
    print()
    if not all(c.rows for c in configs):
        print("no lifecycles for: %s" % ", ".join(
            c.name for c in configs if not c.rows))
        return failures(configs) or 2
    # The measure compared (CPU or wall time per lifecycle), then the
    # other one beside it.
    measure = args.measure
    beside = "total" if measure == "cpu" else "cpu"
    # Together, the lifecycles of one turn ran at the same moments: the
    # median of the turns' ratios is judged.  One at a time, the pooled p50.
    judged = paired if together else pooled
    off_p90 = pct([r[measure] for r in off.rows], 0.9)
    off_beside = statistics.median(r[beside] for r in off.rows)
    label = {"cpu": "CPU ms", "total": "wall ms"}
    print("%-11s %5s %7s %6s %6s %13s %7s %6s %7s %6s %10s %6s" % (
        "", "n", label[measure], "pooled", "paired", "95% interval", "p90",
        "ratio", label[beside], "ratio", "other thr.", "GC ms"))
    ratios, intervals = {}, {}
    for config in configs:
        values = [r[measure] for r in config.rows]
        turns = shared_turns(config, off)
        other_p50 = statistics.median(r[beside] for r in config.rows)
        other = statistics.median(max(0.0, r["cpu"] - r["main_cpu"])
                                  for r in config.rows)
        ratios[config.name] = judged(config, off, turns)
        intervals[config.name] = (1.0, 1.0) if config is off else \
            interval(judged, config, off)
        collecting = statistics.mean(sum(r.get("gc", ())) for r in config.rows)
        print("%-11s %5d %7.1f %6.3f %6.3f %6.3f-%-6.3f %7.1f %6.3f %7.1f "
              "%6.3f %10.1f %6.1f" % (
                  config.name, len(values), pct(values, 0.5) * 1e3,
                  pooled(config, off, turns), paired(config, off, turns),
                  *intervals[config.name], pct(values, 0.9) * 1e3,
                  pct(values, 0.9) / off_p90, other_p50 * 1e3,
                  other_p50 / off_beside, other * 1e3, collecting * 1e3))
    received = status["received"]
    triggered = by_name["triggered"]
    print("%-71s %7.1f  (per triggered lifecycle, warm-up included; "
          "%.0f points each)" % ("agent", agent_cpu / lifecycles * 1e3,
                                 received / lifecycles))
    print("phases, p50 ms from the POST's start: " + "; ".join(
        "%s %s" % (c.name, " ".join(
            "%.0f" % (statistics.median(r[p] for r in c.rows) * 1e3)
            for p in service.phases)) for c in configs)
          + "  (%s)" % "/".join(service.phases))
    print()
    ok = verdicts(ratios, intervals, TARGETS, 36,
                  "CPU / off CPU, paired" if together else "p50 / off p50")
    n_ok, points, missing = checked
    osp_ok, osp_points, osp_missing = osp_checked
    print("triggered traces in the store: %d of %d; complete (2 wsgi, "
          "driver %s, nothing open): %d of %d sampled, "
          "median %d points per trace" % (
              present, len(triggered.trace_ids),
              " + ".join(service.driver_calls), n_ok, sampled,
              statistics.median(points.values()) if points else 0))
    if missing:
        print("  incomplete, e.g. %s" % missing[:3])
    print("osprofiler traces with both wsgi spans: %d of %d sampled, "
          "median %d points per trace" % (
              osp_ok, osp_sampled,
              statistics.median(osp_points.values()) if osp_points else 0))
    if osp_missing:
        print("  incomplete, e.g. %s" % osp_missing[:3])
    print("agent: received %d, written %d, dropped %s" % (
        status["received"], status["written"], status["dropped"] or "{}"))
    bad = failures(configs)
    if (bad or present < len(triggered.trace_ids) or n_ok < sampled
            or osp_ok < osp_sampled or status["dropped"]):
        return 2
    return 0 if ok else 1


def failures(configs):
    bad = [(c.name, n, text) for c in configs for n, text in c.failures]
    for name, n, text in bad:
        print("FAILED: %s, round %d:\n%s" % (name, n + 1, text[-3000:]))
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Service(), parse_args(
        __doc__.split("\n")[0], rounds=8, iterations=24, batch=1)))
