"""``[profiler] otel_bridge``: applied by the runtime at activation and on a
SIGHUP reload, like every mutable option."""

import subprocess
import sys

from oslo_config import cfg
from opentelemetry import trace

from stacktrail import initializer
from stacktrail import otel
from stacktrail import profiler
from stacktrail.common import kinds
from stacktrail.otel import kind as otel_kind
from tests.integrations.conftest import KEY

PROFILER = """[profiler]
enabled = %s
hmac_keys = %s
connection_string = noop://
otel_bridge = %s
"""


def _conf(tmp_path, enabled, bridge):
    path = tmp_path / "svc.conf"
    path.write_text(PROFILER % (enabled, KEY, bridge))
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="demo", prog="demo-api")
    return conf, path


def test_activation_and_reload(tmp_path):
    conf, path = _conf(tmp_path, "true", "false")
    initializer.init_from_conf(conf, None, "demo", "api", "h")
    assert otel.status() == "off"
    path.write_text(PROFILER % ("true", KEY, "true"))
    conf.mutate_config_files()
    assert otel.status() == "global"
    assert trace.get_tracer_provider() is otel.tracer_provider()
    profiler.init(KEY)
    with profiler.Trace("x"):
        assert trace.get_current_span().get_span_context().is_valid
    profiler.clean()
    path.write_text(PROFILER % ("false", KEY, "true"))  # tracing off
    conf.mutate_config_files()
    assert otel.status() == "off"
    path.write_text(PROFILER % ("true", KEY, "false"))
    conf.mutate_config_files()
    assert otel.status() == "off"
    assert not trace.get_tracer("x").start_span("y").is_recording()


def test_without_opentelemetry_one_warning_and_tracing_goes_on():
    code = """
import logging, sys
sys.modules["opentelemetry"] = None  # as if not installed
logging.basicConfig(level=logging.WARNING)
from stacktrail import otel
print(otel.apply(True), otel.apply(True), otel.status())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "False False off"
    assert done.stderr.count("otel_bridge is on but") == 1
    assert "stacktrail[otel]" in done.stderr


def test_the_otel_kind_is_registered_with_the_bridge():
    otel.apply(True)
    otel_kind.register()
    assert kinds.extra().count(otel_kind.OTEL) == 1
    assert kinds.every()[-1] is kinds.FUNCTION
    assert kinds.of({"otel": {"kind": "CONSUMER"}}) is otel_kind.OTEL
    assert kinds.span_kind("x", {"otel": {"kind": "CONSUMER"}}) == "CONSUMER"


def test_option_is_documented_and_mutable():
    from stacktrail import opts
    opt, = [o for o in opts.ALL_OPTS if o.name == "otel_bridge"]
    assert opt.mutable and opt.default is False
