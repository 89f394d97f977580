"""Clock reads on the request path, timestamp text off it."""

import time

now_ns = time.time_ns

_cached_second = None
_cached_text = ""


def format_timestamp(ns):
    """Naive UTC ``%Y-%m-%dT%H:%M:%S.%f`` text, as osprofiler writes it.

    Points arrive in bursts within one second, so the second's text is cached
    and only the microseconds are formatted each time.
    """
    global _cached_second, _cached_text
    second, rest = divmod(ns, 1_000_000_000)
    if second != _cached_second:
        _cached_text = time.strftime("%Y-%m-%dT%H:%M:%S",
                                     time.gmtime(second))
        _cached_second = second
    return "%s.%06d" % (_cached_text, rest // 1000)


def parse_timestamp(text):
    """Nanoseconds since the epoch from osprofiler's timestamp text."""
    import calendar
    head, _, frac = text.partition(".")
    seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    return (seconds * 1_000_000_000
            + int((frac or "0").ljust(6, "0")[:6]) * 1000)
