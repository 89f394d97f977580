"""The Zaqar harness (tests/services/zaqar.py) runs a real zaqar-server."""

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.services import zaqar


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _round_trip(server, queue):
    """Create a queue, POST one message, GET it back with echo."""
    client = server.client()
    assert client.create_queue(queue).status_code == 201
    posted = client.post_messages(queue, [{"body": {"queue": queue},
                                           "ttl": 300}])
    assert posted.status_code == 201, posted.text
    got = client.get_messages(queue, echo=True)
    assert got.status_code == 200, got.text
    assert [m["body"] for m in got.json()["messages"]] == [{"queue": queue}]
    # Without echo a client does not see its own messages.
    assert client.get_messages(queue, echo=False).json()["messages"] == []
    # Another client does.
    other = server.client()
    assert other.client_id != client.client_id
    assert len(other.get_messages(queue, echo=False).json()["messages"]) == 1


def test_store_uri_moves_the_redis_db_into_dbid():
    assert (zaqar.store_uri("redis://127.0.0.1:6379/7")
            == "redis://127.0.0.1:6379?dbid=7")
    assert (zaqar.store_uri("redis://h:1/2?socket_timeout=1")
            == "redis://h:1?socket_timeout=1&dbid=2")
    assert zaqar.store_uri("redis://h:1?dbid=3") == "redis://h:1?dbid=3"
    assert zaqar.store_uri("mongodb://h:1/db") == "mongodb://h:1/db"


def test_write_config(tmp_path):
    path = zaqar.write_config(
        tmp_path, "redis://127.0.0.1:6379/4",
        profiler={"enabled": True, "hmac_keys": "k"},
        **{"drivers:message_store:redis": {"reconnect_sleep": 0.5}})
    text = path.read_text()
    assert "auth_strategy = \n" in text
    assert "admin_mode = True" in text
    assert "message_store = redis" in text
    assert "management_store = sqlalchemy" in text
    assert f"uri = sqlite:///{tmp_path}/zaqar.sqlite" in text
    assert "uri = redis://127.0.0.1:6379?dbid=4" in text
    assert "reconnect_sleep = 0.5" in text
    assert "[profiler]\nenabled = True\nhmac_keys = k" in text
    with pytest.raises(ValueError):
        zaqar.write_config(tmp_path)  # neither a store nor pooling


def test_redis_and_sqlite(zaqar_env, tmp_path, redis_url, unique_name):
    with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert not _gone(server.pid)
        _round_trip(server, unique_name)
        # The message is in the fixture's db (Zaqar ignores the URL path).
        import redis
        with redis.Redis.from_url(redis_url) as r:
            assert r.exists(f"{server.project}.{unique_name}.messages")
        health = server.client().health()
        assert health.status_code == 200
        assert health.json()["storage_reachable"] is True
        # Headers can be added and override the defaults.
        no_project = server.client().get_messages(
            unique_name, headers={"X-Project-ID": ""})
        assert no_project.status_code == 400
        pid = server.pid
    assert _gone(pid)
    log = server.log_text()
    assert "Serving on host 127.0.0.1:%d" % server.port in log
    assert "POST /v2/queues/%s/messages" % unique_name in log
    assert server.log_path == tmp_path / "zaqar-server.log"


def test_mariadb_management_store(zaqar_env, tmp_path, redis_url, mysql_url,
                                  unique_name):
    with zaqar.zaqar_server(tmp_path, redis_url, mysql_url,
                            env=zaqar_env) as server:
        _round_trip(server, unique_name)
    # The queue was recorded in MariaDB (schema from Zaqar's migrations).
    import sqlalchemy as sa
    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM Queues")).scalars()
            assert list(names) == [unique_name]
            version = conn.execute(sa.text(
                "SELECT version_num FROM alembic_version")).scalar()
            assert version == "007"
    finally:
        engine.dispose()


def test_pooled_two_redis_pools(zaqar_env, tmp_path, redis_url,
                                second_redis_url, unique_name):
    import redis
    with zaqar.zaqar_server(tmp_path, pools=[redis_url, second_redis_url],
                            env=zaqar_env) as server:
        client = server.client()
        pools = client.request("GET", "/v2/pools", zaqar.ADMIN_HEADERS,
                               params={"detailed": "true"}).json()["pools"]
        assert sorted((p["name"], p["uri"]) for p in pools) == [
            ("pool0", zaqar.store_uri(redis_url)),
            ("pool1", zaqar.store_uri(second_redis_url))]
        # Unflavored queues go to a pool chosen by weight; this one works.
        _round_trip(server, unique_name)
        # A flavor pins a queue to pool1 (the second Redis db).
        assert client.create_flavor("f1", ["pool1"]).status_code == 201
        queue = unique_name + "f"
        assert client.create_queue(
            queue, {"_flavor": "f1"}).status_code == 201
        assert client.post_messages(
            queue, [{"body": "pinned"}]).status_code == 201
        got = client.get_messages(queue).json()["messages"]
        assert [m["body"] for m in got] == ["pinned"]
        key = f"{server.project}.{queue}.messages"
        with redis.Redis.from_url(second_redis_url) as r:
            assert r.exists(key)
        with redis.Redis.from_url(redis_url) as r:
            assert not r.exists(key)
        assert "register queue: project:%s queue:%s pool:pool1" % (
            server.project, queue) in server.log_text()


