"""What a Zaqar user waits for, with tracing off, armed, triggered and \
osprofiler.

    .venv/bin/python benchmarks/zaqar_overhead.py [--rounds N] [--warmup N]
        [--fast]

Four real zaqar-server 23 processes (tests/services/zaqar.py), Redis
message store (the local Redis, a db of its own) and a SQLite management
store each, all running at once:

* ``off``: Zaqar as published, no stacktrail on its path, no fragment (its
  own osprofiler installed but disabled, as upstream ships it);
* ``armed``: stacktrail (the lines of ``etc/zaqar/stacktrail.conf`` copied
  into zaqar.conf, plus ``connection_string = agent://<socket>`` and a
  key), requests not signed;
* ``armed+file``: the same, with the fragment as one more
  ``--config-file``, as README.rst describes too (oslo.policy looks for a
  policy file in the directory of every config file on each policy check,
  so a file costs a little whatever it holds);
* ``triggered``: the same server configuration as ``armed``, every request
  signed (a new trace per round), points going through a real
  stacktrail-agent into Redis (another db);
* ``osprofiler``: Zaqar's own osprofiler 4.4.0, ``connection_string =
  redis://`` (a third db), every request signed with its headers (the same
  bytes as ours).

One round is a POST of one message plus a GET ``?echo=true`` on the
configuration's queue, from a ``requests.Session`` per configuration (it
asks for keep-alive, but zaqar-server's wsgiref answers HTTP/1.0 and closes
every connection, so each request also pays a TCP connect, alike for all).
Within a round the requests are interleaved one by one (every
configuration's POST, then every configuration's GET, in an order shuffled
per round), so noise on this 2-core machine lands on all of them alike;
only the ratios to ``off`` measured here mean anything.  Each
configuration runs in ``--servers`` processes (default 3), taking part in
every round alike, and the run is made of ``--blocks`` blocks (default 4),
each with new processes: two processes of the very same configuration
differ by about 1 % (where their code and data landed in memory, their
hash seeds), as much as the target for ``armed`` allows, so a few
processes per configuration measure their luck (runs of one block of
three processes gave armed 0.994 to 1.008).  A configuration's figures
pool its processes' rounds (round i of its process k paired with round i
of off's process k in the same block) and add their CPU.

Printed per configuration: p50 and p99 of the round latency (POST + GET)
and their ratio to ``off`` (with a 95 % bootstrap interval of the p50
ratio, resampling the pairs of processes, then their rounds), the median of
the per-round ratios (paired), and the server's CPU time (utime + stime of
all its threads, from /proc/<pid>/stat) per request and its ratio; the
agent's CPU per triggered request on a line of its own, and how busy the
machine was.  Targets: armed p50 <= 1.005 x off, triggered p50 <= 1.05 x
off; osprofiler is shown for comparison.

Checked while measuring: every response is 201 (POST) or 200 (GET), every
triggered trace is in the agent's store with its two ``wsgi`` spans (all of
them are read back), a sample of 100 osprofiler traces is in its store, and
the agent dropped nothing.  Exit status 0: targets met; 1: a target
missed; 2: a request failed or a trace is missing.  About 4 minutes with
the defaults: 4 blocks of 300 rounds of 3 servers each (every server is
warmed up with 40 uncounted rounds first).  ``--agent-nice 0`` runs the
agent at the servers' priority instead of its default (``[agent] nice``).
``--fast`` puts orjson (the part of ``pip install 'stacktrail[fast]'``
that a service uses) on the stacktrail servers' path; hiredis, the other
part, would speed up Zaqar's own Redis client and is left out.
"""

import argparse
import contextlib
import gc
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _procstat import cpu_seconds, machine_busy, pct, verdicts  # noqa: E402
from _procstat import flush_redis as _flush  # noqa: E402
from tests import servers  # noqa: E402
from tests.agent import harness  # noqa: E402
from tests.services import envs  # noqa: E402
from tests.services import tracing  # noqa: E402
from tests.services import zaqar  # noqa: E402

CONFIGS = ("off", "armed", "armed+file", "triggered", "osprofiler")
SIGNED = ("triggered", "osprofiler")
# The part of the ``fast`` extra a service uses (``--fast``).
FAST = ("orjson>=3.9",)
TARGETS = {"armed": 1.005, "triggered": 1.05}
EXPECTED = {"POST": 201, "GET": 200}


def p50_interval(target, off, resamples=1000):
    """95 % bootstrap interval of p50(target) / p50(off), resampling the
    pairs of processes (replica k of a block with off's replica k), then
    the rounds of each pair: it covers how much a process's own speed
    varies as well as the rounds."""
    rng = random.Random(0)
    pairs = [list(zip(a.rounds, b.rounds))
             for a, b in zip(target.replicas, off.replicas)]
    ratios = []
    for _ in range(resamples):
        mine, offs = [], []
        for _ in pairs:
            pair = pairs[rng.randrange(len(pairs))]
            for _ in pair:
                a, b = pair[rng.randrange(len(pair))]
                mine.append(a)
                offs.append(b)
        ratios.append(statistics.median(mine) / statistics.median(offs))
    return pct(ratios, 0.025), pct(ratios, 0.975)


