"""Pool and driver helpers: spans, flag read per call, type kept."""

import pytest

from stacktrail.integrations import drivers
from stacktrail.integrations import pools


class Driver:
    def create(self, name):
        return "created " + name

    def fail(self):
        raise OSError("backend down")

    def _private(self):
        return "private"


class Catalog:
    def lookup(self, queue):
        return _Pool("pool-a")


class _Pool:
    def __init__(self, name):
        self.name = name


def test_wrap_driver_keeps_type_and_traces(trace, recorder):
    drivers.enable()
    driver = drivers.wrap(Driver())
    assert type(driver) is Driver and isinstance(driver, Driver)
    assert driver.create("vol") == "created vol"
    assert driver._private() == "private"
    with pytest.raises(OSError):
        driver.fail()
    spans = recorder.spans("driver")
    assert [s["info"]["function"]["name"].rsplit(".", 1)[1]
            for s, _ in spans] == ["create", "fail"]
    assert spans[1][1]["info"]["etype"] == "OSError"
    assert "vol" not in repr(recorder)


def test_wrap_private_on_request_and_unwrap(trace, recorder):
    drivers.enable()
    driver = drivers.wrap(Driver(), private=True, show_args=True)
    driver._private()
    driver.create("x")
    assert len(recorder.spans("driver")) == 2
    drivers.unwrap(driver)
    assert vars(driver) == {}
    driver.create("y")
    assert len(recorder.spans("driver")) == 2


def test_driver_flag_read_at_each_call(trace, recorder):
    driver = drivers.wrap(Driver())
    driver.create("a")
    drivers.enable()
    driver.create("b")
    drivers.disable()
    driver.create("c")
    assert len(recorder.spans("driver")) == 1


def test_pool_selection_and_checkout(trace, recorder):
    pools.enable()
    catalog = pools.instrument(Catalog(), "lookup")
    assert catalog.lookup("q").name == "pool-a"
    with pools.checkout("redis", shard="s1") as span:
        span.stop_info = {"pool": {"result": "conn-3"}}
    spans = recorder.spans("pool")
    assert spans[0][0]["info"]["pool"] == {"name": "Catalog",
                                           "operation": "lookup"}
    assert spans[0][1]["info"]["pool"]["result"] == "pool-a"
    assert spans[1][0]["info"]["pool"]["shard"] == "s1"
    pools.uninstrument(catalog)
    assert vars(catalog) == {}


def test_pool_off_nothing(trace, recorder):
    catalog = pools.instrument(Catalog(), "lookup")
    catalog.lookup("q")
    with pools.checkout("redis"):
        pass
    assert recorder == []
