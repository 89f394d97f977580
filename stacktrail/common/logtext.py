"""Text fit for a log line or a one-line error: no password, no newline."""


def mask_passwords(text):
    """``text`` with every password and secret of a connection string in
    it replaced by *** (``common.redact.mask_text``: URL passwords in every
    form, also inside %-encoded URLs such as ``transport_url=``, secret
    ``name=value`` parameters, token-shaped values)."""
    from stacktrail.common import redact  # its patterns take ms to compile
    return redact.mask_text(text)


def one_line(error, limit=300, with_type=True):
    """An error as one short line: its first line, passwords masked.

    Only the first line: drivers put statements and parameters after it.
    """
    lines = str(error).strip().splitlines()
    # Masked before it is cut: a cut inside a URL could hide its "@".
    text = mask_passwords(lines[0][:limit + 4096])[:limit] if lines else ""
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    if not with_type or not name:
        return text or name
    return "%s: %s" % (name, text) if text else name


class Throttle:
    """At most one log line per key and ``interval`` seconds.

    ``ready(key)`` says whether a line may be written now and how many
    were held back since the last one, so that the line can say so::

        ok, held = throttle.ready("fd_limit")
        if ok:
            LOG.warning("... (%d more since the last message)", held)

    Used where one cause can repeat thousands of times a second (a refused
    connection, a full disk, a failing frame): the counters say how often,
    the log says that it happens, without flooding it.
    """

    def __init__(self, interval=60.0, clock=None):
        import threading
        import time
        self.interval = interval
        self._clock = clock or time.monotonic
        self._last = {}
        self._held = {}
        self._lock = threading.Lock()

    def ready(self, key):
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._held.pop(key, 0)

    def log(self, logger, level, key, message, *args):
        """``logger.log(level, message % args)`` unless throttled; a held
        count is appended to the line.  Returns True when logged."""
        ok, held = self.ready(key)
        if ok:
            if held:
                message += " (%d more like this since the last message)"
                args = args + (held,)
            logger.log(level, message, *args)
        return ok


class Problems:
    """The problem last said for each key: a line once per problem, again
    only when it changes or after ``solved(key)``.  For what a process
    meets again and again while it stays the same (one bad configuration
    read by every caller that initialises tracing)."""

    def __init__(self):
        self._said = {}

    def new(self, key, problem):
        """True when ``problem`` is not what was last said for ``key``."""
        if self._said.get(key) == problem:
            return False
        self._said[key] = problem
        return True

    def solved(self, key):
        self._said.pop(key, None)

    def clear(self):
        self._said.clear()


class Logger:
    """``logging.getLogger(name)``, with ``logging`` imported at the first
    line written: the modules ``import stacktrail.profiler`` loads stay
    clear of its import (a third of ours) in processes that never log."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        import logging
        return getattr(logging.getLogger(self._name), attr)
