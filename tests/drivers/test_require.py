"""A store whose client library is not installed says how to get it."""

import sys

import pytest

from stacktrail.drivers import base


@pytest.mark.parametrize("url,module,extra", [
    ("redis://127.0.0.1:6379/0", "redis", "redis"),
    ("mongodb://127.0.0.1:27017/x", "pymongo", "mongodb"),
    ("postgresql://u@127.0.0.1/x", "sqlalchemy", "sql"),
    ("otlp://127.0.0.1:4318", "opentelemetry.proto.trace.v1.trace_pb2",
     "otlp"),
])
def test_missing_library_is_one_line_with_the_extra(monkeypatch, url,
                                                    module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import now fails
    with pytest.raises(base.DriverError) as raised:
        driver = base.get_driver(url)
        driver.get_messages("7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4")
    text = str(raised.value)
    assert "\n" not in text
    assert "pip install 'stacktrail[%s]'" % extra in text
