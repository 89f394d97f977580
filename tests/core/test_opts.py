"""The [profiler] option group: living with the real osprofiler's options,
the sample generator, entry points, run-time reload and bad settings."""

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys

import pytest
import webob
from oslo_config import cfg

from stacktrail import initializer
from stacktrail import opts
from stacktrail import profiler
from stacktrail import web
from stacktrail.common import settings
from stacktrail.common import signing

from tests import fresh_process
from tests.core.keys import K1, K2

OSPROFILER_INI = """
[profiler]
enabled = true
hmac_keys = %s,%s
connection_string = redis://trace-store.example:6379/2
trace_sqlalchemy = true
""" % (K1, K2)


def new_conf(path=None):
    conf = cfg.ConfigOpts()
    return conf


def parse(conf, path=None):
    conf(args=[], default_config_files=[str(path)] if path else [])
    return conf


def osprofiler_values(conf):
    group = conf.profiler
    return (group.enabled, group.hmac_keys, group.connection_string,
            group.trace_sqlalchemy)


EXPECTED = (True, K1 + "," + K2, "redis://trace-store.example:6379/2",
            True)


# --- living with osprofiler's options ----------------------------------------

@pytest.mark.parametrize("order", ["osprofiler-first", "stacktrail-first"])
def test_both_registration_orders_with_osprofiler(tmp_path, order):
    import osprofiler.opts

    ini = tmp_path / "service.conf"
    ini.write_text(OSPROFILER_INI)
    conf = new_conf()
    if order == "osprofiler-first":
        osprofiler.opts.set_defaults(conf)
        opts.register_opts(conf)
    else:
        opts.register_opts(conf)
        osprofiler.opts.set_defaults(conf)
    # registering again, either way, is still fine
    opts.register_opts(conf)
    osprofiler.opts.set_defaults(conf)
    parse(conf, ini)
    assert osprofiler_values(conf) == EXPECTED
    # osprofiler's own readers and ours agree
    assert osprofiler.opts.is_trace_enabled(conf) is True
    assert osprofiler.opts.is_db_trace_enabled(conf) is True
    assert opts.is_trace_enabled(conf) and opts.is_db_trace_enabled(conf)
    live = settings.from_conf(conf)
    assert live.validation_keys == (K1, K2)
    assert live.signing_key == K1
    assert live.flags["trace_sqlalchemy"] and live.flags["trace_wsgi"]


def test_osprofiler_config_file_reads_the_same_through_both(tmp_path):
    import osprofiler.opts

    ini = tmp_path / "service.conf"
    ini.write_text(OSPROFILER_INI)
    theirs = new_conf()
    osprofiler.opts.set_defaults(theirs)
    ours = new_conf()
    opts.register_opts(ours)
    assert osprofiler_values(parse(theirs, ini)) == \
        osprofiler_values(parse(ours, ini)) == EXPECTED


def test_set_defaults_accepts_osprofilers_keywords():
    conf = new_conf()
    opts.set_defaults(conf, enabled=True, trace_sqlalchemy=True,
                      hmac_keys="k", connection_string="noop://",
                      es_doc_type=None, sampling_rate=0.25)
    parse(conf)
    try:
        assert conf.profiler.enabled is True
        assert conf.profiler.connection_string == "noop://"
        assert conf.profiler.sampling_rate == 0.25
    finally:
        for name in ("enabled", "trace_sqlalchemy", "hmac_keys",
                     "connection_string", "sampling_rate"):
            conf.clear_default(name, group="profiler")


def test_two_confs_do_not_share_overrides():
    """Options are registered on the conf you are handed: a value set on
    one ConfigOpts (a test's fixture, a second service in one process)
    must not appear in another."""
    first = new_conf()
    opts.register_opts(first)
    parse(first)
    first.set_override("sampling_rate", 0.75, group="profiler")
    first.set_default("trust_traceparent", True, group="profiler")
    try:
        second = new_conf()
        opts.register_opts(second)
        parse(second)
        assert second.profiler.sampling_rate == 0.0
        assert second.profiler.trust_traceparent is False
    finally:
        first.clear_override("sampling_rate", group="profiler")
        first.clear_default("trust_traceparent", group="profiler")


