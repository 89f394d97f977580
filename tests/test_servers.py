"""The test infrastructure itself: fallback servers and isolated fixtures."""

import re

import pytest

from tests import servers


def _start_or_skip(name):
    try:
        return servers.ensure(name)
    except servers.ServerUnavailable as exc:
        if "not installed" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.mark.parametrize("name", ["redis", "postgres", "mysql", "mongo",
                                  "rabbit"])
def test_fallback_starts_throwaway_server(name, monkeypatch):
    # Point the "standard port" at a dead one: ensure() must start its own.
    dead = servers.free_port()
    monkeypatch.setenv(f"STACKTRAIL_TEST_{name.upper()}_PORT", str(dead))
    server = _start_or_skip(name)
    try:
        assert server.owned and server.port != dead
        assert servers.PROBES[name](server.port)
        workdir = server.workdir
        assert workdir.is_dir()
    finally:
        server.stop()
    assert not servers.port_open(server.port)
    assert not workdir.exists()
    server.stop()  # idempotent


def test_throwaway_redis_gives_isolated_dbs(monkeypatch):
    import redis
    monkeypatch.setenv("STACKTRAIL_TEST_REDIS_PORT", str(servers.free_port()))
    server = servers.ensure("redis")
    try:
        with servers.redis_db(server) as db1, servers.redis_db(server) as db2:
            assert db1 != db2 and 0 not in (db1, db2)
            one = redis.Redis(server.host, server.port, db=db1)
            two = redis.Redis(server.host, server.port, db=db2)
            one.set("k", "v")
            assert two.get("k") is None
            one.close()
            two.close()
    finally:
        server.stop()


def test_reuses_server_on_standard_port(redis_server):
    host, port = redis_server
    if port != servers.configured_port("redis"):
        pytest.skip("no Redis on the standard port: a throwaway one is used")
    server = servers.ensure("redis")
    assert not server.owned and server.port == port
    server.stop()  # must not touch a server we did not start
    assert servers.redis_ready(port)


def test_unavailable_when_down_and_cannot_start(monkeypatch):
    def broken():
        raise OSError("no binary")
    monkeypatch.setenv("STACKTRAIL_TEST_REDIS_PORT", str(servers.free_port()))
    monkeypatch.setitem(servers.STARTERS, "redis", broken)
    with pytest.raises(servers.ServerUnavailable, match="no binary"):
        servers.ensure("redis")


def test_redis_url_owns_a_flushed_db(redis_url, redis_server):
    import redis
    match = re.fullmatch(r"redis://([\d.]+):(\d+)/(\d+)", redis_url)
    assert match and (match[1], int(match[2])) == redis_server
    assert 1 <= int(match[3]) <= 15
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("stacktrail-test", "x")  # flushed before the next owner
    client.close()


@pytest.mark.parametrize("fixture", ["postgres_url", "mysql_url"])
def test_sql_url_is_a_fresh_usable_database(request, fixture):
    import sqlalchemy as sa
    url = request.getfixturevalue(fixture)
    assert re.search(r"/st_test_[0-9a-f]{8}$", url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        assert not sa.inspect(conn).get_table_names()
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 1
    engine.dispose()


def test_postgres_database_is_dropped(_postgres):
    import psycopg2
    with servers.postgres_database(_postgres) as name:
        # A leaked connection must not stop the drop.
        leaked = psycopg2.connect(host=_postgres.host, port=_postgres.port,
                                  user="postgres", dbname=name)
    conn = psycopg2.connect(host=_postgres.host, port=_postgres.port,
                            user="postgres", dbname="postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert cur.fetchone() is None
    conn.close()
    leaked.close()


def test_mysql_database_is_dropped(_mysql):
    import pymysql
    with servers.mysql_database(_mysql) as name:
        # A leaked connection holding a metadata lock must not block DROP.
        leaked = pymysql.connect(host=_mysql.host, port=_mysql.port,
                                 user="root", database=name)
        with leaked.cursor() as cur:
            cur.execute("CREATE TABLE t (x int)")
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM t")
    conn = pymysql.connect(host=_mysql.host, port=_mysql.port, user="root")
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (name,))
        assert cur.fetchone() is None
    conn.close()


def test_mongo_url_is_a_fresh_usable_database(mongo_url):
    import pymongo
    match = re.fullmatch(r"mongodb://([\d.]+):(\d+)/(st_test_[0-9a-f]{8})",
                         mongo_url)
    assert match
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    db = client.get_default_database()
    assert db.name == match[3]
    assert db.list_collection_names() == []
    db.points.insert_one({"a": 1})
    assert db.points.find_one({}, {"_id": 0}) == {"a": 1}
    client.close()


def test_mongo_database_is_dropped(_mongo):
    import pymongo
    client = pymongo.MongoClient(_mongo.host, _mongo.port,
                                 serverSelectionTimeoutMS=5000)
    with servers.mongo_database(_mongo) as name:
        client[name].c.insert_one({"a": 1})
        assert name in client.list_database_names()
    assert name not in client.list_database_names()
    client.close()


def test_rabbit_url_carries_messages(rabbit_url, unique_name):
    import kombu
    assert re.fullmatch(r"rabbit://guest:guest@[\d.]+:\d+/", rabbit_url)
    amqp_url = rabbit_url.replace("rabbit://", "amqp://", 1)
    with kombu.Connection(amqp_url, connect_timeout=5) as conn:
        queue = conn.SimpleQueue(unique_name, queue_opts={"auto_delete": True})
        queue.put({"hello": unique_name})
        message = queue.get(timeout=5)
        assert message.payload == {"hello": unique_name}
        message.ack()
        queue.close()


def test_unique_name_is_short_and_unique(unique_name):
    assert re.fullmatch(r"st[0-9a-f]{10}", unique_name)
    assert unique_name != servers.new_name()