class Target:
    """One configuration: its server, client, queue and what it measured."""

    def __init__(self, name, server):
        self.name = name                    # "armed#1.2": block 1, replica 2
        self.config = name.split("#")[0]    # "armed"
        self.server = server
        self.client = server.client()
        self.queue = "bench-" + name.replace("+", "-").replace(
            "#", "-").replace(".", "-")
        self.rounds = []          # seconds, POST + GET, counted rounds
        self.failures = []        # (method, status, text)
        self.trace_ids = []       # signed configurations: one per round
        self.headers = None
        self.pending = 0.0
        self.cpu = None           # server CPU seconds over counted rounds

    def new_round(self, key):
        if self.config in SIGNED:
            base_id, self.headers = tracing.signed_headers(key)
            self.trace_ids.append(base_id)
        self.pending = 0.0

    def request(self, method, n):
        client = self.client
        if method == "POST":
            started = time.perf_counter()
            resp = client.post_messages(
                self.queue, [{"body": {"n": n}, "ttl": 600}],
                headers=self.headers)
        else:
            started = time.perf_counter()
            resp = client.get_messages(self.queue, echo=True,
                                       headers=self.headers)
        self.pending += time.perf_counter() - started
        if resp.status_code != EXPECTED[method]:
            self.failures.append((method, resp.status_code, resp.text[:200]))


def open_target(stack, name, server):
    """A Target on ``server`` with its queue created, its client closed
    when ``stack`` closes; SystemExit when Zaqar refuses the queue."""
    target = Target(name, server)
    stack.callback(target.client.close)
    resp = target.client.create_queue(target.queue)
    if resp.status_code not in (201, 204):
        raise SystemExit("%s: creating the queue gave %s: %s" % (
            target.name, resp.status_code, resp.text))
    return target


class Pooled:
    """A configuration's server processes as one: their rounds and trace
    ids one after the other (round i of replica k stays paired with round
    i of off's replica k), their CPU added."""

    def __init__(self, name, replicas):
        self.name = name
        self.replicas = replicas
        self.rounds = [r for t in replicas for r in t.rounds]
        self.trace_ids = [i for t in replicas for i in t.trace_ids]
        self.failures = [f for t in replicas for f in t.failures]
        self.cpu = sum(t.cpu for t in replicas)


def run_rounds(targets, rounds, key, counted, rng):
    """``rounds`` rounds, request by request across the configurations."""
    order = list(targets)
    for n in range(rounds):
        rng.shuffle(order)
        for target in order:
            target.new_round(key)
        for method in ("POST", "GET"):
            for target in order:
                target.request(method, n)
        if counted:
            for target in order:
                target.rounds.append(target.pending)
        if n % 50 == 49:
            gc.collect()    # the client's own pauses, between rounds


def check_traces(url, trace_ids, timeout):
    """(complete, points per trace, missing ids) of the stored traces:
    complete means both wsgi spans (start and stop) are stored."""
    from stacktrail.drivers import base
    driver = base.get_driver(url)
    pending = list(trace_ids)
    points = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for base_id in pending:
            found = driver.get_messages(base_id)
            names = [m["name"] for m in found]
            if (names.count("wsgi-start") == 2
                    and names.count("wsgi-stop") == 2):
                points[base_id] = len(found)
            else:
                still.append(base_id)
        pending = still
        if pending:
            time.sleep(0.5)
    with contextlib.suppress(Exception):
        driver.close()
    return len(points), points, pending


def setup(stack, prefix, stores, overlay_packages=(), **agent_options):
    """What a Zaqar benchmark stands on, undone when ``stack`` closes:
    (Zaqar's environment, a work directory, {store: a Redis db of its own}
    for each name of ``stores`` (one of them "stacktrail"), the stacktrail
    overlay for the servers' path (with ``overlay_packages``), a running
    agent writing to the "stacktrail" db)."""
    env = zaqar.zaqar_env()
    redis_server = servers.ensure("redis")
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    stack.callback(shutil.rmtree, workdir, True)
    stack.callback(redis_server.stop)
    urls = {}
    for what in stores:
        db = stack.enter_context(servers.redis_db(redis_server))
        urls[what] = "redis://%s:%d/%d" % (redis_server.host,
                                           redis_server.port, db)
        stack.callback(_flush, urls[what])
    overlay = envs.stacktrail_overlay(workdir / "site", env,
                                      overlay_packages)
    agent = harness.Agent(harness.short_dir(prefix + "agent-"),
                          [urls["stacktrail"]], flush_interval=0.2,
                          retry_max_interval=10, **agent_options)
    stack.callback(shutil.rmtree, agent.workdir, True)
    agent.start()
    stack.callback(agent.stop)
    return env, workdir, urls, overlay, agent


