"""The ``trace_*`` flags: one registry, from which everything else derives.

Each flag switches one kind of span.  Its declaration says which module
does the work (``stacktrail.integrations.<name>``, or a third party's), the
default and the help text; the ``[profiler]`` options (``opts``), the live
settings (``settings.current.flags``) and the README table are all made
from this list.  Third parties add flags through the ``stacktrail.flags``
entry point namespace (each entry point names a ``Flag``); per-project
adapters declare their own flags too (``stacktrail.adapters``).

Pure data: nothing here imports an integration or a client library.
"""

import operator

from stacktrail.common import plugins

NAMESPACE = "stacktrail.flags"


class Flag:
    """A ``[profiler]`` boolean switching one kind of span.

    ``module``: the dotted module whose ``enable()``/``disable()``/
    ``is_enabled()`` apply it, or None when the code that makes the spans
    reads the live flag itself (the WSGI filter, adapters' wrappers).
    ``shared``: osprofiler defines an option of the same name (it keeps its
    meaning).  ``carries``: the library (module name) through which the
    integration also carries the trace between processes: while tracing is
    on and that library is in use, the integration stays on and the flag
    switches only its spans (off, a callee still joins its caller's
    trace).  ``library``: the module the integration instruments (by
    default the one it carries the trace through); the integration is
    switched on when the service imports it, and never imports it for the
    service.  ``lazy``: the integration works when switched on while the
    service runs (it patches classes, or its wrappers read the flag at each
    call), so an armed process switches it on only when its first trace
    starts: a service that is never traced never runs it.  An adapter
    may name another option that sets a flag's value in its project
    (Zaqar's ``trace_wsgi_transport`` sets ``trace_wsgi``).
    """

    def __init__(self, name, default, help, module=None, shared=False,
                 carries=False, library=None, lazy=False):
        self.name = name
        self.default = default
        self.help = help
        self.module = module
        self.shared = shared
        self.carries = carries
        self.library = library or carries or None
        self.lazy = lazy

    def __repr__(self):
        return "Flag(%r)" % self.name


def _integration(name):
    return "stacktrail.integrations." + name


BUILTIN = (
    Flag("trace_wsgi", True,
         "Trace incoming HTTP requests (the WSGI filter)."),
    Flag("trace_rpc", True,
         "Trace oslo.messaging calls and casts on both sides (the trace is "
         "carried to the server whenever tracing is on).",
         _integration("rpc"), carries="oslo_messaging"),
    Flag("trace_drivers", True,
         "Trace calls into storage and backend driver objects.",
         _integration("drivers"), lazy=True),
    Flag("trace_sqlalchemy", False,
         "Add a span for every SQL statement (noisy; parameters are hidden "
         "unless show_sql_parameters).", _integration("sqlalchemy"),
         shared=True, library="sqlalchemy", lazy=True),
    Flag("trace_requests", False,
         "Add an http span for every call made with requests or "
         "keystoneauth1 and pass the trace to the callee.",
         _integration("http"), shared=True, library="requests"),
    Flag("trace_redis", False,
         "Add a span for every Redis command (no values).",
         _integration("redis"), library="redis", lazy=True),
    Flag("trace_mongodb", False,
         "Add a span for every MongoDB command (no documents).",
         _integration("pymongo"), library="pymongo"),
    Flag("trace_pooling", False,
         "Trace pool checkouts and pool selection.", _integration("pools"),
         lazy=True),
)

DEFAULTS = {flag.name: flag.default for flag in BUILTIN}
_extra = None


def extra(manager=None):
    """Flags third parties declared through entry points (loaded once).

    ``manager``: a stevedore ExtensionManager to use instead (tests build
    one with ``ExtensionManager.make_test_instance``).
    """
    global _extra
    if manager is None and _extra is not None:
        return _extra
    _extra = plugins.instances(NAMESPACE, Flag, operator.attrgetter("name"),
                               DEFAULTS, manager)
    return _extra


def every():
    """The builtin flags, then the third-party ones."""
    return BUILTIN + extra()
