"""Which requests get traced: per-process rate limits and head sampling.

Two budgets, so that no unauthenticated input can use up the traces an
administrator asks for: one for signed triggers (an osprofiler header or
RPC token signed with one of our keys), one for everything else (a
trusted ``traceparent``, local sampling).
"""

import random
import time


# A process decides once per trace: its later requests follow the first
# one's decision for this long (the requests one operation sends a process
# come within seconds), and this many decisions are remembered at most.
FOLLOW_SECONDS = 30.0
FOLLOWED_MAX = 4096


class RateLimiter:
    """Token bucket: at most ``rate`` traced requests a second, bursts up
    to ``rate``.

    When ``allow`` names the trace a request belongs to, the first request
    of that trace decides for the later ones (for FOLLOW_SECONDS): a trace
    refused stays refused, and a trace let in keeps its later requests in,
    borrowing from the next second when the bucket is empty (down to one
    second's worth).  Under a flood new traces are refused first, and no
    trace is cut in half; averaged over a couple of seconds the rate still
    holds.

    A rate of 0 means no limit.  Races between threads can admit one extra
    request; that is cheaper than a lock on every request.
    """

    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = self.rate
        self.stamp = time.monotonic()
        self._decided = {}   # trace id -> (when, let in)

    def allow(self, trace_id=None):
        """Whether this request may be traced; ``trace_id``: the trace it
        joins, when it names one."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.rate,
                          self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        decided = self._decided.get(trace_id)   # None is never decided
        if decided is not None and now - decided[0] < FOLLOW_SECONDS:
            if not decided[1] or self.tokens - 1.0 < -self.rate:
                return False
            self.tokens -= 1.0
            return True
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        if trace_id is not None:
            self._decide(trace_id, now, allowed)
        return allowed

    def _decide(self, trace_id, now, allowed):
        decided = self._decided
        if len(decided) >= FOLLOWED_MAX:
            # list() copies in one step: other threads may decide meanwhile
            for old, (at, _) in list(decided.items()):
                if now - at >= FOLLOW_SECONDS:
                    decided.pop(old, None)
            if len(decided) >= FOLLOWED_MAX:
                decided.clear()
        decided[trace_id] = (now, allowed)


def sampled(rate, _random=random.random):
    """Local head sampling: True for about ``rate`` of calls."""
    return rate > 0 and _random() < rate