def start_servers(stack, workdir, env, overlay, message_url, agent_url,
                  osprofiler_url, key, replicas, block=0):
    """{"off#0.0": server, ...}: ``replicas`` processes per configuration
    (named by block and replica)."""
    started = {}
    for replica in range(replicas):
        for name in CONFIGS:
            label = "%d.%d" % (block, replica)
            started["%s#%s" % (name, label)] = start_server(
                stack, workdir / ("%s-%s" % (name, label)), name, env,
                overlay, message_url, agent_url, osprofiler_url, key)
    return started


def start_server(stack, directory, name, env, overlay, message_url,
                 agent_url, osprofiler_url, key, runner=(), **options):
    """A server of configuration ``name``; ``options``: more of
    stacktrail's ``[profiler]`` options; ``runner``: a command it runs
    under (valgrind), which gives it ten minutes to start."""
    kwargs = dict(runner=runner, start_timeout=600) if runner else {}
    profiler = dict(options, connection_string=agent_url, hmac_keys=key)
    if name in ("armed", "triggered"):
        kwargs.update(overlay=overlay, **zaqar.fragment_sections(**profiler))
    elif name == "armed+file":
        kwargs.update(overlay=overlay, profiler=profiler,
                      extra_conf_files=[zaqar.FRAGMENT])
    elif name == "osprofiler":
        kwargs.update(profiler=zaqar.profiler_section(osprofiler_url,
                                                      hmac_keys=key))
    return stack.enter_context(
        zaqar.zaqar_server(directory, message_url, env=env, **kwargs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300,
                        help="counted rounds per configuration and block")
    parser.add_argument("--warmup", type=int, default=40,
                        help="rounds first in each block, not counted")
    parser.add_argument("--servers", type=int, default=3,
                        help="server processes per configuration in a "
                        "block (a process's own speed varies by about 1 %%)")
    parser.add_argument("--blocks", type=int, default=4,
                        help="blocks, each with new server processes")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--agent-nice", type=int, default=None,
                        help="the agent's [agent] nice (default: its own "
                        "default; 0 runs it at the servers' priority)")
    parser.add_argument("--fast", action="store_true",
                        help="orjson on the stacktrail servers' path")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    key = "bench-" + secrets.token_hex(16)

    with contextlib.ExitStack() as stack:
        env, workdir, urls, overlay, agent = setup(
            stack, "st-zqbench-", ("messages", "stacktrail", "osprofiler"),
            overlay_packages=FAST if args.fast else (),
            **({} if args.agent_nice is None else {"nice": args.agent_nice}))
        run = Measured(agent)
        for block in range(args.blocks):
            run_block(run, block, args, key, rng, workdir, env, overlay,
                      urls, agent)
        targets = [Pooled(name, [t for t in run.targets if t.config == name])
                   for name in CONFIGS]
        by_name = {t.name: t for t in targets}
        triggered = by_name["triggered"]
        complete, points, missing = check_traces(
            urls["stacktrail"], triggered.trace_ids, timeout=60)
        status = agent.status()
        osp = by_name["osprofiler"]
        sample = rng.sample(osp.trace_ids, min(100, len(osp.trace_ids)))
        osp_complete, osp_points, osp_missing = check_traces(
            urls["osprofiler"], sample, timeout=10)

    busy, total = run.machine
    load = {"cores": os.cpu_count(),
            "busy": busy / total * os.cpu_count() if total else 0.0,
            "ours": (sum(t.cpu for t in targets) + run.agent_cpu
                     + run.client_cpu) / run.elapsed}
    return report(args, targets, run.elapsed, run.agent_cpu, status,
                  run.received, complete, points, missing,
                  osp_complete, osp_points, len(sample), run.crashed, load)


class Measured:
    """What the counted rounds of every block added up to."""

    def __init__(self, agent):
        self.agent = agent
        self.targets = []
        self.crashed = []
        self.elapsed = self.agent_cpu = self.client_cpu = 0.0
        self.received = 0
        self.machine = [0, 0]

    def start(self, targets):
        self._before = {t: cpu_seconds(t.server.pid) for t in targets}
        self._agent = cpu_seconds(self.agent.proc.pid)
        self._received = self.agent.status()["received"]
        self._client = sum(os.times()[:2])
        self._machine = machine_busy()
        self._started = time.monotonic()

    def stop(self):
        self.elapsed += time.monotonic() - self._started
        after = machine_busy()
        for i in (0, 1):
            self.machine[i] += after[i] - self._machine[i]
        self.client_cpu += sum(os.times()[:2]) - self._client

    def collect(self, targets):
        """After the flushers' last batches: CPU of servers and agent."""
        for target in targets:
            target.cpu = cpu_seconds(target.server.pid) - self._before[target]
        self.agent_cpu += cpu_seconds(self.agent.proc.pid) - self._agent
        self.received += self.agent.status()["received"] - self._received
        self.crashed += [t.name for t in targets if not t.server.running()]
        self.targets += targets


