"""One runtime per process: idempotent activation, identities, reloads."""

import subprocess
import sys

from oslo_config import cfg

from stacktrail import adapters
from stacktrail import initializer
from stacktrail import notifier
from stacktrail import profiler
from stacktrail import runtime
from stacktrail import web
from stacktrail.common import flags
from stacktrail.common import settings
from tests import fresh_process
from tests.integrations.conftest import KEY


def _conf(tmp_path, text, project="demo", name="svc.conf"):
    path = tmp_path / name
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project=project, prog="demo-api")
    return conf, path


PROFILER = """[profiler]
enabled = %s
hmac_keys = %s
connection_string = noop://
"""


def test_init_from_conf_twice_one_hook_one_notifier(tmp_path):
    conf, _ = _conf(tmp_path, PROFILER % ("true", KEY))
    initializer.init_from_conf(conf, None, "demo", "api", "host-1")
    first = notifier.get()
    initializer.init_from_conf(conf, None, "demo", "api", "host-1")
    assert notifier.get() is first
    assert len(conf._mutate_hooks) == 1


def test_each_identity_its_own_sink(tmp_path):
    conf, _ = _conf(tmp_path, PROFILER % ("true", KEY))
    initializer.init_from_conf(conf, None, "demo", "scheduler", "h")
    initializer.init_from_conf(conf, None, "demo", "volume", "h")
    volume = notifier.get()
    assert runtime.sink_for("volume") is volume
    assert runtime.sink_for("scheduler") is not volume


def test_writer_names_the_service_of_a_trace():
    """A trace started under another service's writer records as it."""
    from stacktrail.common import context
    seen = []
    token = context.writer.set(seen.append)
    try:
        profiler.init(KEY)
        with profiler.Trace("rpc"):
            pass
    finally:
        context.writer.reset(token)
        profiler.clean()
    assert [p[0] for p in seen] == ["rpc", "rpc"]


def test_process_switch_never_overrides_an_explicit_enabled_false(tmp_path):
    conf, _ = _conf(tmp_path, PROFILER % ("true", KEY))
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    calls = []

    def app(environ, start_response):
        calls.append(profiler.get())
        start_response("200 OK", [])
        return [b""]
    headers = {}
    profiler.init(KEY)
    headers = web.get_trace_id_headers()
    profiler.clean()
    environ = {"HTTP_" + k.upper().replace("-", "_"): v
               for k, v in headers.items()}
    off = web.WsgiMiddleware(app, hmac_keys=KEY, enabled=False)
    follows = web.WsgiMiddleware(app, hmac_keys=KEY)
    for middleware in (off, follows):
        list(middleware(dict(environ), lambda *a: None))
    assert calls[0] is None and calls[1] is not None


def test_enabled_false_no_trace_even_when_signed(tmp_path):
    conf, _ = _conf(tmp_path, PROFILER % ("false", KEY))
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    assert profiler.init(KEY) is not None and profiler.get() is None
    assert not any(settings.current.flags.values())


def test_reload_applies_changes_and_keeps_one_hook(tmp_path):
    conf, path = _conf(tmp_path, PROFILER % ("true", KEY) +
                       "trace_redis = false\n")
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    assert not settings.current.flags["trace_redis"]
    path.write_text(PROFILER % ("true", KEY) + "trace_redis = true\n")
    conf.mutate_config_files()
    assert settings.current.flags["trace_redis"]
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    assert len(conf._mutate_hooks) == 1


def test_recording_integrations_wait_for_the_first_trace(tmp_path):
    """Armed, a service that is never traced runs no SQL hook; its first
    trace switches the hook on before the trace's first span (that trace
    is whole) and it stays on for the untraced statements after it."""
    import requests  # noqa: F401 (a service that uses both libraries)
    import sqlalchemy
    from stacktrail import integrations
    from tests.integrations.conftest import Recorder
    engine = sqlalchemy.create_engine("sqlite://")
    conf, path = _conf(tmp_path, PROFILER % ("true", KEY) +
                       "trace_sqlalchemy = true\ntrace_requests = true\n")
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    sql = integrations.module("trace_sqlalchemy")
    # requests passes on the W3C context of untraced requests: at once
    assert integrations.module("trace_requests").is_enabled()
    recorder = Recorder()
    notifier.set(recorder)

    def select():
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 2"))
    select()
    assert not sql.is_enabled()
    profiler.init(KEY)
    try:
        select()
    finally:
        profiler.clean()
    assert sql.is_enabled() and len(recorder.spans("db")) == 1
    select()
    # traced once, a flag switched on by a reload applies at once
    path.write_text(PROFILER % ("true", KEY) + "trace_sqlalchemy = true\n"
                    "trace_pooling = true\n")
    conf.mutate_config_files()
    assert integrations.module("trace_pooling").is_enabled()
    assert sql.is_enabled() and len(recorder.spans("db")) == 1
    path.write_text(PROFILER % ("false", KEY))
    conf.mutate_config_files()
    assert not sql.is_enabled()


class Held:
    def call(self):
        return "called"