def test_defaults_and_flags():
    conf = new_conf()
    opts.register_opts(conf)
    parse(conf)
    group = conf.profiler
    assert group.enabled is False
    assert group.sampling_rate == 0.0
    assert group.trust_traceparent is False
    assert list(group.propagation) == ["osprofiler", "w3c"]
    # nothing traced while disabled
    assert not any(settings.from_conf(conf).flags.values())
    conf.set_override("enabled", True, group="profiler")
    try:
        flags = settings.from_conf(conf).flags
    finally:
        conf.clear_override("enabled", group="profiler")
    assert flags["trace_wsgi"] and flags["trace_rpc"]
    assert not flags["trace_sqlalchemy"]


def test_required_options_listed():
    listed = [options for group, options in opts.list_opts()
              if getattr(group, "name", group) == "profiler"]
    assert len(listed) == 1
    listed = listed[0]
    names = {o.name for o in listed}
    assert names >= {
        "enabled", "hmac_keys", "connection_string", "trace_sqlalchemy",
        "trace_requests", "trace_wsgi", "trace_rpc", "trace_redis",
        "trace_mongodb", "trace_pooling", "trace_drivers", "sampling_rate",
        "max_triggered_traces_per_second", "trust_traceparent",
        "propagation"}
    by_name = {o.name: o for o in listed}
    assert by_name["hmac_keys"].secret
    for name in ("enabled", "hmac_keys", "sampling_rate", "trace_wsgi",
                 "trust_traceparent", "propagation",
                 "max_triggered_traces_per_second"):
        assert by_name[name].mutable, name


def test_help_texts_are_our_own():
    import osprofiler.opts

    theirs = {o.name: o.help for o in osprofiler.opts._PROFILER_OPTS}
    for option in opts.ALL_OPTS:
        if option.name in theirs:
            assert option.help != theirs[option.name], option.name


def test_options_not_registered_on_the_global_conf_at_import():
    code = ("from oslo_config import cfg\n"
            "import stacktrail.profiler, stacktrail.web, stacktrail.opts\n"
            "import stacktrail.initializer, stacktrail.notifier\n"
            "print('profiler' in cfg.CONF)\n")
    assert fresh_process.output(code).strip() == "False"


# --- sample config and entry points ------------------------------------------

