"""An oslo.config source driver that only records how it is used.

tests/services/test_nova_harness.py registers it as the ``oslo.config.driver``
entry point ``stacktrail_probe`` (a throwaway dist-info on the path) and
selects it with environment variables alone, no config file::

    OS_DEFAULT__CONFIG_SOURCE=stacktrail_probe
    OS_STACKTRAIL_PROBE__DRIVER=stacktrail_probe

``nova_tests.probes.ConfigSourceProbe`` then reports when and from where
oslo.config opened it: the way a stacktrail adapter could be loaded into
Nova's functional tests (and into a real service) from configuration alone.
"""

import sys
import traceback

from oslo_config import sources

#: One dict per open_source_from_opt_group call: group, the ConfigOpts'
#: id and project, whether eventlet was imported yet, and where from.
OPENED = []
#: (group, option) pairs the opened sources were asked for, in order.
ASKED = []


class ProbeSource(sources.ConfigurationSource):

    def get(self, group_name, option_name, opt):
        ASKED.append((group_name, option_name))
        return (sources._NoValue, None)


class ProbeDriver(sources.ConfigurationSourceDriver):

    def list_options_for_discovery(self):
        return []

    def open_source_from_opt_group(self, conf, group_name):
        stack = [
            "%s:%d %s" % (frame.filename.split("site-packages/")[-1],
                          frame.lineno, frame.name)
            for frame in traceback.extract_stack()[:-1]
            if "site-packages/" in frame.filename]
        OPENED.append({
            "group": group_name,
            "conf_id": id(conf),
            "project": getattr(conf, "project", None),
            "eventlet_imported": "eventlet" in sys.modules,
            "nova_imported": "nova" in sys.modules,
            "stack": stack[-12:],
        })
        return ProbeSource()
