"""``stacktrail trace list``: columns, filters, sorting and formats, run as
a subprocess against a file:// and a SQLite store."""

import json

import pytest

from stacktrail.drivers import base
from tests.report import tracegen as tg
from tests.test_cli import assert_error
from tests.test_cli import run

SLOW = "3e000000-0000-4000-8000-000000000003"
FAILED = "1e000000-0000-4000-8000-000000000001"
QUICK = "2e000000-0000-4000-8000-000000000002"
ERROR = {"etype": "KeyError", "message": "boom"}


def _trace(base_id, minute, specs, **stop):
    """Messages of one trace starting ``minute`` minutes after tg.T0."""
    messages = []
    for name, span_id, parent, start, end, service in specs:
        messages += tg.span(name, span_id, parent or base_id,
                            minute * 60_000 + start, minute * 60_000 + end,
                            service=service, base_id=base_id,
                            stop_info=stop.get(name))
    return messages


MESSAGES = (
    _trace(FAILED, 0, [("wsgi", "f1", None, 0, 100, "nova-api"),
                       ("rpc-call", "f2", "f1", 10, 60, "nova-compute")],
           **{"rpc-call": ERROR})
    + _trace(QUICK, 10, [("rpc", "q1", None, 0, 20, "nova-conductor")])
    + _trace(SLOW, 20, [("wsgi", "s1", None, 0, 300, "nova-api"),
                        ("db", "s2", "s1", 5, 250, "nova-api")]))


@pytest.fixture(params=["file", "sqlite"])
def store(request, tmp_path):
    if request.param == "file":
        path = tmp_path / "store.jsonl"
        path.write_text("".join(json.dumps(m) + "\n" for m in MESSAGES))
        return "file://%s" % path
    url = "sqlite:///%s" % (tmp_path / "store.db")
    driver = base.get_driver(url)
    driver.write_messages([dict(m) for m in MESSAGES])
    driver.close()
    return url


def listed(store, *options):
    done = run("trace", "list", "--connection-string", store, *options)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def ids_of(lines):
    return [line.split()[-1] for line in lines[1:]]


def test_table_columns_newest_first(store):
    lines = listed(store)
    assert lines[0].split() == ["START", "(UTC)", "DURATION", "SPANS",
                                "SERVICES", "NAME", "BASE_ID"]
    assert ids_of(lines) == [SLOW, QUICK, FAILED]
    failed = lines[3].split()
    assert failed == ["2024-05-01", "12:00:00.000000", "100.000", "ms", "2",
                      "!", "nova-api,nova-compute", "wsgi", FAILED]
    assert lines[1].split()[2:] == ["300.000", "ms", "2", "nova-api",
                                    "wsgi", SLOW]


def test_time_window(store):
    assert ids_of(listed(store, "--since", "2024-05-01T12:05",
                         "--until", "2024-05-01T12:15")) == [QUICK]
    assert ids_of(listed(store, "--since", "2024-05-01T12:10")) == [
        SLOW, QUICK]
    assert ids_of(listed(store, "--until", "2024-05-01T12:10")) == [FAILED]
    # "2h": since two hours ago; these traces are older.
    assert listed(store, "--since", "2h") == ["no traces in %s" % store]


def test_service_duration_and_error_filters(store):
    assert ids_of(listed(store, "--service", "nova-compute")) == [FAILED]
    assert ids_of(listed(store, "--service", "nova-api")) == [SLOW, FAILED]
    assert ids_of(listed(store, "--min-duration", "100ms")) == [SLOW, FAILED]
    assert ids_of(listed(store, "--min-duration", "0.2s")) == [SLOW]
    assert ids_of(listed(store, "--errors")) == [FAILED]


def test_error_trace_is_the_same_line_once(store):
    everything = listed(store)
    errors = listed(store, "--error-trace")
    assert errors == [everything[0], everything[3]]


def test_sort_and_limit(store):
    assert ids_of(listed(store, "--sort", "duration")) == [
        SLOW, FAILED, QUICK]
    assert ids_of(listed(store, "--sort", "duration", "--limit", "2")) == [
        SLOW, FAILED]
    assert ids_of(listed(store, "--limit", "1")) == [SLOW]


def test_json(store):
    traces = json.loads("\n".join(listed(store, "--format", "json",
                                         "--errors")))
    assert traces == [{"base_id": FAILED, "name": "wsgi",
                       "timestamp": "2024-05-01T12:00:00.000000",
                       "duration_ms": 100.0,
                       "services": ["nova-api", "nova-compute"],
                       "spans": 2, "error": True}]
    assert listed(store, "--json", "--errors") == listed(
        store, "--format", "json", "--errors")


def test_bad_filters_are_one_line(store):
    assert_error(run("trace", "list", "--connection-string", store,
                     "--min-duration", "fast"), "not a duration")
    assert_error(run("trace", "list", "--connection-string", store,
                     "--since", "yesterday-ish"), "not a time")
    done = run("trace", "list", "--connection-string", store,
               "--sort", "name")
    assert done.returncode == 2
