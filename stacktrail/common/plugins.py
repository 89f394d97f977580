"""Plugins found through entry points, with stevedore.

A plugin that cannot be loaded is logged and left out: a broken package
never stops the service, nor takes the other plugins down with it.
"""

from stacktrail.common import logtext

LOG = logtext.Logger(__name__)


def extensions(namespace, what, names=None, level="warning"):
    """The stevedore manager of ``namespace`` (only ``names`` when given);
    a plugin that cannot be loaded is logged at ``level``, ``what`` naming
    it ("adapter", "flag plugin")."""
    from stevedore import extension
    from stevedore import named

    def failed(manager, entry_point, exc):
        getattr(LOG, level)("stacktrail: %s %s could not be loaded: %s",
                            what, entry_point, exc)

    if names is None:
        return extension.ExtensionManager(
            namespace, on_load_failure_callback=failed)
    return named.NamedExtensionManager(
        namespace, names, on_load_failure_callback=failed,
        on_missing_entrypoints_callback=_none_missing)


def _none_missing(names):
    """A name without a plugin is no error (a project without an adapter)."""


def instances(namespace, cls, key, builtin=(), manager=None):
    """The plugins of ``namespace`` that are ``cls`` objects, in order,
    each ``key(plugin)`` once and none of ``builtin``'s keys; () when the
    entry points cannot be read (logged).  ``manager``: a stevedore
    manager to read instead (tests: ``make_test_instance``)."""
    found = []
    seen = set(builtin)
    try:
        if manager is None:
            manager = extensions(namespace,
                                 cls.__name__.lower() + " plugin")
        for ext in manager:
            plugin = ext.plugin
            if isinstance(plugin, cls) and key(plugin) not in seen:
                seen.add(key(plugin))
                found.append(plugin)
    except Exception as exc:  # a broken plugin never stops the service
        LOG.warning("stacktrail: could not load the %s entry points: %s",
                    namespace, exc)
    return tuple(found)