def test_oslo_config_generator_prints_a_sample():
    generator = os.path.join(os.path.dirname(sys.executable),
                             "oslo-config-generator")
    done = subprocess.run([generator, "--namespace", "stacktrail"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sample = done.stdout
    assert "[profiler]" in sample
    for name in ("enabled", "hmac_keys", "sampling_rate",
                 "trust_traceparent", "propagation", "trace_wsgi",
                 "max_triggered_traces_per_second"):
        assert "#%s = " % name in sample, name


def _entry_points():
    dist = importlib.metadata.distribution("stacktrail")
    groups = ("oslo.config.opts", "paste.filter_factory",
              "stacktrail.drivers")
    return sorted((ep for ep in dist.entry_points if ep.group in groups),
                  key=lambda ep: (ep.group, ep.name))


ENTRY_POINTS = _entry_points()


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_entry_points_declared():
    declared = {(ep.group, ep.name) for ep in ENTRY_POINTS}
    assert ("oslo.config.opts", "stacktrail") in declared
    assert ("paste.filter_factory", "stacktrail") in declared
    assert ("stacktrail.drivers", "noop") in declared


@pytest.mark.parametrize("ep", ENTRY_POINTS,
                         ids=["%s:%s" % (ep.group, ep.name)
                              for ep in ENTRY_POINTS])
def test_entry_point_loads(ep):
    module = ep.value.split(":", 1)[0]
    if not _module_exists(module):
        pytest.skip("%s = %s: module %s not written yet"
                    % (ep.group, ep.name, module))
    loaded = ep.load()
    if ep.group == "oslo.config.opts":
        listed = loaded()
        assert listed and all(len(pair) == 2 for pair in listed)
        for _, options in listed:
            assert all(isinstance(o, cfg.Opt) for o in options)
    elif ep.group == "paste.filter_factory":
        assert callable(loaded({}, enabled="false")(lambda e, s: []))
    else:
        from stevedore import driver

        from stacktrail.drivers import base
        manager = driver.DriverManager(ep.group, ep.name)
        assert manager.driver is loaded
        assert issubclass(loaded, base.Driver)


# --- reload without a restart, and bad settings ------------------------------

def _app():
    def app(environ, start_response):
        prof = profiler.get()
        app.seen.append(prof and prof.hmac_key or (prof and "traced"))
        start_response("200 OK", [])
        return [b"ok"]
    app.seen = []
    return app


def _request(mw, headers=None):
    response = webob.Request.blank("/", headers=headers or {}).get_response(
        mw)
    assert response.status_int == 200
    response.body
    return response


def _signed(key):
    packed, mac = signing.pack({"base_id": "7253ca8c-33b3-4f84-b4f1-"
                                           "f5a4311ddfa4"}, key)
    return {web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac}


def _write(path, **values):
    lines = ["[profiler]"] + ["%s = %s" % kv for kv in values.items()]
    path.write_text("\n".join(lines) + "\n")


def test_mutable_options_change_on_reload(tmp_path):
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", connection_string="noop://",
           hmac_keys=K1, sampling_rate="0")
    conf = new_conf()
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")
    app = _app()
    mw = web.WsgiMiddleware(app)  # switched on by init_from_conf
    _request(mw)
    _request(mw, _signed(K1))
    _request(mw, _signed(K2))
    assert app.seen == [None, K1, None]

    _write(ini, enabled="true", connection_string="noop://",
           hmac_keys=K2, sampling_rate="1.0")
    conf.mutate_config_files()
    app.seen.clear()
    _request(mw)
    _request(mw, _signed(K1))
    _request(mw, _signed(K2))
    assert app.seen == [K2, K2, K2]  # sampled locally, or by k2

    _write(ini, enabled="false", connection_string="noop://",
           hmac_keys=K2, sampling_rate="1.0")
    conf.mutate_config_files()
    app.seen.clear()
    _request(mw)
    _request(mw, _signed(K2))
    assert app.seen == [None, None]


def test_reload_works_when_osprofiler_registered_first(tmp_path):
    import osprofiler.opts
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", connection_string="noop://", hmac_keys=K1)
    conf = new_conf()
    osprofiler.opts.set_defaults(conf)  # a service that loads osprofiler
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")
    app = _app()
    mw = web.WsgiMiddleware(app)
    _request(mw, _signed(K1))
    _write(ini, enabled="true", connection_string="noop://", hmac_keys=K2)
    conf.mutate_config_files()
    _request(mw, _signed(K1))
    _request(mw, _signed(K2))
    assert app.seen == [K1, None, K2]  # osprofiler's hmac_keys reloaded


def test_bad_connection_string_keeps_the_service_running(tmp_path, caplog):
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", connection_string="nosuch://host",
           hmac_keys=K1)
    conf = new_conf()
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")  # no raise
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "nosuch" in lines[0].getMessage()
    app = _app()
    _request(web.WsgiMiddleware(app), _signed(K1))
    assert len(app.seen) == 1  # served; traced into a no-op sink


@pytest.mark.parametrize("keys", ["", "SECRET_KEY"])
def test_no_usable_key_is_said_once_and_headers_are_ignored(tmp_path, caplog,
                                                            keys):
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", connection_string="noop://", hmac_keys=keys)
    conf = new_conf()
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")
    said = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "hmac" in r.getMessage()]
    assert any("no usable [profiler] hmac_keys" in line for line in said)
    app = _app()
    _request(web.WsgiMiddleware(app), _signed("SECRET_KEY"))
    assert app.seen == [None]  # served, not traced


