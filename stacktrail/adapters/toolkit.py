"""What adapters are made of: declarations by dotted path.

A declaration names its target as ``"package.module:Name"`` (or
``"package.module:Class.attribute"``) and applies when that module is
imported, or at once when it already is: an adapter loaded while the
configuration is parsed reaches the modules a service imports later (a
storage driver loaded by stevedore, a virt driver named in a config file).
Every change goes through the adapter's ``Patcher``, so it can be undone,
and a failure is logged once and leaves the service running.

    TraceClass("zaqar.storage.pooling:Catalog", "pool",
               flag="trace_pooling", methods=("lookup",))
    TraceCreated("zaqar.storage.base:ControllerBase", describe)
    Untrace("nova.compute.manager:ComputeManager")
    Replace("zaqar.storage.utils:load_storage_driver", make)
    OnImport("zaqar.cmd.server", hook)

Spans are gated by a flag (``flag="trace_message_store"``), read at each
call from the live settings, so a SIGHUP switches them without a restart.
Whatever these declarations wrap is marked (``integrations.methods``):
nothing is traced twice, also when the project calls osprofiler's
``trace_cls`` on the same object.

What only records (``TraceClass``, ``TraceCreated``) waits for the
process's first trace (``adapters.wire(..., hold=True)``, as the runtime
wires an armed service): a service that is never traced keeps its classes
as they are.

Several services in one process: ``Serves`` marks the endpoints a service
dispatches to, and ``serving(service, host)`` names the service for the
traces joined in a block, so each span records the service that ran it.
"""

import contextlib
import functools
import importlib
import logging
import sys
import threading
import weakref

from stacktrail import integrations
from stacktrail.common import context
from stacktrail.integrations import _base
from stacktrail.integrations import methods

LOG = logging.getLogger(__name__)


def resolve(path):
    """(owner object, attribute name) of ``"module:Owner.attr"``."""
    module_name, _, attrs = path.partition(":")
    owner = importlib.import_module(module_name)
    names = attrs.split(".")
    for name in names[:-1]:
        owner = getattr(owner, name)
    return owner, names[-1]


def lookup(path):
    owner, name = resolve(path)
    return getattr(owner, name)


# ``hook(module)`` once a module is imported (now if it is).
when_imported = integrations.when_imported


def after_init(cls, hook, patcher):
    """Call ``hook(obj)`` once each object of ``cls`` (or of a subclass
    that calls ``super().__init__``) is initialised; a failing hook is
    logged and the object is still made."""
    init = cls.__init__
    where = "adapter %s.%s" % (cls.__module__, cls.__qualname__)

    @functools.wraps(init)
    def __init__(obj, *args, **kwargs):
        init(obj, *args, **kwargs)
        _base.guard(where, hook, obj)
    patcher.patch(cls, "__init__", __init__)


class Declaration:
    """One thing to do in a project's module, once it is imported."""

    path = ""
    # Only records, so it can wait for the process's first trace.
    lazy = False

    @property
    def module(self):
        return self.path.partition(":")[0]

    def register(self, patcher):
        when_imported(self.module, lambda module: _base.guard(
            "adapter %s" % self.path, self.apply, patcher))

    def hold(self, patcher):
        """Held until ``release``: what must be done meanwhile so that it
        misses nothing then."""

    def release(self, patcher):
        self.register(patcher)

    def apply(self, patcher):
        raise NotImplementedError


class TraceClass(Declaration):
    """Trace the methods a class defines: a span ``name`` per call."""

    lazy = True

    def __init__(self, path, name, flag=None, methods=None, private=False,
                 info=None):
        self.path = path
        self.name = name
        self.flag = flag
        self.methods = methods
        self.private = private
        self.info = info

    def apply(self, patcher):
        methods.trace_class(lookup(self.path), self.name,
                            self.flag, self.methods, self.private,
                            self.info, patcher)


class Untrace(Declaration):
    """Put back the methods osprofiler's ``trace`` wrapped in a class (its
    decorators or ``TracedMeta``, evaluated at import): for code whose
    spans stacktrail makes another way."""

    def __init__(self, path):
        self.path = path

    def apply(self, patcher):
        methods.untrace_class(lookup(self.path), patcher)


