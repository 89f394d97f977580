"""What tracing armed costs a Cinder or Nova lifecycle, counted in \
instructions.

    .venv/bin/python benchmarks/instructions.py nova [--lifecycles 3]
        [--configs off,armed,disabled] [--parallel 2] [--keep DIR]
        [--within BLOCKS]

The time-based benchmarks (cinder_overhead.py, nova_overhead.py) compare
CPU time on a machine whose speed moves by up to half from one second to
the next, so an armed cost of a few tenths of a percent needs many turns
and still straddles its target.  This one counts what the processor is
asked to do instead: each configuration's bench process (the same test and
configuration as those benchmarks') runs under valgrind's callgrind with
counting off; once its warm-up and first counted lifecycle are over,
counting goes on for ``--lifecycles`` lifecycles and off again
(``callgrind_control``).  The count is the same whatever else the machine
does, so processes can run side by side (``--parallel``).  It leaves out
what instructions do not show: cache and memory effects, which the
time-based benchmarks include.

Configurations (the overhead benchmarks' names):

* ``off``: the service as published;
* ``armed``: the shipped fragment, ``enabled = true``, requests unsigned;
* ``disabled``: the same with ``enabled = false`` (what stacktrail's API
  filter costs in place of the service's own osprofiler filter);
* ``armed-<flag>[+<flag>...]``: armed with those ``trace_<flag>`` off
  (e.g. ``armed-sqlalchemy``), to see what integrations add.

Processes started anew differ by up to 1 % (where their code and data
land), more than what armed adds.  ``--within BLOCKS`` measures without
that: one armed process, switched to ``enabled = false`` and back every
``--lifecycles`` counted lifecycles through oslo.config's reload (what a
SIGHUP does; ``in_service.bench.Turns``), each lifecycle dumped on its own;
the lifecycle after each switch is not counted.  It prints each state's
mean and range relative to the switched-off mean.

Printed: instructions per lifecycle and the ratio to ``off``.  Under
callgrind a lifecycle runs about 50 times slower; a run of three
configurations takes about five minutes with two in parallel.
"""

import argparse
import concurrent.futures
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cinder_overhead as common  # noqa: E402
import nova_overhead  # noqa: E402
from tests.services import envs  # noqa: E402

SERVICES = {"cinder": common.Service, "nova": nova_overhead.NovaService}
WARMUP = 2


def settings(name, service):
    """(environment, [profiler] options) of configuration ``name``; the
    options are None for ``off``.  Nothing is triggered, so the agent
    named is never written to."""
    if name == "off":
        return {}, None
    env_vars, options = service.stacktrail_settings(
        "agent:///nonexistent.sock", "instructions-key")
    if name == "disabled":
        options = dict(options, enabled=False)
    elif name.startswith("armed-"):
        options = dict(options, **{"trace_" + flag: False
                                   for flag in name[6:].split("+")})
    elif name != "armed":
        raise SystemExit("unknown configuration %r" % name)
    return env_vars, options


