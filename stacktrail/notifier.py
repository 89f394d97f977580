"""Where trace points go (osprofiler's ``notifier`` API).

``set`` installs either a sink (``common.sink``: the request path hands it
raw points, formatting happens off the request thread) or a plain callable,
which keeps osprofiler's synchronous semantics: it receives each formatted
message dict at once.
"""

from stacktrail.common import logtext
from stacktrail.common import sink as _sink

_notifier = _sink.NoopSink()
_put = _notifier.put
_cache = {}
_refused = logtext.Problems()   # by connection string


def set(notifier):  # noqa: A001 - osprofiler's name
    """Install ``notifier``: a Sink, or a callable taking a message dict."""
    global _notifier, _put
    target = notifier if isinstance(notifier, _sink.Sink) \
        else _sink.CallableSink(notifier)
    _notifier = notifier
    _put = target.put


def get():
    """The notifier installed with ``set``."""
    return _notifier


def notify(info):
    """Pass one formatted message to the installed notifier."""
    _notifier(info)


def create(connection_string, *args, **kwargs):
    """A sink for a connection string (or ``connection_string`` itself
    when it is already a callable).

    A string that cannot be used (unknown scheme, store unreachable at
    start, bad option) logs one line and gives a no-op sink: the service
    keeps running untraced.
    """
    if callable(connection_string):
        return connection_string
    # One sink (one buffer, one flusher) per store and writer identity.
    get = kwargs.get
    key = (connection_string, get("project"), get("service"), get("host"))
    if key not in _cache:
        _cache[key] = _make_sink(connection_string, args, kwargs)
    return _cache[key]


def _make_sink(connection_string, args, kwargs):
    import logging
    from stacktrail.drivers import base
    LOG = logging.getLogger(__name__)
    try:
        driver = base.get_driver(connection_string, *args, **kwargs)
        made = driver.make_sink()
    except Exception as exc:
        problem = logtext.one_line(exc, with_type=False)
    else:
        problem = None
    # Logged outside the handler: oslo.log would append the exception.
    if problem is not None:
        # Once however many identities of the process ask for it.
        if _refused.new(connection_string, problem):
            LOG.error("stacktrail: tracing disabled, cannot use connection "
                      "string %r: %s",
                      logtext.mask_passwords(connection_string), problem)
        return _sink.NoopSink()
    _refused.solved(connection_string)
    if not any(key[0] == connection_string for key in _cache):
        LOG.info("stacktrail: trace points go to %s",
                 logtext.mask_passwords(connection_string))
    return made


def clear_notifier_cache():
    _cache.clear()
    _refused.clear()