def run_block(run, block, args, key, rng, workdir, env, overlay, urls,
              agent):
    """New server processes for every configuration, warmed up, then the
    block's counted rounds; the servers stop at the end."""
    with contextlib.ExitStack() as stack:
        started = start_servers(stack, workdir, env, overlay,
                                urls["messages"], agent.url,
                                urls["osprofiler"], key, args.servers, block)
        targets = [open_target(stack, name, server)
                   for name, server in started.items()]
        run_rounds(targets, args.warmup, key, False, rng)
        time.sleep(1.0)     # warm-up points flushed and written
        gc.collect()
        gc.disable()
        run.start(targets)
        run_rounds(targets, args.rounds, key, True, rng)
        run.stop()
        gc.enable()
        time.sleep(1.0)     # the flushers' last batches (every 0.2 s)
        run.collect(targets)


def report(args, targets, elapsed, agent_cpu, status, received,
           complete, points, missing, osp_complete, osp_points, osp_sampled,
           crashed, load):
    by_name = {t.name: t for t in targets}
    off = by_name["off"]
    requests_per = 2 * args.rounds * args.servers * args.blocks
    off_p50, off_p99 = pct(off.rounds, 0.5), pct(off.rounds, 0.99)
    off_cpu = off.cpu / requests_per
    print("zaqar-server 23.0.1, Redis messages + SQLite management; one "
          "round = POST 1 message + GET ?echo=true; orjson %s"
          % ("on stacktrail's path" if args.fast else "not installed"))
    print("%d blocks of %d rounds (+%d warm-up) of %d new server processes "
          "per configuration, interleaved request by request, %.0f s"
          % (args.blocks, args.rounds, args.warmup, args.servers, elapsed))
    print("machine: %.2f of %d cores busy during the rounds (these servers, "
          "the agent and the client: %.2f; the rest is Redis and others)"
          % (load["busy"], load["cores"], load["ours"]))
    print()
    print("%-11s %8s %6s %13s %8s %6s %7s %11s %6s" % (
        "", "p50 ms", "ratio", "95% interval", "p99 ms", "ratio", "paired",
        "CPU/req us", "ratio"))
    ratios, intervals = {}, {}
    for target in targets:
        p50, p99 = pct(target.rounds, 0.5), pct(target.rounds, 0.99)
        paired = statistics.median(
            a / b for a, b in zip(target.rounds, off.rounds))
        cpu = target.cpu / requests_per
        ratios[target.name] = p50 / off_p50
        intervals[target.name] = (1.0, 1.0) if target is off else \
            p50_interval(target, off)
        print("%-11s %8.3f %6.3f %6.3f-%-6.3f %8.3f %6.3f %7.3f %11.0f %6.3f"
              % (target.name, p50 * 1e3, p50 / off_p50,
                 *intervals[target.name], p99 * 1e3, p99 / off_p99, paired,
                 cpu * 1e6, cpu / off_cpu if off_cpu else float("inf")))
    triggered = by_name["triggered"]
    print("%-11s %s %11.0f   (per triggered request; %.1f points each)" % (
        "agent", " " * 59, agent_cpu / requests_per * 1e6,
        received / requests_per))
    print()
    ok = verdicts(ratios, intervals, TARGETS, 28)
    failed = {t.name: t.failures for t in targets if t.failures}
    print("failed requests: %d of %d" % (
        sum(len(f) for f in failed.values()), requests_per * len(targets)))
    for name, failures in failed.items():
        print("  %s: %d, first %s" % (name, len(failures), failures[0]))
    per_trace = statistics.median(points.values()) if points else 0
    print("triggered traces stored with both wsgi spans: %d of %d "
          "(median %d points per trace)" % (complete, len(triggered.trace_ids),
                                            per_trace))
    if missing:
        print("  missing, e.g. %s" % missing[:3])
    print("osprofiler traces stored (sample): %d of %d (median %d points "
          "per trace)" % (osp_complete, osp_sampled,
                          statistics.median(osp_points.values())
                          if osp_points else 0))
    print("agent: received %d, written %d, dropped %s" % (
        status["received"], status["written"], status["dropped"] or "{}"))
    if crashed:
        print("servers no longer running: %s" % ", ".join(crashed))
    if failed or missing or crashed or osp_complete < osp_sampled or \
            status["dropped"]:
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
