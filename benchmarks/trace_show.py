"""How long does ``stacktrail trace show`` of a big trace take, from the
command's start to the report, reading a real store?

Target: <= 1 s for a 100,000-point trace on this machine, in every format.
Next to it, in the same run and on the same stored data, osprofiler's
``get_report`` (its Redis and MongoDB drivers; for the file store, which
osprofiler has no driver for, and PostgreSQL, where its SQLAlchemy driver
no longer runs, its ``_append_results`` and ``_parse_results`` fed by
``json.loads`` of each line or row: what its drivers do).  The trace is
``report_build.make_trace``: a fan-out over services with chains 300
deep, written in osprofiler's layouts by our drivers.

    .venv/bin/python benchmarks/trace_show.py [--points N] [--repeat R]
        [--stores redis,postgresql,mongodb,file] [--formats text,json,...]

With ``--points 1000000`` it shows that a million-point report finishes
(progress lines on stderr) and prints the command's peak memory.

Servers are the tests' (``tests/servers.py``: the one on the standard port,
else a throwaway one).  ``STACKTRAIL_NO_FAST=1`` in the environment makes
the command use the pure-Python fallback (no orjson).
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import report_build  # noqa: E402
from tests import servers  # noqa: E402

TARGET_S = 1.0
STORES = ("redis", "postgresql", "mongodb", "file")
FORMATS = ("text", "json", "html", "dot")
CLI = os.path.join(os.path.dirname(sys.executable), "stacktrail")


@contextlib.contextmanager
def _database(server_name, resource, url):
    """A fresh database of one of the tests' servers, as a store URL."""
    server = servers.ensure(server_name)
    with resource(server) as name:
        yield url % (server.host, server.port, name)


@contextlib.contextmanager
def _file():
    with tempfile.TemporaryDirectory() as tmp:
        yield "file://%s/traces.jsonl" % tmp


OPEN = {
    "redis": lambda: _database("redis", servers.redis_db,
                               "redis://%s:%d/%s"),
    "postgresql": lambda: _database("postgres", servers.postgres_database,
                                    "postgresql://postgres@%s:%d/%s"),
    "mongodb": lambda: _database("mongo", servers.mongo_database,
                                 "mongodb://%s:%d/%s"),
    "file": _file,
}


def store(url, messages):
    from stacktrail.drivers import base
    driver = base.get_driver(url, store_timeout=60)
    for i in range(0, len(messages), 10_000):
        driver.write_messages(messages[i:i + 10_000])
    driver.close()


def show(url, base_id, fmt):
    """Seconds from starting the command to its exit (report written)."""
    started = time.perf_counter()
    out = subprocess.run([CLI, "trace", "show", base_id, "--" + fmt,
                          "--connection-string", url, "--out", os.devnull,
                          "--timeout", "120"],
                         capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if out.returncode:
        raise SystemExit("trace show failed: %s" % out.stderr.strip())
    return elapsed


def osprofiler_report(url, base_id):
    """Seconds osprofiler's get_report takes on the same stored trace."""
    from osprofiler.drivers import base as op_base
    if url.startswith("file://"):
        driver = _OsprofilerReplay(_file_lines(url[len("file://"):]))
    elif url.startswith("postgresql://"):
        driver = _OsprofilerReplay(_sql_rows(url))
    elif url.startswith("mongodb://"):
        driver = op_base.get_driver(url, db_name=url.rsplit("/", 1)[1],
                                    conf={})
    else:
        driver = op_base.get_driver(url, conf={})
    started = time.perf_counter()
    driver.get_report(base_id)
    return time.perf_counter() - started


class _OsprofilerReplay:
    """osprofiler's report built the way its drivers build one (each
    message decoded with ``json.loads``, ``_append_results``, then
    ``_parse_results``), from the file's lines or the SQL rows: it has no
    file driver, and its SQLAlchemy driver calls ``select([table])``,
    which SQLAlchemy 2 refuses."""

    def __init__(self, read):
        from osprofiler.drivers import base as op_base
        self.read = read
        self.driver = type("Replay", (op_base.Driver,), {})("replay://")

    def get_report(self, base_id):
        driver = self.driver
        for text in self.read(base_id):
            n = json.loads(text)
            if n["base_id"] != base_id:
                continue
            driver._append_results(n["trace_id"], n["parent_id"],
                                   n["name"], n["project"], n["service"],
                                   n["info"]["host"], n["timestamp"], n)
        return driver._parse_results()


def _file_lines(path):
    def read(base_id):
        with open(path) as f:
            yield from f
    return read


def _sql_rows(url):
    def read(base_id):
        import psycopg2
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT message FROM stacktrail_points "
                            "WHERE base_id = %s", (base_id,))
                for (text,) in cur:
                    yield text
        finally:
            conn.close()
    return read


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()

    messages = report_build.make_trace(args.points)
    base_id = messages[0]["base_id"]
    ok = True
    print("%d points; codec: %s" % (len(messages), "stdlib (forced)" if
          os.environ.get("STACKTRAIL_NO_FAST") else "as installed"))
    for name in args.stores.split(","):
        with OPEN[name]() as url:
            store(url, messages)
            theirs = min(osprofiler_report(url, base_id)
                         for _ in range(args.repeat))
            for fmt in args.formats.split(","):
                times = [show(url, base_id, fmt) for _ in range(args.repeat)]
                ours = statistics.median(times)
                verdict = "ok" if ours <= TARGET_S else "MISSED"
                ok = ok and ours <= TARGET_S
                print("%-10s --%-4s  trace show %.2f s (median of %d, "
                      "target <= %.1f s) %s   osprofiler get_report %.2f s"
                      "   ratio %.2f"
                      % (name, fmt, ours, len(times), TARGET_S, verdict,
                         theirs, ours / theirs))
    print("peak memory of one trace show: %.0f MiB" % (resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
