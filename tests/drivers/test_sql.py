"""SQL stores: conformance on sqlite, PostgreSQL and MariaDB, and schema."""

import logging
import sqlite3
import time

import pytest
import sqlalchemy as sa

from stacktrail.common import buffer
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import sql
from tests import servers
from tests.drivers import conformance


class TestSQLiteConformance(conformance.DriverConformance):

    unreachable_connection_string = \
        "sqlite:////nonexistent-dir/sub/traces.db"

    @pytest.fixture
    def connection_string(self, tmp_path):
        return "sqlite:///%s" % (tmp_path / "traces.db")


class TestPostgreSQLConformance(conformance.DriverConformance):

    unreachable_connection_string = \
        "postgresql://postgres@127.0.0.1:%d/x" % servers.free_port()

    @pytest.fixture
    def connection_string(self, postgres_url):
        return postgres_url


class TestMySQLConformance(conformance.DriverConformance):

    unreachable_connection_string = \
        "mysql+pymysql://root@127.0.0.1:%d/x" % servers.free_port()

    @pytest.fixture
    def connection_string(self, mysql_url):
        return mysql_url


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def any_sql_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "t.db")
    return request.getfixturevalue(request.param + "_url")


def _point(base_id, name="x", phase=points.START, ns=None, info=None):
    return (name, phase, base_id, base_id, ids.new_id(),
            ns or time.time_ns(), info)


def test_schema_and_indexes(any_sql_url):
    driver = base.get_driver(any_sql_url, project="p", service="s")
    base_id = ids.new_id()
    ns = 1_700_000_000_123_456_789
    driver.write_points([_point(base_id, "n" * 400, ns=ns,
                                info={"etype": "E", "secret": object()})])
    inspector = sa.inspect(sa.create_engine(any_sql_url))
    columns = {c["name"] for c in inspector.get_columns(sql.TABLE)}
    assert {"base_id", "trace_id", "parent_id", "name", "timestamp",
            "project", "service", "host", "is_error", "message"} <= columns
    indexed = {tuple(i["column_names"])
               for i in inspector.get_indexes(sql.TABLE)}
    assert ("base_id", "timestamp") in indexed
    message, = driver.get_messages(ids.to_uuid(base_id))
    assert message["name"] == "n" * 400 + "-start"  # full name kept
    assert message["timestamp"] == "2023-11-14T22:13:20.123456"
    assert driver.list_traces() == [{"base_id": ids.to_uuid(base_id),
                                     "timestamp": message["timestamp"]}]
    assert driver.list_error_traces() == driver.list_traces()


def test_second_driver_reuses_schema(any_sql_url):
    first = base.get_driver(any_sql_url)
    first.write_points([_point(ids.new_id())])
    second = base.get_driver(any_sql_url)
    second.write_points([_point(ids.new_id())])
    assert len(second.list_traces()) == 2


def test_empty_database_reads_empty(any_sql_url):
    if any_sql_url.startswith("sqlite:///"):
        # An existing file without the table (a path that does not exist
        # is refused: tests/drivers/test_extras_stores.py).
        sqlite3.connect(any_sql_url[len("sqlite:///"):]).close()
    driver = base.get_driver(any_sql_url)
    assert driver.list_traces() == []
    assert driver.list_error_traces() == []
    assert driver.get_messages(ids.to_uuid(ids.new_id())) == []


def test_list_traces_first_message_fields(any_sql_url):
    driver = base.get_driver(any_sql_url, service="api")
    base_id = ids.new_id()
    ns = time.time_ns()
    driver.write_points([_point(base_id, "late", ns=ns + 10**6)])
    driver.write_points([_point(base_id, "early", ns=ns)])
    listed, = driver.list_traces(fields={"base_id", "timestamp", "name",
                                         "service"})
    assert listed["name"] == "early-start" and listed["service"] == "api"


def test_parameters_never_logged(tmp_path, caplog):
    """A failing insert is logged once, in one line, without its values."""
    url = "sqlite:///%s" % (tmp_path / "t.db")
    driver = base.get_driver(url)
    driver.write_points([_point(ids.new_id())])
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # break the table under the writer
        conn.execute(sa.text("DROP TABLE %s" % sql.TABLE))
        conn.execute(sa.text("CREATE TABLE %s (id INTEGER)" % sql.TABLE))
    sink = buffer.BufferedSink(driver, batch_size=5)
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        sink.put(_point(ids.new_id(), info={"password": "hunter2"}))
    assert sink.flush(5) is False
    assert sink.errors == 4 and sink.dropped == 20
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in logged and "INSERT" not in logged
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


@pytest.mark.parametrize("url, match", [
    ("sqlite://", "sqlite needs a file path"),
    ("postgresql://u:pw@host:notaport/db", "bad SQL connection string"),
    ("mysql://u:pw@localhost:notaport/db", "bad SQL connection string"),
])
def test_bad_connection_strings(url, match):
    with pytest.raises(base.DriverError, match=match) as caught:
        base.get_driver(url).list_traces()
    assert "\n" not in str(caught.value) and "pw@" not in str(caught.value)


def test_unreachable_read_is_one_line():
    url = "postgresql://postgres:pw@127.0.0.1:%d/x" % servers.free_port()
    with pytest.raises(base.DriverError, match="SQL store") as caught:
        base.get_driver(url).list_traces()
    assert "\n" not in str(caught.value) and ":pw@" not in str(caught.value)
