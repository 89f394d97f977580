"""file:// driver: conformance plus what only a shared file can get wrong."""

import json
import multiprocessing
import os

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import codec
from stacktrail.drivers import file as file_driver
from tests.drivers import conformance


class TestFileConformance(conformance.DriverConformance):

    unreachable_connection_string = "file:///nonexistent-dir/sub/t.jsonl"

    @pytest.fixture
    def connection_string(self, tmp_path):
        return "file://%s" % (tmp_path / "traces.jsonl")


def _point(base_id, name="x", phase=points.START, info=None):
    return (name, phase, base_id, base_id, ids.new_id(), 1_700_000_000 *
            10**9, info)


def test_lines_are_whole_json_messages(tmp_path):
    path = tmp_path / "t.jsonl"
    driver = base.get_driver("file://%s" % path, project="p", service="s")
    base_id = ids.new_id()
    driver.write_points([_point(base_id, info={"obj": object()})] * 3)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    message = json.loads(lines[0])
    assert message["base_id"] == ids.to_uuid(base_id)
    assert message["project"] == "p" and message["service"] == "s"
    assert message["info"]["obj"].startswith("<object")


def _append_many(path, worker):
    driver = base.get_driver("file://%s" % path)
    base_id = ids.new_id()
    for _ in range(50):
        driver.write_points([_point(base_id, "w%d-%s" % (worker, "x" * 500))
                             for _ in range(100)])
    os._exit(0)


def test_processes_share_the_file(tmp_path):
    path = tmp_path / "t.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, i))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 * 50 * 100
    for line in lines:
        json.loads(line)  # no line is cut or interleaved


def test_damaged_line_is_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    driver = base.get_driver("file://%s" % path)
    base_id = ids.new_id()
    driver.write_points([_point(base_id)])
    with open(path, "a") as f:
        f.write('{"base_id": "%s", "na' % ids.to_uuid(base_id))
    assert len(driver.get_messages(ids.to_uuid(base_id))) == 1


@pytest.mark.parametrize("fast", [True, False])
def test_reading_in_chunks_keeps_every_message(tmp_path, monkeypatch, fast):
    # Lines are decoded a chunk at a time, on either codec path: a damaged
    # line and other traces' lines between chunks lose nothing else.
    if fast and not codec.AVAILABLE:
        pytest.skip("orjson is not installed")
    monkeypatch.setattr(file_driver, "READ_CHUNK", 4)
    monkeypatch.setattr(codec, "FAST", fast)
    path = tmp_path / "t.jsonl"
    driver = base.get_driver("file://%s" % path)
    mine, other = ids.new_id(), ids.new_id()
    driver.write_points([_point(mine, "m%d" % i) for i in range(6)])
    with open(path, "a") as f:
        f.write('{"base_id": "%s", "cut\n' % ids.to_uuid(mine))
    driver.write_points([_point(other)] + [_point(mine, "m%d" % i)
                                           for i in range(6, 11)])
    names = [m["name"] for m in driver.get_messages(ids.to_uuid(mine))]
    assert names == ["m%d-start" % i for i in range(11)]


def test_big_trace_shows_progress_on_stderr(tmp_path, monkeypatch, capsys):
    # A big trace says on stderr how far `trace show` has come; the report
    # itself goes to stdout as always.
    from stacktrail.cmd import cli
    monkeypatch.setattr(cli, "PROGRESS_POINTS", 10)
    path = tmp_path / "t.jsonl"
    driver = base.get_driver("file://%s" % path)
    base_id = ids.new_id()
    spans = [ids.new_id() for _ in range(10)]
    driver.write_points([("p", phase, base_id, base_id, span,
                          1_700_000_000 * 10**9 + phase, None)
                         for span in spans for phase in (0, 1)])
    assert cli.main(["trace", "show", ids.to_uuid(base_id), "--json",
                     "--connection-string", "file://%s" % path]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["info"]["span_count"] == 10
    assert "20 points read in" in err and "report built in" in err


def test_bad_connection_strings(tmp_path):
    with pytest.raises(base.DriverError, match="needs a path"):
        base.get_driver("file://")
    with pytest.raises(base.DriverError, match="directory"):
        base.get_driver("file://%s" % tmp_path)


def test_missing_file_is_a_clear_error(tmp_path):
    driver = base.get_driver("file://%s" % (tmp_path / "none.jsonl"))
    with pytest.raises(base.DriverError, match="no trace file at"):
        driver.list_traces()


def test_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    driver = base.get_driver("file://traces.jsonl")
    driver.write_points([_point(ids.new_id())])
    assert (tmp_path / "traces.jsonl").exists()