def test_mongodb_management_store(zaqar_env, tmp_path, redis_url, mongo_url,
                                  unique_name):
    # Zaqar's MongoDB *message* store does not run on nx-27017 (see
    # /tmp/zaqar_notes.md); its management store does.
    import pymongo
    try:
        with zaqar.zaqar_server(tmp_path, redis_url, mongo_url,
                                env=zaqar_env) as server:
            _round_trip(server, unique_name)
        client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        try:
            db = zaqar._mongo_database(mongo_url) + "_queues"
            assert client[db].queues.count_documents({}) == 1
        finally:
            client.close()
    finally:
        zaqar.drop_mongo_databases(mongo_url)


def test_with_the_stacktrail_overlay(zaqar_env, tmp_path, redis_url,
                                     stacktrail_overlay, unique_name):
    with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env,
                            overlay=stacktrail_overlay) as server:
        _round_trip(server, unique_name)
    # The server's environment finds this clone's package in the overlay.
    out = subprocess.run(
        [zaqar_env.python, "-c",
         "import stacktrail; print(stacktrail.__file__)"],
        env=zaqar_env.environ(overlay=stacktrail_overlay), cwd=tmp_path,
        capture_output=True, text=True, check=True).stdout
    assert out.startswith(str(stacktrail_overlay))


def test_trace_headers_reach_osprofiler_in_zaqar(zaqar_env, tmp_path,
                                                 redis_url, second_redis_url,
                                                 unique_name):
    # Zaqar as published traces with its own osprofiler: a baseline, and
    # proof that headers= reaches the server.
    import json
    import redis
    from osprofiler import profiler, web
    section = zaqar.profiler_section(second_redis_url,
                                     hmac_keys="harness-key")
    with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env,
                            profiler=section) as server:
        client = server.client()
        assert client.create_queue(unique_name).status_code == 201
        profiler.init("harness-key")
        try:
            headers = web.get_trace_id_headers()
            base_id = profiler.get().get_base_id()
        finally:
            profiler.clean()
        assert client.post_messages(unique_name, [{"body": 1}],
                                    headers=headers).status_code == 201
    with redis.Redis.from_url(second_redis_url) as r:
        names = {json.loads(item)["name"]
                 for item in r.lrange("osprofiler_opt:" + base_id, 0, -1)}
    assert {"wsgi-start", "redis_message_controller-stop"} <= names


def test_failed_start_reports_the_log(zaqar_env, tmp_path):
    started = time.monotonic()
    with pytest.raises(zaqar.ZaqarStartError) as info:
        with zaqar.zaqar_server(tmp_path, "redis://127.0.0.1:1/1",
                                env=zaqar_env,
                                drivers={"transport": "carrier-pigeon"}):
            pass
    assert time.monotonic() - started < 30  # not the start timeout
    assert "exited with 1" in str(info.value)
    assert "found 'carrier-pigeon'" in str(info.value)


def test_port_taken_between_choice_and_bind_is_retried(
        zaqar_env, tmp_path, redis_url, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    real = zaqar.free_port
    monkeypatch.setattr(zaqar, "free_port",
                        lambda: ports.pop() if ports else real())
    try:
        with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env) as server:
            assert server.port != taken.getsockname()[1]
            assert server.client().ping().status_code == 204
    finally:
        taken.close()
    assert "Address already in use" in server.log_text(whole=True)


def test_no_leftover_process_when_the_test_fails(zaqar_env, tmp_path,
                                                 redis_url):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):
        with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env) as server:
            pid = server.pid
            server.signal(signal.SIGSTOP)  # a hung server ignores SIGTERM
            raise RuntimeError("boom")
    assert _gone(pid)
    assert time.monotonic() - started < zaqar.STOP_GRACE  # no SIGKILL wait
    assert server.stop() == server.returncode  # idempotent


def test_sighup_ends_zaqar_server(zaqar_env, tmp_path, redis_url):
    # zaqar-server installs no SIGHUP handler: HUP ends it (no reload).
    with zaqar.zaqar_server(tmp_path, redis_url, env=zaqar_env) as server:
        server.signal(signal.SIGHUP)
        server.proc.wait(10)
        assert server.returncode == -signal.SIGHUP
    assert server.stop() == -signal.SIGHUP
