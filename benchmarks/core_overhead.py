"""Request-path cost of the core tracer against osprofiler 4.4.0.

Run: .venv/bin/python benchmarks/core_overhead.py

Both libraries are measured in this one process, interleaved, so machine
noise hits both alike; the ratios are what the targets of issue 2 name.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

from _compare import per_call, report  # noqa: E402

from osprofiler import notifier as os_notifier  # noqa: E402
from osprofiler import profiler as os_profiler  # noqa: E402

from stacktrail import notifier as st_notifier  # noqa: E402
from stacktrail import profiler as st_profiler  # noqa: E402


def plain(x):
    return x


class VolumeAPI:
    """The shape of a traced OpenStack call: a method with a context."""

    def get(self, context, volume_id, read_deleted="no"):
        return volume_id


class Context:
    user_id = "demo"
    project_id = "demo"


st_traced = st_profiler.trace("bench")(plain)
os_traced = os_profiler.trace("bench")(plain)
API_CALLS = {
    "plain": VolumeAPI(),
    "stacktrail": type("StAPI", (VolumeAPI,), {
        "get": st_profiler.trace("db")(VolumeAPI.get)})(),
    "osprofiler": type("OsAPI", (VolumeAPI,), {
        "get": os_profiler.trace("db")(VolumeAPI.get)})(),
}


def resting_api_method():
    """The representative case (osprofiler formats args even when off)."""
    ctx = Context()
    volume = "8c2a1f7e-1c1b-4d4e-9a0e-5f6c7d8e9f00"

    def cost(api):
        return per_call(lambda: api.get(ctx, volume), number=200000)
    base = cost(API_CALLS["plain"])
    return report("resting: traced API method, no trace (added)",
                  cost(API_CALLS["stacktrail"]) - base,
                  cost(API_CALLS["osprofiler"]) - base, 0.1)


def resting_trivial():
    """Worst case for us: f(1), where osprofiler's formatting is cheapest."""
    base = per_call(lambda: plain(1), number=200000)
    ours = per_call(lambda: st_traced(1), number=200000) - base
    theirs = per_call(lambda: os_traced(1), number=200000) - base
    return report("resting: trivial f(1), no trace (added)", ours, theirs,
                  0.1)


def pair(module):
    module.start("bench", None)
    module.stop()


def active(label, st_sink, os_sink, target):
    st_notifier.set(st_sink)
    os_notifier.set(os_sink)
    st_profiler.init("bench-key")
    os_profiler.init("bench-key")
    ours = per_call(lambda: pair(st_profiler))
    theirs = per_call(lambda: pair(os_profiler))
    st_profiler.clean()
    os_profiler.clean()
    return report(label, ours, theirs, target)


def discard(info, context=None):
    pass


# VmRSS, not ru_maxrss: after fork+exec the peak still holds the parent's.
IMPORT_PROBE = r"""
import time
def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
before = rss_kib()
t0 = time.perf_counter()
import %s
elapsed = time.perf_counter() - t0
print(elapsed, (rss_kib() - before) / 1024.0)
"""


def import_cost(module):
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE % module],
                             capture_output=True, text=True, check=True)
        runs.append(tuple(float(v) for v in out.stdout.split()))
    return min(r[0] for r in runs), min(r[1] for r in runs)


def imports():
    ours_s, ours_mib = import_cost("stacktrail.profiler")
    theirs_s, theirs_mib = import_cost("osprofiler.profiler")
    ok = ours_s <= 0.030 and ours_mib <= 3.0
    print("%-44s ours %6.1f ms %5.1f MiB  osprofiler %6.1f ms %5.1f MiB "
          "(target <= 30 ms, <= 3 MiB) %s"
          % ("import profiler", ours_s * 1e3, ours_mib, theirs_s * 1e3,
             theirs_mib, "ok" if ok else "MISSED"))
    return ok


def main():
    st_profiler.clean()
    os_profiler.clean()
    results = [
        resting_api_method(),
        resting_trivial(),
        active("active: start+stop, noop:// vs no-op notifier",
               st_notifier.create("noop://"), discard, 0.2),
        active("active: start+stop, callable (formatted dicts)",
               discard, discard, 0.5),
        imports(),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
