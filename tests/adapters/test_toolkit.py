"""Adapter declarations by dotted path, applied when the module is imported."""

import importlib
import sys
import textwrap

import pytest

from stacktrail.adapters import toolkit
from stacktrail.common import settings
from stacktrail.integrations import _base

SERVICE = textwrap.dedent('''
    class ControllerBase:
        def __init__(self, driver):
            self.driver = driver

    class MessageController(ControllerBase):
        def post(self, messages):
            return len(messages)

    class Catalog:
        def lookup(self, queue):
            return "pool-a"

        def register(self, queue):
            return None

    def load(name):
        return None
''')


@pytest.fixture
def service(tmp_path, monkeypatch):
    """A module named like a service's, importable but not yet imported."""
    name = "fakesvc_%s" % tmp_path.name.replace("-", "_")[-20:]
    (tmp_path / (name + ".py")).write_text(SERVICE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_declarations_apply_when_the_module_is_imported(service, trace,
                                                        recorder):
    patcher = _base.Patcher()
    toolkit.TraceClass(service + ":Catalog", "pool",
                       methods=("lookup",)).register(patcher)
    toolkit.TraceCreated(service + ":ControllerBase",
                         lambda obj: ("message_controller", None)
                         ).register(patcher)
    toolkit.Replace(service + ":load",
                    lambda original: lambda name: "loaded " + name
                    ).register(patcher)
    assert service not in sys.modules and not patcher
    module = importlib.import_module(service)
    assert module.load("x") == "loaded x"
    assert module.Catalog().lookup("q") == "pool-a"
    module.Catalog().register("q")                 # not listed
    controller = module.MessageController(driver=None)
    assert type(controller) is module.MessageController
    assert controller.post([1, 2]) == 2
    assert [m["name"] for m in recorder] == [
        "pool-start", "pool-stop",
        "message_controller-start", "message_controller-stop"]
    patcher.restore()
    assert module.load("x") is None
    assert not hasattr(module.MessageController(None),
                       "_stacktrail_traced_methods")


def test_flag_gate_follows_the_live_settings(service, trace, recorder,
                                             monkeypatch):
    module = importlib.import_module(service)
    patcher = _base.Patcher()
    toolkit.TraceClass(service + ":Catalog", "pool", flag="trace_pooling",
                       methods=("lookup",)).register(patcher)
    live = settings.Settings()
    monkeypatch.setattr(settings, "current", live)
    module.Catalog().lookup("q")
    live.flags["trace_pooling"] = True
    module.Catalog().lookup("q")
    assert [m["name"] for m in recorder] == ["pool-start", "pool-stop"]
    patcher.restore()


def test_a_failing_declaration_is_logged_and_the_service_runs(
        service, caplog):
    patcher = _base.Patcher()
    toolkit.TraceClass(service + ":Missing", "x").register(patcher)
    module = importlib.import_module(service)
    assert module.Catalog().lookup("q") == "pool-a"
    assert "tracing failure in adapter" in caplog.text


def test_a_fixed_description_traces_every_object_created(service, trace,
                                                         recorder):
    patcher = _base.Patcher()
    toolkit.TraceCreated(service + ":ControllerBase",
                         ("driver", None)).register(patcher)
    module = importlib.import_module(service)
    assert module.MessageController(driver=None).post([1]) == 1
    assert [m["name"] for m in recorder] == ["driver-start", "driver-stop"]
    patcher.restore()


def test_an_openstack_service_marks_its_manager_and_extra_endpoints():
    class Endpoint:
        pass

    class Manager(Endpoint):
        additional_endpoints = [Endpoint(), Endpoint()]

    class Service:
        binary, host = "nova-compute", "node-1"

        def __init__(self):
            self.manager = Manager()

    service = Service()
    toolkit.Serves("x:Service").mark(service)
    for endpoint in [service.manager] + Manager.additional_endpoints:
        assert getattr(endpoint, _base.SERVES) == ("nova-compute", "node-1")


def test_held_declarations_that_record_apply_at_release(service, trace,
                                                        recorder):
    """Wired held (an armed process not traced yet), an adapter replaces
    what it must at once and leaves the classes it would only record as
    they are; released (the first trace), those are traced, the objects
    made meanwhile included."""
    from stacktrail import adapters
    from stevedore import extension

    class Project(adapters.Adapter):
        name = "heldproject"
        wiring = (
            toolkit.Replace(service + ":load", lambda original:
                            lambda name: "loaded " + name),
            toolkit.TraceClass(service + ":Catalog", "pool",
                               methods=("lookup",)),
            toolkit.TraceCreated(service + ":ControllerBase",
                                 ("message_controller", None)),
        )
    manager = extension.ExtensionManager.make_test_instance(
        [extension.Extension(Project.name, None, Project, None)])
    adapter = adapters.load(Project.name, manager=manager)
    module = importlib.import_module(service)
    lookup = module.Catalog.lookup
    adapters.wire(adapter, conf=None, hold=True)
    made_before = module.MessageController(driver=None)
    assert module.load("x") == "loaded x"
    assert module.Catalog.lookup is lookup
    module.Catalog().lookup("q")
    made_before.post([1])
    assert recorder.names() == []

    adapters.release()
    made_before.post([1])
    module.MessageController(driver=None).post([1, 2])
    module.Catalog().lookup("q")
    assert recorder.names() == [
        "message_controller-start", "message_controller-stop"] * 2 + [
        "pool-start", "pool-stop"]
    adapters.unwire(adapter)
    assert module.Catalog.lookup is lookup
    assert not hasattr(made_before, "_stacktrail_traced_methods") or \
        type(made_before) is module.MessageController
