"""The Python API for scripts: ``stacktrail.client``, in this process.

Start a trace, get its id, and carry it into thread pools (automatically),
plain threads (``trace.wrap``, ``trace.joined``), executors of any kind
(``trace.submit``) and asyncio; two traces running at once never mix; a
service's own traces keep the rule that a new thread starts clean.  The
points go to a synchronous notifier here; the tests with real client
libraries and servers are the other modules of this directory.
"""

import asyncio
import concurrent.futures
import threading

import pytest

from stacktrail import client
from stacktrail import notifier
from stacktrail import profiler
from stacktrail import requests as st_requests
from stacktrail.clients import executors
from stacktrail.common import sink
from tests.services import tracing


@pytest.fixture
def received():
    """The points written, as osprofiler messages; the process as it was
    afterwards (notifier, integrations, no trace)."""
    points = []
    was = st_requests.is_enabled(), executors.is_enabled()
    notifier.set(points.append)
    yield points
    profiler.clean()
    notifier.set(sink.NoopSink())
    if not was[0]:
        st_requests.disable()
    if not was[1]:
        executors.disable()


def work(label):
    """A unit of work that records a span (as a request would)."""
    with profiler.Trace("work", info={"label": label}):
        return client.current_id()


def tree(points):
    """{span id: (name, parent id, base id, label)} of the points."""
    spans = {}
    for point in points:
        if point["name"].endswith("-start"):
            spans[point["trace_id"]] = (
                point["name"][:-len("-start")], point["parent_id"],
                point["base_id"], (point["info"] or {}).get("label"))
    return spans


def children(spans, parent):
    return [s for s in spans.values() if s[1] == parent]


def trace_span(spans, trace):
    (span_id,) = [i for i, s in spans.items()
                  if s[1] == trace.id and s[0] == trace.name]
    return span_id


def test_start_get_id_and_stop(received):
    trace = client.trace(tracing.KEY, name="job").start()
    assert client.current_id() == trace.id
    assert trace.headers()["traceparent"].split("-")[1] == \
        trace.id.replace("-", "")
    trace.stop(info={"done": 3})
    trace.stop()                                   # harmless
    assert client.current_id() is None
    assert [(m["name"], m["base_id"]) for m in received] == [
        ("job-start", trace.id), ("job-stop", trace.id)]
    assert received[1]["info"]["done"] == 3


def test_pool_threads_run_in_the_trace(received):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        with client.trace(tracing.KEY, name="job") as trace:
            ids = list(pool.map(work, range(6)))
            assert pool.submit(work, "one").result() == trace.id
        # Outside the trace, the same pool starts clean again.
        assert pool.submit(client.current_id).result() is None
    assert ids == [trace.id] * 6
    spans = tree(received)
    labels = {s[3] for s in children(spans, trace_span(spans, trace))}
    assert labels == {0, 1, 2, 3, 4, 5, "one"}


def test_two_traces_in_parallel_threads_never_mix(received):
    shared = concurrent.futures.ThreadPoolExecutor(2)
    barrier = threading.Barrier(2)
    traces = {}

    def command(name):
        with client.trace(tracing.KEY, name=name) as trace:
            traces[name] = trace
            barrier.wait(5)     # both traces open before any work
            futures = [shared.submit(work, "%s-%d" % (name, i))
                       for i in range(20)]
            assert {f.result() for f in futures} == {trace.id}

    threads = [threading.Thread(target=command, args=(name,))
               for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    shared.shutdown()
    spans = tree(received)
    for name, trace in traces.items():
        mine = children(spans, trace_span(spans, trace))
        assert sorted(s[3] for s in mine) == sorted(
            "%s-%d" % (name, i) for i in range(20))
        assert {s[2] for s in mine} == {trace.id}


def test_asyncio_tasks_and_their_threads(received):
    async def command(name):
        loop = asyncio.get_running_loop()
        with client.trace(tracing.KEY, name=name) as trace:
            await asyncio.sleep(0)
            here = client.current_id()
            in_executor = await loop.run_in_executor(None, work, name + "-x")
            in_thread = await asyncio.to_thread(work, name + "-t")
        return trace, {here, in_executor, in_thread}

    async def main():
        return await asyncio.gather(command("a"), command("b"))

    done = asyncio.run(main())
    spans = tree(received)
    for trace, seen in done:
        assert seen == {trace.id}
        assert {s[3] for s in children(spans, trace_span(spans, trace))} \
            == {trace.name + "-x", trace.name + "-t"}


def test_plain_threads_are_handed_over(received):
    with client.trace(tracing.KEY, name="job") as trace:
        outside = []
        clean = threading.Thread(target=lambda: outside.append(
            client.current_id()))
        clean.start()
        clean.join()
        carried = threading.Thread(target=trace.wrap(work), args=("wrap",))
        carried.start()
        carried.join()

    def later():                       # a thread that is not in the trace
        with trace.joined():
            work("joined")
        outside.append(client.current_id())
    thread = threading.Thread(target=later)
    thread.start()
    thread.join()
    assert outside == [None, None]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert trace.submit(pool, work, "submitted").result() == trace.id
    spans = tree(received)
    assert {s[3] for s in children(spans, trace_span(spans, trace))} == {
        "wrap", "joined", "submitted"}


def test_a_service_trace_leaves_pools_clean(received):
    """Only client traces carry: a service's trace (profiler.init, as the
    WSGI filter does) keeps "a new thread starts clean"."""
    executors.enable()
    profiler.init(tracing.KEY)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(profiler.get).result() is None


def test_disable_restores_the_executor_classes(received):
    original = concurrent.futures.ThreadPoolExecutor.__dict__["submit"]
    if executors.is_enabled():
        executors.disable()
        original = concurrent.futures.ThreadPoolExecutor.__dict__["submit"]
    executors.enable()
    assert concurrent.futures.ThreadPoolExecutor.submit is not original
    executors.disable()
    assert concurrent.futures.ThreadPoolExecutor.__dict__["submit"] is \
        original
