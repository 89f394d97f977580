"""Driver base class and lookup by connection-string scheme.

Drivers are stevedore plugins in the ``stacktrail.drivers`` namespace, one
entry point per scheme, so a third party adds a store by packaging one.
Only the driver that is asked for is imported.

The write side receives batches from the background flusher
(``write_points``: raw points; formatting happens here, off the request
thread).  The read side is osprofiler's: ``get_report``, ``list_traces``,
``list_error_traces``.
"""

import json
from json import encoder as _json_encoder
import urllib.parse

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import points

NAMESPACE = "stacktrail.drivers"


class DriverError(ValueError):
    """A connection string or store that cannot be used, said in one line."""


# Built once: json.dumps(..., separators=..., default=...) builds a new
# JSONEncoder on every call (about 1.5 us of a 4.4 us small message).
# ``encode`` makes its own circular-reference markers per call, so one
# encoder is safe to share between threads.
_to_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def to_json(message):
    """Compact JSON of a message; values JSON cannot hold become text.

    ``info`` comes from service code and may hold any object: a trace point
    is never lost because one value is not serialisable.
    """
    return _to_json(message)


_quote = _json_encoder.encode_basestring_ascii   # str -> '"..."' (C)
_MESSAGE = ('{"name":%s,"base_id":%s,"trace_id":%s,"parent_id":%s,'
            '"timestamp":"%s","info":%s%s')


def _quoted_id(value):
    """The JSON text of an id: ints as UUID text, peers' text escaped."""
    if type(value) is int:
        return '"%s"' % ids.to_uuid(value)
    if type(value) is str:
        return _quote(value)
    raise TypeError("id of type %s" % type(value).__name__)


def _message_json(point, host, project, service):
    """The slow path of ``points_json``: the same text via the dict."""
    message = points.to_message(point, host, project, service)
    message.setdefault("project", project)
    message.setdefault("service", service)
    try:
        return _to_json(message)
    except (TypeError, ValueError, RecursionError) as exc:
        # info JSON cannot hold (a cycle, non-text keys, nesting deeper than
        # this thread may go): keep the point, say why instead of the info.
        message["info"] = {"host": message["info"].get("host", host),
                           "unencodable_info": type(exc).__name__}
        return _to_json(message)


def points_json(batch, host, project, service):
    """``[to_json(m) for m in format_points(batch)]``, the same text, made
    without the message dicts (the agent's hot loop: about half the cost).

    The fixed fields are formatted as text (ids and timestamps need no
    escaping; names go through the C string encoder) and only ``info`` is
    encoded as JSON.  A point this path cannot take (unusual types, an info
    that cannot be encoded) goes through ``to_message`` and ``to_json``.
    """
    quoted_id = _quoted_id
    quote = _quote
    timestamp = clock.format_timestamp
    suffix = points.SUFFIX
    tail = ',"project":%s,"service":%s}' % (_to_json(project),
                                            _to_json(service))
    host_item = ',"host":%s}' % _to_json(host)
    host_only = '{"host":%s}' % _to_json(host)
    out = []
    append = out.append
    for point in batch:
        try:
            name, phase, base_id, parent_id, trace_id, ns, info = point
            if not info:
                info_text = host_only
            elif type(info) is dict:
                info_text = _to_json(info)
                if "host" not in info:
                    info_text = info_text[:-1] + host_item
            else:
                raise TypeError("info is not a dict")
            append(_MESSAGE % (
                quote(name + suffix[phase]),
                quoted_id(base_id), quoted_id(trace_id),
                quoted_id(parent_id),
                timestamp(ns), info_text, tail))
        except Exception:
            append(_message_json(point, host, project, service))
    return out


