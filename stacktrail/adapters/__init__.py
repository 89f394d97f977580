"""Per-project adapters: the contract, and finding one by project name.

An adapter wires stacktrail into one OpenStack project from configuration
alone.  It is a small class of declarations, registered as an entry point
in the ``stacktrail.adapters`` namespace under the project's name (the
``project`` a service gives oslo.config: ``zaqar``, ``nova``, ``cinder``),
and is loaded when tracing is set up for that project:

``flags``
    The project's own ``[profiler]`` switches (``common.flags.Flag``), e.g.
    Zaqar's ``trace_message_store``.  They become options and live flags
    like the generic ones.
``aliases``
    Generic flag -> the project option that sets it here (Zaqar's
    ``trace_wsgi_transport`` sets ``trace_wsgi``).
``takeover``
    True when the project calls osprofiler itself: its call sites
    (``init_from_conf``, ``trace_cls``, the WSGI filter, ``trace_info`` in
    its RPC serializer) then feed stacktrail's trace (``takeover``).
``trace_cls_flags``
    The names the project passes to osprofiler's ``trace_cls`` -> the flag
    that gates those spans (Cinder's ``"driver"`` -> ``trace_drivers``).
    Other names are left untraced: the adapter's wiring covers that code.
``wiring``
    ``toolkit`` declarations: what to trace or replace, by dotted path,
    applied when each module is imported (what only records, when the
    process is first traced).
``setup(conf)``
    Anything the declarations cannot say, once per process.

The generic integrations (``[profiler] trace_*``) do the work; an adapter
says where they apply in its project and never re-implements one.
"""

import logging
import threading

from stacktrail.common import plugins

LOG = logging.getLogger(__name__)
NAMESPACE = "stacktrail.adapters"

_lock = threading.RLock()
_loaded = {}
_wired = {}
# adapter name -> the declarations its ``wire`` held until ``release``
_held = {}


class Adapter:
    """Base of every adapter: declarations, wired once per process."""

    name = None
    flags = ()
    aliases = {}
    takeover = False
    trace_cls_flags = {}
    wiring = ()

    def options(self):
        """The ``[profiler]`` options of this project's flags."""
        from stacktrail import opts
        return [opts.flag_opt(flag) for flag in self.flags]

    def setup(self, conf):
        """Once per process, after the declarations were registered."""

    def wire(self, conf, patcher, hold=False):
        """Register the declarations (they apply as modules are imported);
        with ``hold``, those that only record wait for ``release``.
        Returns the held ones."""
        if self.takeover:
            from stacktrail.adapters import takeover
            takeover.install()
        held = []
        for declaration in self.wiring:
            if hold and declaration.lazy:
                declaration.hold(patcher)
                held.append(declaration)
            else:
                declaration.register(patcher)
        self.setup(conf)
        return held


def load(project, manager=None):
    """The adapter of ``project`` (None when there is none), loaded once.

    ``manager``: a stevedore ExtensionManager to look in instead of the
    entry points (tests: ``ExtensionManager.make_test_instance``).
    """
    name = (project or "").lower()
    if not name:
        return None
    with _lock:
        if name not in _loaded or manager is not None:
            _loaded[name] = dict(_scan(manager, [name])).get(name)
        return _loaded[name]


def every(manager=None):
    """Every installed adapter."""
    with _lock:
        return [adapter for _, adapter in _scan(manager)]


def _scan(manager, names=None):
    """[(name, adapter)] of the entry points (or of ``manager``); an
    adapter that cannot be set up is left out, the others are kept."""
    try:
        # only the entry points of ``names`` when given: a service loads
        # its own adapter, not every project's
        extensions = list(manager if manager is not None else
                          plugins.extensions(NAMESPACE, "adapter", names,
                                             level="error"))
    except Exception as exc:  # a broken adapter never stops the service
        LOG.error("stacktrail: adapters unavailable: %s", exc)
        return []
    found = []
    for ext in extensions:
        if names is not None and ext.name not in names:
            continue
        try:
            found.append((ext.name, ext.plugin() if isinstance(
                ext.plugin, type) else ext.plugin))
        except Exception as exc:
            LOG.error("stacktrail: adapter %s could not be set up: %s",
                      ext.name, exc)
    return found


def wire(adapter, conf, hold=False):
    """Wire ``adapter`` into this process once; returns its patcher.
    ``hold``: what only records waits for ``release`` (the runtime's: an
    armed process's first trace)."""
    from stacktrail.integrations import _base
    with _lock:
        if adapter.name not in _wired:
            patcher = _base.Patcher()
            _wired[adapter.name] = patcher
            _held[adapter.name] = adapter.wire(conf, patcher, hold)
        return _wired[adapter.name]


def release():
    """Apply every adapter's held declarations."""
    with _lock:
        held = [(declaration, _wired[name]) for name, declarations in
                _held.items() for declaration in declarations]
        _held.clear()
    for declaration, patcher in held:
        declaration.release(patcher)


def unwire(adapter):
    """Undo what ``wire`` patched (tests; a process keeps its wiring)."""
    with _lock:
        patcher = _wired.pop(adapter.name, None)
        _held.pop(adapter.name, None)
    if patcher is not None:
        patcher.restore()


def unwire_all():
    """Undo every adapter's wiring, osprofiler's names included (tests:
    ``runtime.reset``)."""
    with _lock:
        patchers = list(_wired.values())
        _wired.clear()
        _held.clear()
    for patcher in patchers:
        patcher.restore()
    from stacktrail.adapters import takeover
    takeover.uninstall()


def trace_cls_flag(name):
    """The flag gating osprofiler ``trace_cls(name)`` call sites (None:
    leave them untraced), as the wired adapters declare."""
    with _lock:
        wired = [_loaded.get(name) for name in _wired]
    for adapter in wired:
        if adapter is not None and name in adapter.trace_cls_flags:
            return adapter.trace_cls_flags[name]
    return None


def list_opts():
    """For ``oslo-config-generator --namespace stacktrail``: the core
    options and every adapter's own."""
    from stacktrail import opts
    groups = opts.list_opts()
    for adapter in every():
        groups[0][1].extend(adapter.options())
    return groups
