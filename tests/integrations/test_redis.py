"""Redis tracing on the local Redis: commands, pipelines, asyncio."""

import asyncio
import socket

import pytest
import redis
import redis.asyncio

from stacktrail.integrations import redis as tracing


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    tracing.uninstrument_client(c)
    c.close()


def test_command_name_and_key_count_never_values(client, trace, recorder):
    tracing.enable()
    client.set("user:1", "s3cret-value")
    client.mget("a", "b", "c")
    spans = recorder.spans("redis")
    assert [(s["info"]["db"]["command"], s["info"]["db"]["keys"])
            for s, _ in spans] == [("SET", 1), ("MGET", 3)]
    assert "s3cret" not in repr(recorder) and "user:1" not in repr(recorder)
    assert all(s["parent_id"] == trace.get_id() for s, _ in spans)


def test_repeated_commands_record_their_own_db_and_keys(client, trace,
                                                        recorder):
    # A command's start info is made once and reused: never across
    # databases, argument counts or scripts with other key counts.
    tracing.enable()
    script = "return 1"
    other_db = redis.Redis(connection_pool=redis.ConnectionPool(
        **dict(client.connection_pool.connection_kwargs,
               db=client.connection_pool.connection_kwargs["db"] ^ 1)))
    for _ in range(2):
        client.get("a")
        other_db.get("a")
        client.delete("a", "b")
        client.eval(script, 1, "k")
        client.eval(script, 2, "k", "l")
    other_db.close()
    db = client.connection_pool.connection_kwargs["db"]
    seen = [(s["info"]["db"]["command"], s["info"]["db"]["keys"],
             s["info"]["db"]["db"]) for s, _ in recorder.spans("redis")]
    assert seen == [("GET", 1, db), ("GET", 1, db ^ 1), ("DEL", 2, db),
                    ("EVAL", 1, db), ("EVAL", 2, db)] * 2


def test_pipeline_is_one_span(client, trace, recorder):
    tracing.enable()
    with client.pipeline() as pipe:
        pipe.set("a", 1).incr("a").get("a")
        assert pipe.execute()[-1] == b"2"
    (start, stop), = recorder.spans("redis")
    assert start["info"]["db"]["command"] == "PIPELINE"
    assert start["info"]["db"]["commands"] == 3
    assert start["info"]["db"]["names"] == ["SET", "INCRBY", "GET"]


def test_per_client_and_global_counted_once(client, redis_url, trace,
                                            recorder):
    other = redis.Redis.from_url(redis_url)
    tracing.instrument_client(client)
    client.ping()
    other.ping()
    assert len(recorder.spans("redis")) == 1       # only the instrumented
    tracing.enable()
    client.get("x")
    assert len(recorder.spans("redis")) == 2       # not twice
    tracing.uninstrument_client(client)
    assert "execute_command" not in vars(client)
    other.close()


def test_disable_restores_classes(client, trace, recorder):
    original = redis.Redis.execute_command
    tracing.enable()
    assert redis.Redis.execute_command is not original
    tracing.disable()
    assert redis.Redis.execute_command is original
    client.ping()
    assert recorder == []


def test_error_closes_span():
    port = _free_port()
    down = redis.Redis(port=port, socket_connect_timeout=0.2)
    from stacktrail import profiler
    from stacktrail import notifier
    messages = []
    notifier.set(messages.append)
    tracing.enable()
    profiler.init("k")
    with pytest.raises(redis.ConnectionError):
        down.get("x")
    names = [m["name"] for m in messages]
    assert names == ["redis-start", "redis-stop"]
    assert "ConnectionError" in messages[1]["info"]["etype"]


def test_no_trace_nothing(client, recorder):
    tracing.enable()
    client.ping()
    assert recorder == []


def test_asyncio_client_and_pipeline(redis_url, recorder):
    from stacktrail import profiler

    tracing.enable()

    async def task(c, n):
        profiler.init("k")
        await c.set("k%d" % n, n)
        async with c.pipeline() as pipe:
            await pipe.get("k%d" % n).incr("k%d" % n).execute()
        return profiler.get().get_base_id()

    async def main():
        c = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await asyncio.gather(task(c, 1), task(c, 2))
        finally:
            await c.aclose()

    bases = asyncio.run(main())
    spans = recorder.spans("redis")
    assert len(spans) == 4
    for base in bases:
        mine = [s for s, _ in spans if s["base_id"] == base]
        assert [s["info"]["db"]["command"] for s in mine] == [
            "SET", "PIPELINE"]


def test_key_count():
    assert tracing.key_count(("DEL", "a", "b")) == 2
    assert tracing.key_count(("MSET", "a", 1, "b", 2)) == 2
    assert tracing.key_count(("EVAL", "script", 2, "a", "b", "x")) == 2
    assert tracing.key_count(("PING",)) == 0
    assert tracing.key_count(("HSET", "h", "f", "v")) == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