def require(module, extra):
    """Import a store's client library, or say in one line how to get it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DriverError("the %s store needs %s: pip install "
                          "'stacktrail[%s]'" % (extra, module, extra)) from None


def scheme_of(connection_string):
    if not isinstance(connection_string, str) or "://" not in connection_string:
        raise DriverError("bad connection string %r: expected scheme://..."
                          % (connection_string,))
    return connection_string.split("://", 1)[0].lower()


def get_driver(connection_string, *args, **kwargs):
    """Instantiate the driver registered for the connection string's scheme."""
    import importlib.metadata
    from stevedore import driver as sd_driver

    scheme = scheme_of(connection_string)
    # Checked first so an unknown scheme is one clear line, not also
    # stevedore's own warning.
    if not importlib.metadata.entry_points(group=NAMESPACE, name=scheme):
        raise DriverError("unknown connection string scheme %r (known: %s)"
                          % (scheme, ", ".join(known_schemes())))
    manager = sd_driver.DriverManager(NAMESPACE, scheme, invoke_on_load=False)
    return manager.driver(connection_string, *args, **kwargs)


def known_schemes():
    import importlib.metadata
    return sorted({ep.name for ep in
                   importlib.metadata.entry_points(group=NAMESPACE)})


class Driver:
    """A trace store or exporter.

    ``project``, ``service`` and ``host`` describe the process writing; the
    flusher calls ``write_points`` with batches, and subclasses override
    ``write_messages`` to store a batch in one round trip.
    """

    def __init__(self, connection_str, project=None, service=None, host=None,
                 conf=None, **kwargs):
        self.connection_str = connection_str
        self.project = project
        self.service = service
        self.host = host or points.HOST
        self.conf = conf
        self.options = kwargs
        self.url = urllib.parse.urlsplit(connection_str)

    def option(self, name, default=None, group="profiler", keywords=()):
        """A driver option: keyword argument (``name`` or one of
        ``keywords``), else ``[group] name`` of ``conf`` (oslo.config object
        or osprofiler-style dict), else default.
        """
        for key in keywords + (name,):
            if self.options.get(key) is not None:
                return self.options[key]
        conf = self.conf
        if isinstance(conf, dict):
            value = (conf.get(group) or {}).get(name)
        else:
            try:
                value = getattr(getattr(conf, group), name)
            except Exception:  # no conf, group or option: use the default
                value = None
        return default if value is None else value

    @classmethod
    def get_name(cls):
        return cls.__module__.rsplit(".", 1)[-1]

    # write side

    def make_sink(self):
        """The sink the notifier installs: a bounded buffer and a flusher."""
        from stacktrail.common import buffer
        size = self.option("buffer_size")  # [profiler] buffer_size
        if size is None:
            return buffer.BufferedSink(self)
        return buffer.BufferedSink(self, max_points=int(size))

    def write_points(self, batch):
        """Format a batch of raw points and store it."""
        self.write_messages(self.format_points(batch))

    def format_points(self, batch):
        """osprofiler messages of a batch, ``project``/``service`` always set.

        osprofiler's readers index those keys unconditionally, so a store it
        must read carries them even when they are None.
        """
        project, service, host = self.project, self.service, self.host
        messages = []
        for point in batch:
            message = points.to_message(point, host, project, service)
            message.setdefault("project", project)
            message.setdefault("service", service)
            messages.append(message)
        return messages

    def format_json(self, batch):
        """``[to_json(m) for m in self.format_points(batch)]``, faster."""
        return points_json(batch, self.host, self.project, self.service)

    def write_messages(self, messages):
        for message in messages:
            self.notify(message)

    def notify(self, info, **kwargs):
        """Store one formatted message (osprofiler's driver interface)."""
        raise NotImplementedError

    def close(self):
        """Release connections; called at interpreter exit and after use."""

    def after_fork(self):
        """In a forked child: drop connections inherited from the parent.

        Called by the buffer's at-fork hook before the child writes; a
        socket shared by two processes interleaves their requests.
        """

    # read side

    def get_messages(self, base_id):
        """Every message of one trace, in any order."""
        raise NotImplementedError

    def get_report(self, base_id):
        """osprofiler's report structure, with our additions."""
        from stacktrail.report import tree
        return tree.build(self.get_messages(base_id))

    def list_traces(self, fields=None):
        raise NotImplementedError

    def list_error_traces(self):
        raise NotImplementedError
