"""What one trace costs a zaqar-server, inside one warm process.

    .venv/bin/python benchmarks/zaqar_trace_cost.py [--blocks 10]
        [--block 300]

One real zaqar-server 23 configured as ``armed`` in
benchmarks/zaqar_overhead.py (the fragment's lines in zaqar.conf, points to
a real stacktrail-agent), sent rounds of POST one message + GET
``?echo=true`` back to back (the clients of benchmarks/zaqar_overhead.py,
one per kind, each on its own queue): blocks of ``--block`` rounds, every
request of a block signed (a new trace per round) or none of them, the
two kinds alternating.  After each block (and a pause for the
flusher's last batch) the server's CPU time is read per thread from
/proc: the request thread and the others (the flusher), and the agent's.

Checked: every response is 201 (POST) or 200 (GET), and the agent wrote
every point it received and dropped none (exit status 2 otherwise).

Printed per kind: the median over blocks of the server's CPU per round,
split into request thread and other threads, and of the agent's; then
what a trace adds to a round.  The same process serves both kinds, so
what differs between processes (where their code and data landed, their
hash seeds) is not in it, and the rounds run back to back, so nothing
here is cold: benchmarks/zaqar_overhead.py measures what a user waits
for; this shows where a traced round's CPU goes.  No target: CPU is read
at clock ticks (10 ms), so use blocks of 300 rounds or more; and runs
differ (380-650 us added per round in three runs here), so compare two
versions side by side, several runs each, before believing a change.
"""

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _procstat import cpu_seconds, thread_cpu_seconds  # noqa: E402

import zaqar_overhead  # noqa: E402


def one_round(targets, key, signed, n):
    """POST + GET through the target of that kind: signed with a new trace
    (``triggered``) or not (``armed``); both talk to the same server."""
    target = targets[signed]
    target.new_round(key)
    target.request("POST", n)
    target.request("GET", n)


def measure_block(server, agent, send, signed, rounds):
    """(request thread, other threads, agent) CPU microseconds per round."""
    before = thread_cpu_seconds(server.pid)
    agent_before = cpu_seconds(agent.pid)
    for n in range(rounds):
        send(signed, n)
    time.sleep(0.5)   # the flusher's last batch sent and written
    after = thread_cpu_seconds(server.pid)
    agent_after = cpu_seconds(agent.pid)
    main = after[server.pid] - before.get(server.pid, 0.0)
    others = sum(cpu - before.get(tid, 0.0) for tid, cpu in after.items()
                 if tid != server.pid)
    return tuple(1e6 * v / rounds
                 for v in (main, others, agent_after - agent_before))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10,
                        help="blocks of each kind")
    parser.add_argument("--block", type=int, default=300,
                        help="rounds per block")
    args = parser.parse_args()
    key = "bench-" + secrets.token_hex(16)
    with contextlib.ExitStack() as stack:
        env, workdir, urls, overlay, agent = zaqar_overhead.setup(
            stack, "st-zqcost-", ("messages", "stacktrail"))
        # Back to back, a server gets far more signed requests a second
        # than the default max_triggered_traces_per_second: without a
        # limit, every signed round is traced.
        server = zaqar_overhead.start_server(
            stack, workdir / "armed", "armed", env, overlay,
            urls["messages"], agent.url, None, key,
            max_triggered_traces_per_second=0)
        targets = {signed: zaqar_overhead.open_target(stack, name, server)
                   for signed, name in ((False, "armed"),
                                        (True, "triggered"))}

        def send(signed, n):
            one_round(targets, key, signed, n)
        for n in range(100):   # warm-up, both kinds
            send(n % 2 == 0, n)
        time.sleep(1.0)
        kinds = {False: [], True: []}
        for block in range(args.blocks):
            for signed in (block % 2 == 0, block % 2 == 1):
                kinds[signed].append(measure_block(
                    server, agent.proc, send, signed, args.block))
        # every point the agent took is in the store before the verdict
        agent.wait_written(agent.status()["received"], timeout=30)
        failures = sum(len(t.failures) for t in targets.values())
        return report(args, kinds, failures, agent.status(),
                      len(targets[True].trace_ids))


def report(args, kinds, failures, status, signed_rounds):
    medians = {signed: [statistics.median(block[i] for block in blocks)
                        for i in range(3)]
               for signed, blocks in kinds.items()}
    print("zaqar-server 23, armed (the fragment's lines in zaqar.conf), "
          "one process; a round = POST 1 message + GET ?echo=true")
    print("%d blocks of %d rounds per kind, alternating; CPU per round, "
          "median over blocks" % (args.blocks, args.block))
    print()
    print("%-18s %12s %12s %12s %10s" % ("", "request thr.", "other thr.",
                                         "server", "agent"))
    for signed, label in ((False, "unsigned (armed)"),
                          (True, "signed (traced)")):
        main, others, agent = medians[signed]
        print("%-18s %9.0f us %9.0f us %9.0f us %7.0f us"
              % (label, main, others, main + others, agent))
    base, traced = medians[False], medians[True]
    added = [t - b for t, b in zip(traced, base)]
    print("%-18s %9.0f us %9.0f us %9.0f us %7.0f us   (%.1f %% of the "
          "server's CPU per round)"
          % ("a trace adds", added[0], added[1], added[0] + added[1],
             added[2], 100.0 * (added[0] + added[1]) / (base[0] + base[1])))
    print()
    print("failed requests: %d; agent: received %d, written %d, dropped %s"
          % (failures, status["received"], status["written"],
             status["dropped"] or "{}"))
    print("points a signed round: %.1f" % (status["received"] / signed_rounds))
    complete = status["written"] == status["received"]
    return 0 if not failures and not status["dropped"] and complete else 2


if __name__ == "__main__":
    raise SystemExit(main())