def _pid_of(marker):
    """The bench process whose environment holds ``marker``."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker.encode() in f.read():
                    return pid
        except OSError:
            continue
    return None


def _lines(path):
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _wait_lines(path, count, alive):
    while _lines(path) < count:
        if not alive():
            raise RuntimeError("the bench process ended early")
        time.sleep(0.01)


def _control(prefix, pid, *args):
    subprocess.run(["callgrind_control", "--vgdb-prefix=" + prefix]
                   + list(args) + [pid], capture_output=True, check=True)


class Process:
    """One bench process of configuration ``name`` under callgrind, its
    counting off until ``on()``; ``extra`` adds to its environment."""

    def __init__(self, service, env, overlay, name, workdir, hash_seed,
                 **extra):
        self.work = Path(tempfile.mkdtemp(prefix=name + "-", dir=workdir))
        self.durations = self.work / "durations.jsonl"
        self.out = self.work / "callgrind.out"
        self.prefix = str(self.work / "vgdb")
        wrapper = self.work / "python"
        wrapper.write_text(
            "#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
            "--vgdb-prefix=%s --callgrind-out-file=%s %s \"$@\"\n"
            % (self.prefix, self.out, env.python))
        wrapper.chmod(0o755)
        env_vars, options = settings(name, service)
        config = common.Config(name, overlay if options is not None
                               else None, env_vars, options)
        env_vars = common.padded(dict(
            config.env_vars, STACKTRAIL_BENCH_DURATIONS=str(self.durations),
            STACKTRAIL_BENCH_WARMUP=str(WARMUP),
            STACKTRAIL_BENCH_WAIT="notification",
            STACKTRAIL_BENCH_POLL="0.005", STACKTRAIL_BENCH_RPC_POLL="0.002",
            PYTHONHASHSEED=str(hash_seed), **extra),
            service.added_environ(config))
        self.failure = []
        self.runner = threading.Thread(target=lambda: self.failure.append(
            service.run(copy_env(env, wrapper), config, env_vars, 3600)),
            daemon=True)
        self.runner.start()
        self.pid = None

    def on(self):
        self.pid = _pid_of(str(self.durations))
        self.control("-i", "on")

    def control(self, *args):
        _control(self.prefix, self.pid, *args)

    def join(self, name):
        self.runner.join()
        if self.failure and self.failure[0]:
            raise RuntimeError("%s: the bench test failed:\n%s"
                               % (name, self.failure[0]))

    def dumps(self):
        """The instructions of each dump, in the order of the dumps."""
        found = sorted((int(p.name.rsplit(".", 1)[1]), p)
                       for p in self.work.iterdir()
                       if p.name.startswith(self.out.name + "."))
        return [_totals(path) for _, path in found]


def count(service, env, overlay, name, lifecycles, workdir, hash_seed=1):
    """Instructions of ``lifecycles`` lifecycles of configuration ``name``."""
    process = Process(service, env, overlay, name, workdir, hash_seed,
                      STACKTRAIL_BENCH_ITERATIONS=str(lifecycles + 2))
    alive = process.runner.is_alive
    _wait_lines(process.durations, 1, alive)
    process.on()
    _wait_lines(process.durations, 1 + lifecycles, alive)
    process.control("-i", "off")
    process.control("-d", "counted")
    process.join(name)
    rows = [json.loads(line)
            for line in process.durations.read_text().splitlines()]
    return sum(process.dumps()) / lifecycles, [row.get("gets")
                                               for row in rows]


def count_within(service, env, overlay, blocks, per_block, workdir,
                 hash_seed=1):
    """{"armed": [...], "disabled": [...]}: the instructions of each
    lifecycle of one armed process switched to ``enabled = false`` and back
    every ``per_block`` lifecycles (as a SIGHUP switches it); the first
    lifecycle after each switch and the switch itself are not counted."""
    control = Path(tempfile.mkdtemp(prefix="control-", dir=workdir))
    for fifo in ("go", "done"):
        os.mkfifo(control / fifo)
    process = Process(service, env, overlay, "armed", workdir, hash_seed,
                      STACKTRAIL_BENCH_CONTROL=str(control))
    done = open(control / "done")
    go = open(control / "go", "w", buffering=1)

    def ask(words):
        go.write(words + "\n")
        if not done.readline():
            raise RuntimeError("the bench process ended early")
    if done.readline().strip() != "ready":
        raise RuntimeError("the bench process ended early")
    process.on()
    labels = []
    state = "armed"
    for _ in range(blocks):
        for turn in range(per_block + 1):
            ask("run 1")
            process.control("-d")
            labels.append(state if turn else None)
        state = "disabled" if state == "armed" else "armed"
        ask("enabled %s" % ("true" if state == "armed" else "false"))
        process.control("-z")
    go.write("stop\n")
    go.close()
    done.close()
    process.join("armed")
    counts = {"armed": [], "disabled": []}
    for label, total in zip(labels, process.dumps()):
        if label:
            counts[label].append(total)
    return counts


def copy_env(env, python):
    """``env`` running its Python through ``python`` (the valgrind
    wrapper); the cached environment itself is left alone."""
    clone = copy.copy(env)
    clone.python = str(python)
    return clone


def _totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def report_within(service, counts):
    print("%s: instructions per lifecycle, one armed process switched to "
          "enabled = false and back (callgrind)" % service.title)
    base = statistics.mean(counts["disabled"])
    for name in ("disabled", "armed"):
        values = counts[name]
        print("  %-9s %2d lifecycles  mean %14s  %.4f x disabled  "
              "(%.4f to %.4f)" % (
                  name, len(values), format(int(statistics.mean(values)),
                                            ","),
                  statistics.mean(values) / base, min(values) / base,
                  max(values) / base))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--lifecycles", type=int, default=3)
    parser.add_argument("--configs", default="off,armed,disabled")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--hash-seed", type=int, default=1,
                        help="PYTHONHASHSEED of every process (where "
                        "objects and cache entries land moves with it)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep each configuration's callgrind output "
                        "under DIR (read it with callgrind_annotate)")
    parser.add_argument("--within", type=int, metavar="BLOCKS",
                        help="instead: one armed process, switched to "
                        "enabled = false and back, BLOCKS blocks of "
                        "--lifecycles counted lifecycles")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    service = SERVICES[args.service]()
    env = service.env()
    names = args.configs.split(",")
    with tempfile.TemporaryDirectory(prefix="stacktrail-instr-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        overlay = envs.stacktrail_overlay(workdir / "stacktrail-site", env)
        if args.within:
            return report_within(service, count_within(
                service, env, overlay, args.within, args.lifecycles,
                workdir, args.hash_seed))
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip(names, pool.map(
                lambda name: count(service, env, overlay, name,
                                   args.lifecycles, workdir, args.hash_seed),
                names)))
    print("%s: instructions per lifecycle (callgrind, %d lifecycles each)"
          % (service.title, args.lifecycles))
    base = results.get("off", (None,))[0]
    for name in names:
        per, gets = results[name]
        ratio = " %.4f x off" % (per / base) if base else ""
        print("  %-20s %14s%s   status GETs per lifecycle: %s"
              % (name, format(int(per), ","), ratio, gets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