@pytest.mark.parametrize("name,value", [
    ("sampling_rate", "5"),
    ("sampling_rate", "often"),
    ("enabled", "perhaps"),
    ("propagation", "zipkin"),
    ("buffer_size", "-5"),          # read by the store's driver, later
    ("store_timeout", "soon"),
])
def test_bad_option_value_keeps_the_service_running(tmp_path, caplog, name,
                                                    value):
    ini = tmp_path / "service.conf"
    _write(ini, **{"enabled": "true", "connection_string": "noop://",
                   name: value})
    conf = new_conf()
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")  # no raise
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING
             and r.name.startswith("stacktrail")]
    assert len(lines) == 1
    assert name in lines[0].getMessage() or value in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    app = _app()
    _request(web.WsgiMiddleware(app, enabled=True))
    assert len(app.seen) == 1


class _ExcInfoAtEmit(logging.Handler):
    """Whether an exception was being handled when each line was logged:
    oslo.log's formatter then appends it to the line."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.handling = []

    def emit(self, record):
        self.handling.append(sys.exc_info()[0])


@pytest.mark.parametrize("values", [
    {"connection_string": "nosuch://host"},
    {"connection_string": "noop://", "sampling_rate": "often"},
])
def test_a_bad_section_read_from_several_places_is_said_once(tmp_path,
                                                             caplog, values):
    """A service initialises tracing from its own call, from the config
    source and once per store or worker identity: the operator reads the
    problem once, as one plain line."""
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", hmac_keys=K1, **values)
    conf = new_conf()
    parse(conf, ini)
    handler = _ExcInfoAtEmit()
    logging.getLogger("stacktrail").addHandler(handler)
    try:
        initializer.init_from_conf(conf, None, "p", "api", "h")
        initializer.init_from_conf(conf, None, "p", "worker", "h")
        initializer.init_from_conf(conf, None, "p", "api", "h")
    finally:
        logging.getLogger("stacktrail").removeHandler(handler)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "tracing disabled" in lines[0]
    assert handler.handling == [None]
    app = _app()
    _request(web.WsgiMiddleware(app), _signed(K1))
    assert len(app.seen) == 1   # served


def test_a_clashing_option_of_the_service_keeps_it_running(tmp_path,
                                                           caplog):
    """A service that registered its own ``[profiler] enabled`` of another
    type: our options cannot be registered; said once, nothing raised."""
    conf = new_conf()
    conf.register_opt(cfg.StrOpt("enabled"), group="profiler")
    parse(conf)
    initializer.init_from_conf(conf, None, "p", "s", "h")
    initializer.init_from_conf(conf, None, "p", "s", "h")
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "enabled" in lines[0], lines


def test_a_problem_is_said_again_after_it_was_fixed(tmp_path, caplog):
    ini = tmp_path / "service.conf"
    conf = new_conf()
    for rate in ("often", "1.0", "often"):
        _write(ini, enabled="true", connection_string="noop://",
               sampling_rate=rate)
        parse(conf, ini)
        initializer.init_from_conf(conf, None, "p", "s", "h")
    lines = [r.getMessage() for r in caplog.records
             if "tracing disabled" in r.getMessage()]
    assert len(lines) == 2, lines


def test_bad_value_on_reload_keeps_previous_settings(tmp_path, caplog):
    ini = tmp_path / "service.conf"
    _write(ini, enabled="true", connection_string="noop://",
           sampling_rate="1.0")
    conf = new_conf()
    parse(conf, ini)
    initializer.init_from_conf(conf, None, "p", "s", "h")
    _write(ini, enabled="true", connection_string="noop://",
           sampling_rate="often")
    try:
        conf.mutate_config_files()
    except cfg.Error:
        pass  # oslo.config itself may refuse the file; either way ...
    app = _app()
    _request(web.WsgiMiddleware(app))
    assert app.seen == ["traced"]  # ... the previous settings still hold
