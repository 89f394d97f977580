"""Side-by-side timing helpers shared by the benchmark scripts."""

import timeit


def per_call(fn, number=20000, repeat=7):
    """Best-of-``repeat`` seconds per call of ``fn`` (noise only adds)."""
    timer = timeit.Timer(fn)
    return min(timer.repeat(repeat=repeat, number=number)) / number


def report(label, ours, theirs, target):
    ratio = ours / theirs if theirs > 0 else float("inf")
    verdict = "ok" if ratio <= target else "MISSED"
    print("%-44s ours %9.3f us  theirs %9.3f us  ratio %.3f (target <= %s) %s"
          % (label, ours * 1e6, theirs * 1e6, ratio, target, verdict))
    return ratio <= target
