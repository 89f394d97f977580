"""The entry point tempest loads (``tempest.test_plugins``: ``stacktrail``)."""

import os

from stacktrail_tempest_plugin import config

try:
    from tempest.test_discover import plugins
    _Base = plugins.TempestPlugin
except ImportError:
    # The entry point is installed wherever stacktrail is (the services'
    # environments too): loading it there, without tempest, must work.
    _Base = object


class StacktrailTempestPlugin(_Base):

    def load_tests(self):
        here = os.path.dirname(os.path.abspath(__file__))
        base_path = os.path.split(here)[0]
        test_dir = os.path.join("stacktrail_tempest_plugin", "tests")
        return os.path.join(base_path, test_dir), base_path

    def register_opts(self, conf):
        config.register_opts(conf)

    def get_opt_lists(self):
        return [(config.group.name, config.opts)]
