"""``stacktrail analyze`` against a real Redis store holding generated
Cinder volume creates whose answer is known: in the later window the
volume service's database statements are planted 2 ms slower each."""

import datetime
import functools
import json
import random

import pytest

from stacktrail.cmd import cli
from stacktrail.drivers import base
from stacktrail.report import aggregate
from tests import servers
from tests.report import opgen

DAY_US = 86_400_000_000
START = datetime.datetime(2024, 5, 1, 10, 0, tzinfo=datetime.timezone.utc)
START_US = int(START.timestamp() * 1_000_000)
WINDOW = "2024-05-02T10:00/1h"
COUNT = 150                       # traces per window
SPANS = 20                        # 8 of them statements of cinder-volume
PLANT = opgen.Plant(opgen.VOLUME, "db", 2.0)
VOLUME_STATEMENTS = 8


@pytest.fixture(scope="module")
def store(_redis):
    """A Redis db holding a baseline hour and, a day later, an hour with
    the plant; every 10th trace fails, every 5th is a GET."""
    with servers.redis_db(_redis) as db:
        url = "redis://%s:%s/%d" % (_redis.host, _redis.port, db)
        driver = base.get_driver(url)
        try:
            for day, plant in ((0, None), (1, PLANT)):
                messages = []
                for _, trace in opgen.window(
                        START_US + day * DAY_US, COUNT, 20_000_000,
                        seed=day + 1, plant=plant, spans=SPANS,
                        error_every=10, other_every=5):
                    messages += trace
                driver.write_messages(messages)
        finally:
            driver.close()
        yield url


def analyze(capsys, url, *args):
    code = cli.main(["analyze", "--connection-string", url] + list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_baseline_comparison_names_the_planted_kind(store, capsys):
    code, out, err = analyze(capsys, store, "--window", WINDOW,
                             "--baseline=-1d", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["traces"]["matched"] == COUNT
    assert answer["baseline"]["traces"]["matched"] == COUNT
    top = answer["changes"][0]
    assert (top["service"], top["kind"]) == (opgen.VOLUME, "db")
    planted_us = VOLUME_STATEMENTS * PLANT.extra_ms * 1000
    assert top["change_us"] == pytest.approx(planted_us, rel=0.1)
    assert top["share_of_change"] > 0.8
    # The latency moved by the planted amount at every percentile.
    change = answer["latency_change"]["end_to_end"]
    for p in ("p50_us", "p90_us", "p99_us"):
        assert change[p]["change"] == pytest.approx(planted_us, abs=8000)
    # The shares are of the whole end-to-end time: they add up to 1.
    assert sum(g["share"] for g in answer["groups"]) == pytest.approx(
        1, abs=0.01)
    assert answer["latency"]["end_to_end"]["p50_us"] > \
        answer["latency"]["response"]["p50_us"]
    assert "window: %d/%d traces read" % (COUNT, COUNT) in err
    assert "baseline: %d/%d traces read" % (COUNT, COUNT) in err


def test_text_ranks_the_plant_first_and_quiet_has_no_progress(store,
                                                              capsys):
    code, out, err = analyze(capsys, store, "--window", WINDOW,
                             "--baseline", "2024-05-01T10:00/1h", "--quiet")
    assert code == 0 and err == ""
    changed = out.split("What changed")[1].splitlines()
    assert changed[1].split()[:2] == ["service", "kind"]
    assert changed[2].split()[:2] == [opgen.VOLUME, "db"], changed[:3]
    assert "p50" in out and "p99" in out


def test_filters_by_root_error_and_service(store, capsys):
    code, out, _ = analyze(capsys, store, "--window", WINDOW, "--json",
                           "--root", "GET /v3/volumes/detail")
    assert code == 0
    answer = json.loads(out)
    assert answer["traces"]["matched"] == COUNT // 5
    assert [op["operation"] for op in answer["operations"]] == [
        "wsgi GET /v3/volumes/detail"]
    code, out, _ = analyze(capsys, store, "--window", WINDOW, "--json",
                           "--error")
    assert json.loads(out)["traces"]["matched"] == COUNT // 10
    code, _, err = analyze(capsys, store, "--window", WINDOW,
                           "--service", "nova-compute")
    assert code == 1 and "none of the %d traces" % COUNT in err
    code, _, err = analyze(capsys, store, "--window", "2020-01-01T00:00/1h")
    assert code == 1 and "no trace in" in err


def test_worker_processes_give_the_same_answer(store):
    window = aggregate.parse_window(WINDOW)

    def run(jobs):
        driver = base.get_driver(store)
        chosen = aggregate.select(driver.list_traces(), window)
        # A picklable factory: workers are spawned, not forked, when the
        # test process runs other threads.
        scan = aggregate.Scan(functools.partial(base.get_driver, store),
                              jobs=jobs, chunk=40)
        (stats, state), = scan.run([("window", chosen)], aggregate.Filter(),
                                   driver=driver)
        return aggregate.result(stats, window, aggregate.Filter(), state)

    serial, parallel = run(1), run(2)
    for answer in (serial, parallel):
        answer["traces"].pop("seconds")
    assert serial == parallel


def test_percentiles_of_the_histogram_are_within_a_bucket():
    hist = aggregate.Histogram()
    values = [random.Random(7).uniform(1_000, 100_000) for _ in range(5000)]
    for value in values:
        hist.add(value)
    values.sort()
    for p in aggregate.PERCENTILES:
        exact = values[int(p / 100 * len(values)) - 1]
        assert hist.percentile(p) == pytest.approx(exact, rel=0.025)


def test_windows():
    now = START_US
    hour = 3_600_000_000
    window = aggregate.parse_window("1h", now_us=now)
    assert (window.start_us, window.end_us) == (now - hour, now)
    window = aggregate.parse_window("2024-05-01T10:00/30m")
    assert (window.start_us, window.end_us) == (START_US,
                                                START_US + hour // 2)
    baseline = aggregate.parse_window("-1d", relative_to=window)
    assert baseline.start_us == START_US - DAY_US
    with pytest.raises(ValueError):
        aggregate.parse_window("2024-05-01T10:00/2024-05-01T09:00")
    with pytest.raises(ValueError):
        aggregate.parse_window("yesterday")


def test_a_file_store_is_read_in_one_pass(tmp_path, capsys):
    url = "file://%s" % (tmp_path / "traces.jsonl")
    driver = base.get_driver(url)
    messages = []
    for _, trace in opgen.window(START_US, 30, 1_000_000, seed=5, spans=12,
                                 error_every=3):
        messages += trace
    driver.write_messages(messages)
    driver.close()
    code, out, err = analyze(capsys, url, "--json", "--no-error")
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["traces"]["read"], answer["traces"]["matched"]) == (30, 20)
    assert answer["groups"][0]["kind"] == "driver"
    page = tmp_path / "analyze.html"
    code, out, err = analyze(capsys, url, "--html", "--out", str(page))
    assert code == 0 and out == "", err
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert '"matched":30' in page.read_text()
