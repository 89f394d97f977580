"""Each store's extra installs the client library its driver uses, and a
missing one is named in one line with the extra that installs it."""

import importlib.metadata
import logging
import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from stacktrail import notifier
from stacktrail.common import sink as sinks
from stacktrail.drivers import base
from stacktrail.drivers import sql


def _extra_distributions(extra):
    """Distribution names ``pip install 'stacktrail[extra]'`` installs."""
    names = set()
    for requirement in importlib.metadata.requires("stacktrail") or ():
        spec, _, marker = requirement.partition(";")
        if re.search(r'extra\s*==\s*"%s"' % re.escape(extra), marker):
            names.add(re.split(r"[\[<>=!~ ]", spec.strip())[0].lower())
    return names


def _owner(module_file):
    """The distribution that installed ``module_file``."""
    target = os.path.realpath(module_file)
    for dist in importlib.metadata.distributions():
        for path in dist.files or ():
            if os.path.realpath(dist.locate_file(path)) == target:
                return dist.metadata["Name"].lower()
    return None


def _sql_modules(url):
    """The modules SQLAlchemy imports for ``url`` as the driver reads it."""
    parsed = sql.parse_url(sa, url)
    return [sa, parsed.get_dialect().import_dbapi()]


@pytest.mark.parametrize("extra,modules", [
    ("postgresql", lambda: _sql_modules("postgresql://u@db/traces")),
    ("mysql", lambda: _sql_modules("mysql://u@db/traces")),
    ("sql", lambda: _sql_modules("sqlite:///traces.db")),
    ("redis", lambda: [base.require("redis", "redis")]),
    ("mongodb", lambda: [base.require("pymongo", "mongodb")]),
    ("otlp", lambda: [base.require(
        "opentelemetry.proto.trace.v1.trace_pb2", "otlp"),
        base.require("google.protobuf", "otlp")]),
])
def test_the_extra_installs_what_the_driver_imports(monkeypatch, extra,
                                                    modules):
    # A fresh machine has no mysqlclient: mysql:// must work without it.
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    wanted = _extra_distributions(extra)
    assert wanted, "no extra %r" % extra
    for module in modules():
        if module.__name__.startswith("sqlite3"):  # the standard library
            continue
        assert _owner(module.__file__) in wanted, (module.__name__, wanted)


def test_plain_mysql_url_uses_pymysql_without_mysqlclient(monkeypatch,
                                                          mysql_url):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    url = mysql_url.replace("mysql+pymysql://", "mysql://")
    assert url.startswith("mysql://")
    driver = base.get_driver(url, service="api")
    driver.notify({"name": "wsgi-start", "base_id": "b1", "trace_id": "t1",
                   "parent_id": "b1", "timestamp": "2024-05-01T10:00:00.0"})
    assert [t["base_id"] for t in driver.list_traces()] == ["b1"]
    driver.close()


def _cli_without(modules, *args):
    """``stacktrail`` in a process where ``modules`` cannot be imported."""
    code = ("import sys\n"
            "for name in %r: sys.modules[name] = None\n"
            "from stacktrail.cmd import cli\n"
            "sys.exit(cli.main())\n" % (list(modules),))
    return subprocess.run([sys.executable, "-c", code] + list(args),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url,modules,extra", [
    ("postgresql://u@127.0.0.1:1/x", ["psycopg"], "postgresql"),
    ("mysql://u@127.0.0.1:1/x", ["MySQLdb", "pymysql"], "mysql"),
    ("mysql+pymysql://u@127.0.0.1:1/x", ["pymysql"], "mysql"),
])
def test_missing_sql_driver_names_the_extra(url, modules, extra):
    done = _cli_without(modules, "trace", "list", "--connection-string",
                        url)
    assert done.returncode == 1 and done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line, done.stderr
    assert "pip install 'stacktrail[%s]'" % extra in line
    assert "bad SQL connection string" not in line


def test_missing_driver_on_the_service_side_is_one_log_line(monkeypatch,
                                                            caplog):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    notifier.clear_notifier_cache()
    with caplog.at_level(logging.INFO, logger="stacktrail"):
        made = notifier.create("postgresql://u@127.0.0.1:1/x", project="p",
                               service="api")
    notifier.clear_notifier_cache()
    assert isinstance(made, sinks.NoopSink)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "pip install 'stacktrail[postgresql]'" in lines[0]
