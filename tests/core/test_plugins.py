"""Third parties' flags through the ``stacktrail.flags`` entry points
(stacktrail.common.plugins): each becomes a ``[profiler]`` option; a
broken, foreign or repeated one is left out and the service starts."""

import logging
import textwrap

import pytest
from oslo_config import cfg

from stacktrail import opts
from stacktrail.common import flags
from stacktrail.common import plugins
from tests import fresh_process


def manager(*plugins_):
    from stevedore import extension
    return extension.ExtensionManager.make_test_instance(
        [extension.Extension("p%d" % i, None, plugin, None)
         for i, plugin in enumerate(plugins_)])


@pytest.fixture
def installed(monkeypatch):
    """Install the flag plugins given (as a package's entry points would)."""
    def install(*plugins_):
        monkeypatch.setattr(flags, "_extra", None)
        flags.extra(manager(*plugins_))
    return install   # monkeypatch puts the loaded flags back


KAFKA = flags.Flag("trace_kafka", False, "Trace Kafka sends.")


def test_a_third_party_flag_becomes_a_profiler_option(installed):
    installed(KAFKA)
    assert "trace_kafka" in [o.name for o in opts.list_opts()[0][1]]
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([])
    assert conf.profiler.trace_kafka is False
    assert flags.every()[-1] is KAFKA


def test_a_repeated_builtin_or_foreign_plugin_is_left_out(installed):
    installed(KAFKA, flags.Flag("trace_kafka", True, "again"),
              flags.Flag("trace_redis", True, "a builtin's name"),
              "not a flag", KAFKA)
    # one option per name: oslo.config refuses a second one
    assert flags.extra() == (KAFKA,)


def test_entry_points_that_cannot_be_read_are_logged(caplog):
    class Broken:
        def __iter__(self):
            raise RuntimeError("bad metadata")

    with caplog.at_level(logging.WARNING):
        assert plugins.instances("stacktrail.flags", flags.Flag,
                                 str, manager=Broken()) == ()
    assert "could not load the stacktrail.flags entry points: bad " \
        "metadata" in caplog.text


def _said_at_start_and_reloads(installed, caplog, flag):
    """What switching ``flag`` on says at a start and two SIGHUPs, as
    (level, message); it must stay off each time."""
    from stacktrail import integrations
    installed(flag)
    with caplog.at_level(logging.DEBUG, logger="stacktrail"):
        for _ in range(3):
            assert integrations.apply({flag.name: True}) == \
                {flag.name: False}
    assert integrations.status()[flag.name] is False
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_a_flag_whose_library_is_not_installed_logs_one_line(installed,
                                                             caplog):
    # asked for in the config, its library absent: the service cannot use
    # it, so there is nothing to trace; said once (not on every reload),
    # as information, and the flag reports off instead of waiting for an
    # import that cannot come
    said = _said_at_start_and_reloads(installed, caplog, flags.Flag(
        "trace_kafka", False, "Trace Kafka sends.",
        module="stacktrail_kafka_tracing", library="no_such_kafka_library"))
    assert said == [("INFO", "stacktrail: trace_kafka has nothing to trace "
                     "here: no_such_kafka_library is not installed")]


def test_a_flag_whose_integration_is_not_installed_warns_once(installed,
                                                              caplog):
    # the library is there but the integration module is not (a third
    # party's plugin left out): something the operator asked for is lost
    said = _said_at_start_and_reloads(installed, caplog, flags.Flag(
        "trace_jsonish", False, "Trace json calls.",
        module="no_such_stacktrail_integration", library="json"))
    assert len(said) == 1 and said[0][0] == "WARNING" and \
        "trace_jsonish is on but its library is missing" in said[0][1], said


def test_a_default_flag_without_its_library_stays_quiet():
    # trace_rpc is on by default; a Zaqar has no oslo.messaging, and must
    # not be told so at every start (DEBUG only)
    said = fresh_process.output(textwrap.dedent("""
        import logging, sys
        class NotInstalled:   # as if oslo.messaging were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "oslo_messaging":
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, NotInstalled())
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout,
                            format="%(levelname)s %(message)s")
        from stacktrail import integrations
        print(integrations.apply({"trace_rpc": True}))
    """))
    assert "{'trace_rpc': False}" in said
    assert "DEBUG stacktrail: trace_rpc has nothing to trace here: " \
        "oslo_messaging is not installed" in said
