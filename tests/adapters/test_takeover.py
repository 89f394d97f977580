"""osprofiler's call sites feed stacktrail once an adapter takes over."""

import pytest
from stevedore import extension

from stacktrail import adapters
from stacktrail import web
from stacktrail.adapters import takeover
from stacktrail.common import settings
from tests.integrations.conftest import KEY

ospro = pytest.importorskip("osprofiler.profiler")
os_initializer = pytest.importorskip("osprofiler.initializer")
os_sqlalchemy = pytest.importorskip("osprofiler.sqlalchemy")
os_web = pytest.importorskip("osprofiler.web")


@ospro.trace("rpc", hide_args=True)
def decorated_at_import(value):
    return value + 1


class Manager:
    def create(self, name):
        return "created " + name

    def _private(self):
        return "private"


class RpcAdapter(adapters.Adapter):
    name = "rpcproject"
    takeover = True
    trace_cls_flags = {"rpc": "trace_rpc"}


def _wire(adapter_cls):
    manager = extension.ExtensionManager.make_test_instance(
        [extension.Extension(adapter_cls.name, None, adapter_cls, None)])
    adapter = adapters.load(adapter_cls.name, manager=manager)
    adapters.wire(adapter, conf=None)
    return adapter


def test_osprofiler_call_sites_record_into_stacktrail(recorder):
    takeover.install()
    prof = ospro.init(KEY)            # what a service's serializer does
    assert ospro.get() is prof and prof.get_base_id()
    assert decorated_at_import(1) == 2     # decorated before the takeover
    with ospro.Trace("db"):
        pass
    names = [m["name"] for m in recorder]
    assert names == ["rpc-start", "rpc-stop", "db-start", "db-stop"]
    assert {m["base_id"] for m in recorder} == {prof.get_base_id()}


def test_rpc_trace_info_round_trip_through_osprofiler_names(recorder):
    takeover.install()
    caller = ospro.init(KEY)
    trace_info = {"hmac_key": caller.hmac_key,
                  "base_id": caller.get_base_id(),
                  "parent_id": caller.get_id()}
    ospro.clean()
    ospro.init(**trace_info)          # the receiving side
    decorated_at_import(0)
    assert recorder[0]["base_id"] == trace_info["base_id"]
    assert recorder[0]["parent_id"] == trace_info["parent_id"]


def test_web_initializer_and_sql_names_are_stacktrails():
    takeover.install()
    assert os_web.WsgiMiddleware is web.WsgiMiddleware
    from stacktrail import initializer
    assert os_initializer.init_from_conf is \
        initializer.init_from_conf
    assert os_sqlalchemy.add_tracing(None, object(), "db") is None
    takeover.uninstall()
    assert os_web.WsgiMiddleware is not web.WsgiMiddleware


def test_trace_cls_without_a_flag_changes_nothing(trace, recorder):
    takeover.install()
    manager = ospro.trace_cls("redis_message_controller")(Manager())
    assert manager.create("q") == "created q"
    assert recorder == [] and vars(manager) == {}


def test_trace_cls_gated_by_the_adapters_flag(trace, recorder, monkeypatch):
    _wire(RpcAdapter)
    live = settings.Settings()
    monkeypatch.setattr(settings, "current", live)

    class Local(Manager):
        pass
    ospro.trace_cls("rpc")(Local)
    Local().create("a")
    live.flags["trace_rpc"] = False
    Local().create("b")
    assert [m["name"] for m in recorder] == ["rpc-start", "rpc-stop"]
    assert "create" in recorder[0]["info"]["function"]["name"]
    assert "a" not in str(recorder[0]["info"].get("function", {}).get(
        "args", ""))


def test_enabled_false_means_no_span_even_through_osprofiler(recorder,
                                                             monkeypatch):
    takeover.install()
    live = settings.Settings()
    live.enabled = False
    monkeypatch.setattr(settings, "current", live)
    ospro.init(KEY)
    decorated_at_import(1)
    assert ospro.get() is None and recorder == []


def test_serializer_init_needs_one_of_our_keys(recorder, monkeypatch):
    """Nova's and Cinder's serializers call osprofiler's init with the
    message's trace_info: without one of our keys it starts nothing."""
    takeover.install()
    live = settings.Settings()
    live.set_keys([KEY])
    monkeypatch.setattr(settings, "current", live)
    prof = ospro.init("not-our-key-%s" % ("x" * 20),
                      base_id="7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4")
    assert prof is not None and ospro.get() is None
    decorated_at_import(1)
    assert recorder == []
    ospro.init(KEY, base_id="7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4")
    decorated_at_import(1)
    assert [m["name"] for m in recorder] == ["rpc-start", "rpc-stop"]
