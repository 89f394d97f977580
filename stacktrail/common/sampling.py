"""Which requests get traced: per-process rate limits and head sampling.

Two budgets, so that no unauthenticated input can use up the traces an
administrator asks for: one for signed triggers (an osprofiler header or
RPC token signed with one of our keys), one for everything else (a
trusted ``traceparent``, local sampling).
"""

import random
import time


class RateLimiter:
    """Token bucket: at most ``rate`` traces a second, bursts up to ``rate``.

    A rate of 0 means no limit.  Races between threads can admit one extra
    trace; that is cheaper than a lock on every request.
    """

    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = self.rate
        self.stamp = time.monotonic()

    def allow(self):
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.rate,
                          self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def sampled(rate, _random=random.random):
    """Local head sampling: True for about ``rate`` of calls."""
    return rate > 0 and _random() < rate
