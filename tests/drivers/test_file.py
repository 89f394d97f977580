"""file:// driver: conformance plus what only a shared file can get wrong."""

import json
import multiprocessing
import os

import pytest

from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
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
