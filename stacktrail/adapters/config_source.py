"""Tracing switched on from a configuration file: an oslo.config source.

Every OpenStack service parses its configuration with oslo.config, which
loads the drivers named by ``[DEFAULT] config_source`` through the
``oslo.config.driver`` entry points while it parses.  stacktrail's driver
adds no option values; opening it activates tracing for the project being
configured (``conf.project``: its adapter, the ``[profiler]`` options, the
takeover of osprofiler's call sites), before the service builds anything.
So the operator's whole change is a config fragment::

    [DEFAULT]
    config_source = stacktrail

    [stacktrail]
    driver = stacktrail
    # adapter = cinder   (when the service parses without naming itself)

and no service needs editing, whatever its entry point (console script,
uwsgi application, functional test harness that parses a file).  Opening
it again (every parse, every test of a harness) changes nothing, and the
module imports nothing heavy: some services parse a first time before
eventlet patches the standard library.
"""

from oslo_config import sources


class ConfigSourceDriver(sources.ConfigurationSourceDriver):
    """``driver = stacktrail`` in a group listed in ``config_source``."""

    def list_options_for_discovery(self):
        return []

    def open_source_from_opt_group(self, conf, group_name):
        from oslo_config import cfg
        conf.register_opt(cfg.StrOpt(
            "adapter", help="The project whose adapter to load (default: "
                            "the project the service names when it parses "
                            "its configuration)."), group=group_name)
        if _is_the_services(conf):
            from stacktrail import runtime
            runtime.activate(conf, project=conf[group_name].adapter)
        # No source: oslo.config would ask a source for every option the
        # files leave unset, on every uncached lookup (hundreds per Nova
        # request); with None it asks nothing.
        return None


def _is_the_services(conf):
    """True for the configuration a service runs on.

    That is oslo.config's global ``CONF``; other ConfigOpts parsing the
    same files (a middleware's own, an early parse before the service
    sets its project) must not switch the process's tracing.  A private
    ConfigOpts counts only in a process that has no other (a tool, a test).
    """
    from oslo_config import cfg
    if conf is cfg.CONF:
        return True
    from stacktrail import runtime
    return bool(getattr(conf, "project", None)) and not runtime.active()
