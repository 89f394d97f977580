"""What tracing costs a zaqar-server, counted in instructions.

    .venv/bin/python benchmarks/zaqar_instructions.py [--rounds 40]
        [--warmup 30] [--fast] [--hash-seed 1] [--without redis,...]

benchmarks/zaqar_overhead.py times what a user waits for on a machine
whose speed moves from one second to the next, so its ratios carry
intervals about as wide as the armed target.  This one counts what the
server's processor is asked to do, a figure that does not move: two real
zaqar-server 23 processes, that benchmark's ``off`` and ``armed`` (Redis
messages, SQLite management, the fragment's lines, ``agent://`` to a
real stacktrail-agent), run under valgrind's callgrind with counting off
until they are warm; then each is sent the same rounds (POST one message
+ GET ``?echo=true``) and counts them, thread by thread.  The armed
process gets three kinds of rounds in turn, ``--rounds`` of each, twice:

* ``armed``: unsigned, like off's;
* ``headers``: unsigned, carrying a trace's three headers under other
  names: what Zaqar's HTTP server (wsgiref) spends parsing them, before
  stacktrail sees them;
* ``triggered``: signed, a new trace each round (the agent stores it).

Printed: instructions per round of the request thread and of the other
threads (stacktrail's flusher), each kind's ratio to off, and what a trace
adds, split into the header parsing, stacktrail's work on the request
thread and its flusher.  Not counted: the client's, Redis's and the
agent's work, nor cache and memory effects, which the timed benchmark
includes.  Under valgrind a round lasts about fifty times longer, so the
flusher (which wakes every 0.2 s) sends a batch every round or so, where
at full speed it sends one for several rounds: its share is an upper
bound.  ``--fast`` puts orjson (the part of the ``fast`` extra that a
service uses) on the armed server's path, as ``pip install
'stacktrail[fast]'`` would; hiredis, the other part, would speed up
Zaqar's own Redis client too and is left out.  ``--without redis`` (a
comma-separated list of the fragment's ``trace_*`` flags, without the
prefix) turns those flags off on the armed server: the difference to a
run with them on is what their spans cost.  Both servers run with one
``PYTHONHASHSEED`` (``--hash-seed``).  The two passes of a kind in one
server differ by about 0.1 %; servers started anew, by up to 1 % (where
a process's code and data land moves its lookups through the
interpreter's caches), which is why what a trace adds is taken within
one server, kind against kind, and the ratios to off hold to about 1 %.
Exit status 0, or 2 when a request failed.  About two minutes.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zaqar_overhead  # noqa: E402
from tests.services import tracing  # noqa: E402

PASSES = 2
ARMED_KINDS = ("armed", "headers", "triggered")


class Counted:
    """One server under callgrind: its targets, and its counts by kind."""

    def __init__(self, server, prefix, targets):
        self.server = server
        self.prefix = prefix            # callgrind_control's --vgdb-prefix
        self.targets = targets          # kind -> zaqar_overhead.Target
        self.out = None

    def control(self, *args):
        subprocess.run(["callgrind_control", "--vgdb-prefix=" + self.prefix]
                       + list(args) + [str(self.server.pid)],
                       capture_output=True, check=True)

    def round(self, kind, n, key):
        target = self.targets[kind]
        target.new_round(key)
        if kind == "headers":
            target.headers = {"X-Untraced-" + name: value for name, value
                              in tracing.signed_headers(key)[1].items()}
        target.request("POST", n)
        target.request("GET", n)

    def run(self, rounds, warmup, key):
        """Warm up, then count ``rounds`` rounds of each kind, PASSES
        times; each pass of each kind is dumped on its own."""
        kinds = list(self.targets)
        for n in range(warmup):
            self.round(kinds[n % len(kinds)], n, key)
        time.sleep(1.0)
        self.control("-i", "on")
        self.control("-z")
        for done in range(PASSES):
            for kind in kinds:
                for n in range(rounds):
                    self.round(kind, n, key)
                time.sleep(0.6)   # the flusher's last batch of the kind
                self.control("-d", "%s.%d" % (kind, done))
        self.control("-i", "off")

    def failures(self):
        return sum(len(t.failures) for t in self.targets.values())


def valgrind(workdir, name):
    """(runner command, vgdb prefix, callgrind output) of one server."""
    prefix = str(workdir / ("vgdb-" + name))
    out = workdir / ("callgrind-" + name)
    return (["valgrind", "--tool=callgrind", "--instr-atstart=no",
             "--separate-threads=yes", "--vgdb-prefix=" + prefix,
             "--callgrind-out-file=%s.%%p" % out], prefix, out)


def counts(out, rounds):
    """{kind: (request thread, other threads)} instructions per round,
    averaged over the passes, from the callgrind dumps of ``out``."""
    sums = collections.defaultdict(lambda: [0, 0])
    for path in out.parent.glob(out.name + ".*-*"):
        kind, main = _dump(path)
        if kind is None:
            continue
        sums[kind][0 if main else 1] += _total(path)
    return {kind: tuple(v / (rounds * PASSES) for v in pair)
            for kind, pair in sums.items()}


def _dump(path):
    """(kind of the dump, whether it is the main thread's), or (None, _)
    for a dump that is not one of ours (the one valgrind writes at exit)."""
    main = path.name.endswith("-01")
    with open(path) as f:
        for line in f:
            if line.startswith("desc: Trigger:"):
                reason = line.split()[-1]     # "<kind>.<pass>" for ours
                if "." in reason and line.split()[-2] == "dump":
                    return reason.rsplit(".", 1)[0], main
                break
            if line.startswith(("events:", "totals:", "summary:")):
                break
    return None, main


def _total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    return 0


def report(args, result, failures):
    off = sum(result["off"])
    print("zaqar-server 23 under callgrind; a round = POST 1 message + GET "
          "?echo=true; %d rounds of each kind, %d passes; orjson %s; "
          "PYTHONHASHSEED=%d%s" % (
              args.rounds, PASSES, "on the armed server's path" if args.fast
              else "not installed", args.hash_seed,
              "; off on the armed server: " + args.without
              if args.without else ""))
    print()
    print("%-12s %16s %16s %16s %8s" % ("instructions", "request thread",
                                        "other threads", "total", "x off"))
    for kind in ("off",) + ARMED_KINDS:
        main, others = result[kind]
        print("%-12s %16s %16s %16s %8.4f"
              % (kind, format(int(main), ","), format(int(others), ","),
                 format(int(main + others), ","), (main + others) / off))
    armed, headers, traced = (result[k] for k in ARMED_KINDS)
    parsing = headers[0] - armed[0]
    ours = traced[0] - headers[0]
    flusher = traced[1] - armed[1]
    added = parsing + ours + flusher
    print()
    print("a trace adds %s a round: %s (%.0f %%) the HTTP server parsing "
          "its headers, %s (%.0f %%) stacktrail on the request thread, %s "
          "(%.0f %%) its flusher"
          % (format(int(added), ","), format(int(parsing), ","),
             100 * parsing / added, format(int(ours), ","),
             100 * ours / added, format(int(flusher), ","),
             100 * flusher / added))
    print("failed requests: %d" % failures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40,
                        help="counted rounds of each kind in each pass")
    parser.add_argument("--warmup", type=int, default=30,
                        help="uncounted rounds first, of every kind")
    parser.add_argument("--fast", action="store_true",
                        help="orjson on the armed server's path")
    parser.add_argument("--without", default="", metavar="FLAGS",
                        help="trace_* flags off on the armed server "
                        "(comma-separated, without the prefix)")
    parser.add_argument("--hash-seed", type=int, default=1,
                        help="PYTHONHASHSEED of both servers")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    key = "bench-" + secrets.token_hex(16)
    os.environ["PYTHONHASHSEED"] = str(args.hash_seed)   # the servers'
    with contextlib.ExitStack() as stack:
        env, workdir, urls, overlay, agent = zaqar_overhead.setup(
            stack, "st-zqinstr-", ("messages", "stacktrail"),
            overlay_packages=zaqar_overhead.FAST if args.fast else ())
        servers = {}
        for name, kinds in (("off", ("off",)), ("armed", ARMED_KINDS)):
            runner, prefix, out = valgrind(workdir, name)
            server = zaqar_overhead.start_server(
                stack, workdir / name, name, env, overlay, urls["messages"],
                agent.url, None, key, runner=runner,
                max_triggered_traces_per_second=0,
                **{"trace_" + flag: False
                   for flag in filter(None, args.without.split(","))})
            targets = {kind: zaqar_overhead.open_target(stack, kind, server)
                       for kind in kinds}
            for target in targets.values():
                # A GET answers with up to 10 messages: every queue holds
                # that many from the start, so that every round is alike.
                target.client.post_messages(
                    target.queue, [{"body": {"fill": i}, "ttl": 3600}
                                   for i in range(10)])
            servers[name] = (Counted(server, prefix, targets), out)
        # Counting does not depend on the machine's load: both at once.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(counted.run, args.rounds, args.warmup,
                                     key)
                         for counted, _ in servers.values()]:
                done.result()
        result = {}
        for counted, out in servers.values():
            result.update(counts(out, args.rounds))
        failures = sum(c.failures() for c, _ in servers.values())
        report(args, result, failures)
    return 2 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
