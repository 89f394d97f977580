"""The current trace follows the work: asyncio tasks, threads, executors,
explicit capture/restore and eventlet greenthreads."""

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import threading

from stacktrail import profiler
from stacktrail.common import context


def test_concurrent_tasks_never_see_each_others_trace(messages):
    seen = {}

    async def request(n):
        prof = profiler.init("key")
        base = prof.get_base_id()
        for step in range(5):
            with profiler.Trace("step%d" % step, info={"task": n}):
                await asyncio.sleep(0.001 * ((n + step) % 3))
                assert profiler.get() is prof
        seen[n] = base
        profiler.clean()

    async def main():
        await asyncio.gather(*(request(n) for n in range(6)))
        return profiler.get()

    assert asyncio.run(main()) is None  # the parent context never traced
    assert len(set(seen.values())) == 6
    assert len(messages) == 6 * 5 * 2
    task_of = {m["trace_id"]: m["info"]["task"] for m in messages
               if m["name"].endswith("-start")}
    for message in messages:
        task = task_of[message["trace_id"]]
        assert message["base_id"] == seen[task]
        # every span is a direct child of its own trace's root
        assert message["parent_id"] == seen[task]


def test_child_tasks_open_sibling_spans(messages):
    async def child(n):
        with profiler.Trace("child", info={"n": n}):
            await asyncio.sleep(0.002 * (3 - n))
            with profiler.Trace("grandchild", info={"n": n}):
                await asyncio.sleep(0.001 * n)

    async def main():
        prof = profiler.init("key")
        with profiler.Trace("parent"):
            parent_id = prof.get_id()
            await asyncio.gather(*(child(n) for n in range(3)))
            # the children's spans never moved the parent's position
            assert prof.get_id() == parent_id
        return prof, parent_id

    prof, parent_id = asyncio.run(main())
    starts = {}
    for m in messages:
        if m["name"] == "child-start":
            assert m["parent_id"] == parent_id
            starts[m["info"]["n"]] = m["trace_id"]
    assert len(set(starts.values())) == 3
    grandchildren = {}
    for m in messages:
        if m["name"] == "child-stop":
            assert m["parent_id"] == parent_id
        if m["name"] == "grandchild-start":
            assert m["parent_id"] == starts[m["info"]["n"]]
            grandchildren[m["trace_id"]] = m["parent_id"]
    for m in messages:
        if m["name"] == "grandchild-stop":
            assert m["parent_id"] == grandchildren[m["trace_id"]]
    stop = [m for m in messages if m["name"] == "parent-stop"][0]
    assert stop["trace_id"] == parent_id
    assert stop["parent_id"] == prof.get_base_id()
    # every span that started also stopped, with the same id
    started = {m["trace_id"] for m in messages if m["name"].endswith("start")}
    stopped = {m["trace_id"] for m in messages if m["name"].endswith("stop")}
    assert started == stopped and len(started) == 7


def test_new_thread_starts_clean():
    profiler.init("key")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(profiler.get()))
    thread.start()
    thread.join()
    assert seen == [None]


def test_thread_trace_does_not_leak_to_caller():
    def worker():
        profiler.init("key")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert profiler.get() is None


def _child_span(seen):
    prof = profiler.get()
    seen.append(prof)
    with profiler.Trace("in-worker"):
        pass
    return prof


def _assert_child_of(messages, parent_id):
    start = [m for m in messages if m["name"] == "in-worker-start"]
    assert len(start) == 1
    assert start[0]["parent_id"] == parent_id


def test_wrap_carries_the_trace(messages):
    prof = profiler.init("key")
    with profiler.Trace("outer"):
        outer_id = prof.get_id()
        seen = []
        carried = context.wrap(lambda: _child_span(seen))
    thread = threading.Thread(target=carried)
    thread.start()
    thread.join()
    assert seen == [prof]
    _assert_child_of(messages, outer_id)


def test_submit_to_executor(messages):
    prof = profiler.init("key")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with profiler.Trace("outer"):
            outer_id = prof.get_id()
            seen = []
            assert context.submit(pool, _child_span, seen).result() is prof
        # a plain submit from the same pool starts clean
        assert pool.submit(profiler.get).result() is None
    _assert_child_of(messages, outer_id)


def test_spawn_thread(messages):
    prof = profiler.init("key")
    with profiler.Trace("outer"):
        outer_id = prof.get_id()
        seen = []
        thread = context.spawn_thread(_child_span, seen)
        thread.join(5)
    assert seen == [prof]
    _assert_child_of(messages, outer_id)


def test_capture_and_restored(messages):
    prof = profiler.init("key")
    with profiler.Trace("outer"):
        outer_id = prof.get_id()
        token = context.capture()
    profiler.clean()

    result = []

    def worker():
        assert profiler.get() is None
        with context.restored(token):
            result.append(_child_span([]))
        result.append(profiler.get())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert result == [prof, None]
    _assert_child_of(messages, outer_id)


def test_capture_without_trace_is_harmless():
    token = context.capture()
    prof = profiler.init("key")
    with context.restored(token):
        assert profiler.get() is None
    assert profiler.get() is prof


GREEN_SCRIPT = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import json
    import threading

    from stacktrail import notifier, profiler
    from stacktrail.common import context

    messages = []
    notifier.set(messages.append)
    out = {}

    def child(tag):
        prof = profiler.get()
        with profiler.Trace("green", info={"tag": tag}):
            eventlet.sleep(0.01)
        return prof.get_base_id() if prof else None

    prof = profiler.init("key")
    with profiler.Trace("outer"):
        out["outer_id"] = prof.get_id()
        carried = [context.green_spawn(child, n) for n in range(3)]
        plain = eventlet.spawn(child, "plain")
        out["carried"] = [g.wait() for g in carried]
        out["plain"] = plain.wait()
        thread_seen = []
        t = threading.Thread(target=lambda: thread_seen.append(
            profiler.get()))
        t.start()
        t.join()
        out["thread"] = thread_seen[0] is None
    out["base_id"] = prof.get_base_id()
    out["messages"] = messages
    out["patched"] = eventlet.patcher.is_monkey_patched("thread")
    print(json.dumps(out))
""")


def test_green_spawn_in_a_monkey_patched_process():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", GREEN_SCRIPT],
                          capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["patched"]
    assert out["carried"] == [out["base_id"]] * 3
    assert out["plain"] is None
    assert out["thread"]
    green = [m for m in out["messages"] if m["name"] == "green-start"]
    assert len(green) == 3
    assert {m["parent_id"] for m in green} == {out["outer_id"]}
    assert len({m["trace_id"] for m in green}) == 3