def test_adapter_wiring_that_records_waits_for_the_first_trace(tmp_path):
    """Armed, a project's classes stay as they are until its first trace,
    which the adapter's declarations then record whole."""
    from stevedore import extension
    from stacktrail.adapters import toolkit
    from tests.integrations.conftest import Recorder

    class Project(adapters.Adapter):
        name = "heldproject"
        wiring = (toolkit.TraceClass(__name__ + ":Held", "held"),)
    adapters.load(Project.name, manager=extension.ExtensionManager.
                  make_test_instance([extension.Extension(
                      Project.name, None, Project, None)]))
    call = Held.call
    conf, _ = _conf(tmp_path, PROFILER % ("true", KEY), project=Project.name)
    initializer.init_from_conf(conf, None, Project.name, "api", "h")
    assert Held.call is call
    recorder = Recorder()
    notifier.set(recorder)
    profiler.init(KEY)
    try:
        assert Held().call() == "called"
    finally:
        profiler.clean()
    assert Held.call is not call and len(recorder.spans("held")) == 1


def test_bad_profiler_section_logs_one_line_and_runs(tmp_path, caplog):
    conf, _ = _conf(tmp_path,
                    "[profiler]\nenabled = true\n"
                    "sampling_rate = 7\n")
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "sampling_rate" in errors[0].getMessage()


def test_config_source_activates_the_project_adapter(tmp_path):
    """A config fragment alone: oslo.config loads stacktrail's source,
    which wires the project's adapter while the files are parsed."""
    conf, _ = _conf(tmp_path, "[DEFAULT]\nconfig_source = stacktrail\n"
                              "[stacktrail]\ndriver = stacktrail\n" +
                    PROFILER % ("true", KEY) + "trace_wsgi_transport = "
                    "false\n", project="zaqar")
    assert "zaqar" in adapters._wired
    assert conf.profiler.trace_message_store is False
    assert settings.current.flags["trace_wsgi"] is False   # the alias
    assert settings.current.enabled
    # It supplies no values, so it is no source oslo.config would ask on
    # every lookup of an option the files leave unset.
    assert conf._sources == []
    assert conf.profiler.sampling_rate == 0


def test_every_entry_point_loads():
    from importlib import metadata
    ours = metadata.distribution("stacktrail").entry_points
    groups = {ep.group for ep in ours}
    assert {"stacktrail.drivers", "stacktrail.adapters", "oslo.config.opts",
            "oslo.config.driver", "paste.filter_factory",
            "console_scripts"} <= groups
    for ep in ours:
        assert ep.load() is not None, ep


def test_config_generator_lists_the_adapters_options():
    generator = [sys.executable, "-c",
                 "from oslo_config.generator import main; main()",
                 "--namespace", "stacktrail"]
    out = subprocess.run(generator, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ["trace_message_store", "trace_management_store",
                   "trace_wsgi_transport", "trace_redis", "hmac_keys"]:
        assert "#%s = " % option in out.stdout


def test_flags_are_derived_from_one_registry():
    from stacktrail import integrations
    from stacktrail import opts
    names = [f.name for f in flags.BUILTIN]
    assert set(settings.Settings().flags) == set(names)
    assert {o.name for o in opts.FLAG_OPTS} == set(names)
    assert set(integrations.modules()) == {f.name for f in flags.BUILTIN
                                           if f.module}


def test_third_party_flag_through_entry_points():
    from stevedore import extension
    third = flags.Flag("trace_memcache", False, "memcache commands")
    manager = extension.ExtensionManager.make_test_instance(
        [extension.Extension("memcache", None, third, None)])
    try:
        assert third in flags.extra(manager)
        assert third in flags.every()
    finally:
        flags._extra = None


def test_a_broken_adapter_leaves_the_others_working(caplog):
    # One project's adapter failing to set up (a third party's, say) must
    # not take another project's tracing down with it.
    from stevedore import extension

    class Good(adapters.Adapter):
        name = "goodproject"

    class Broken(adapters.Adapter):
        name = "brokenproject"

        def __init__(self):
            raise RuntimeError("cannot set up")

    manager = extension.ExtensionManager.make_test_instance(
        [extension.Extension("brokenproject", None, Broken, None),
         extension.Extension("goodproject", None, Good, None)])
    assert isinstance(adapters.load("goodproject", manager=manager), Good)
    assert [type(a) for a in adapters.every(manager)] == [Good]
    assert adapters.load("brokenproject", manager=manager) is None
    assert any("brokenproject could not be set up" in r.getMessage()
               for r in caplog.records)


def test_a_service_loads_only_its_own_adapter():
    # In a fresh process: Nova's adapter is loaded without importing the
    # other projects' adapters.
    code = ("import sys; from stacktrail import adapters; "
            "a = adapters.load('nova'); "
            "print(type(a).__name__, 'stacktrail.zaqar' in sys.modules, "
            "'stacktrail.cinder' in sys.modules)")
    assert fresh_process.output(code).split() == [
        "NovaAdapter", "False", "False"]