DRIVER = ("driver", "trace_drivers")   # what a backend driver records


class TraceCreated(Declaration):
    """Trace each object of a class (or of its subclasses) once created.

    ``describe`` says how: ``(span name, flag)`` for every object (such as
    ``DRIVER``), or a function of the object giving that or None to leave
    the object alone.  Meant for bases whose subclasses live in modules
    loaded later (a storage backend per driver): their objects are traced
    through instance attributes, so each keeps its type.  Held, it
    remembers the objects made meanwhile (weakly) and traces them at
    ``release``: a driver is made when its service starts.
    """

    lazy = True

    def __init__(self, path, describe, methods=None, private=False):
        self.path = path
        self.describe = describe if callable(describe) \
            else (lambda obj: describe)
        self.methods = methods
        self.private = private
        self._made = None   # while held: the objects made meanwhile
        self._lock = threading.Lock()

    def register(self, patcher):
        self._made = None
        super().register(patcher)

    def hold(self, patcher):
        self.register(patcher)
        self._made = weakref.WeakSet()

    def release(self, patcher):
        with self._lock:
            made, self._made = self._made, None
        for obj in list(made or ()):
            _base.guard("adapter %s" % self.path, self.trace, obj)

    def apply(self, patcher):
        after_init(lookup(self.path), self.made, patcher)

    def made(self, obj):
        with self._lock:
            if self._made is not None:
                try:
                    self._made.add(obj)
                    return
                except TypeError:
                    pass   # not weakly referable: traced now
        self.trace(obj)

    def trace(self, obj):
        described = self.describe(obj)
        if described is None or methods.is_object_traced(obj):
            return
        name, flag = described
        methods.trace_object(obj, name, flag, self.methods,
                             self.private)


@contextlib.contextmanager
def serving(service, host=None):
    """Traces started or joined in the block record as ``service`` on
    ``host``, whatever other services share the process (the last one
    initialised is the default).  Enter it where the work of one service
    begins, before its trace is joined: an RPC message dispatched to its
    manager, a request handed to its application, a task it spawns.

        with toolkit.serving("cinder-volume", "stor-7"):
            dispatch(message)
    """
    put = _base.guard("serving", context.writer_of, service, host)
    token = context.writer.set(put)
    try:
        yield
    finally:
        context.writer.reset(token)


def service_endpoints(service):
    """``(binary, host, endpoints)`` of an OpenStack service object that
    dispatches RPC to its ``manager`` and the manager's
    ``additional_endpoints`` (``nova.service.Service``,
    ``cinder.service.Service``)."""
    manager = service.manager
    endpoints = [manager] + list(getattr(manager, "additional_endpoints", ()))
    return service.binary, service.host, endpoints


class Serves(Declaration):
    """Objects of a class (a service) name who records their endpoints'
    spans when several services share a process.

    ``identify(obj)`` gives ``(service name, host, endpoints)``
    (``service_endpoints`` by default); each endpoint object (an RPC
    server's manager) is marked, and a message dispatched to it records as
    that service on that host.
    """

    def __init__(self, path, identify=service_endpoints):
        self.path = path
        self.identify = identify

    def apply(self, patcher):
        after_init(lookup(self.path), self.mark, patcher)

    def mark(self, obj):
        service, host, endpoints = self.identify(obj)
        for endpoint in endpoints:
            setattr(endpoint, _base.SERVES, (service, host))


class Replace(Declaration):
    """Put ``make(original)`` in place of the attribute at ``path``."""

    def __init__(self, path, make):
        self.path = path
        self.make = make

    def apply(self, patcher):
        owner, name = resolve(self.path)
        patcher.patch(owner, name, self.make(getattr(owner, name)))


class OnImport(Declaration):
    """Call ``hook(module, patcher)`` once ``module`` is imported."""

    def __init__(self, module, hook):
        self.path = module
        self.hook = hook

    def apply(self, patcher):
        self.hook(sys.modules[self.path], patcher)
