"""What the service benchmarks read about processes and the machine
(``/proc``), and the statistics and verdict lines they share."""

import contextlib
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path):
    """utime + stime, in seconds, of a /proc ``stat`` file."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    return _stat_cpu("/proc/%d/stat" % pid)


def thread_cpu_seconds(pid):
    """{thread id: utime + stime in seconds} of every thread of ``pid``
    (the main thread's id is ``pid``)."""
    out = {}
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(task)] = _stat_cpu("/proc/%d/task/%s/stat" % (pid, task))
        except OSError:   # a thread that ended
            continue
    return out


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def flush_redis(url):
    """Empty the Redis database of ``url`` (a benchmark's own), quietly."""
    import redis
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def verdicts(ratios, intervals, targets, width, what="p50 / off p50"):
    """Print each target's verdict (and osprofiler's ratio beside them)
    on ``what`` (the ratio compared); True when every target holds."""
    ok = True
    for name, target in targets.items():
        met = ratios[name] <= target
        ok = ok and met
        low, high = intervals[name]
        print("%-*s ratio %.3f (target <= %s) %s  [95%% %.3f-%.3f]" % (
            width, "%s %s" % (name, what), ratios[name], target,
            "ok" if met else "MISSED", low, high))
    print("%-*s ratio %.3f (for comparison)" % (
        width, "osprofiler " + what, ratios["osprofiler"]))
    print()
    return ok
