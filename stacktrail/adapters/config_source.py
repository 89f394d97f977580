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

and no service needs editing, whatever its entry point (console script,
uwsgi application, functional test harness that parses a file).
"""

from oslo_config import sources


class ConfigSourceDriver(sources.ConfigurationSourceDriver):
    """``driver = stacktrail`` in a group listed in ``config_source``."""

    def list_options_for_discovery(self):
        return []

    def open_source_from_opt_group(self, conf, group_name):
        from stacktrail import runtime
        runtime.activate(conf)
        return _NoValues()


class _NoValues(sources.ConfigurationSource):
    """Supplies no option: every value stays the files' own."""

    def get(self, group_name, option_name, opt):
        return sources._NoValue, None
