"""MongoDB command tracing against the nx-27017 wire server."""

import pymongo
import pytest

from stacktrail import profiler
from stacktrail.integrations import pymongo as tracing


def _client(url, **kwargs):
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=3000, **kwargs)


def _db(client, url):
    return client[url.rsplit("/", 1)[1]]


def test_commands_recorded_without_documents(mongo_url, trace, recorder):
    tracing.enable()
    client = _client(mongo_url)
    try:
        db = _db(client, mongo_url)
        db.items.insert_one({"name": "x", "password": "hunter2"})
        assert db.items.find_one({"name": "x"})["password"] == "hunter2"
    finally:
        client.close()
    spans = recorder.spans("mongodb")
    commands = [(s["info"]["db"]["command"], s["info"]["db"].get(
        "collection")) for s, _ in spans]
    assert ("insert", "items") in commands and ("find", "items") in commands
    assert all(s["info"]["db"]["database"] == db.name for s, _ in spans
               if s["info"]["db"]["command"] in ("insert", "find"))
    assert all("duration_us" in stop["info"]["db"] for _, stop in spans)
    assert "hunter2" not in repr(recorder)
    assert all(s["parent_id"] == trace.get_id() for s, _ in spans)
    assert not recorder.unclosed()


def test_failure_recorded(mongo_url, trace, recorder):
    client = _client(mongo_url, event_listeners=[tracing.listener()])
    try:
        db = _db(client, mongo_url)
        with pytest.raises(pymongo.errors.OperationFailure):
            db.command({"count": "items", "query": 5})
    finally:
        client.close()
    (start, stop), = [s for s in recorder.spans("mongodb")
                      if s[0]["info"]["db"]["command"] == "count"]
    assert stop["info"]["etype"]
    assert stop["info"]["message"]


def test_disable_makes_global_listener_inert(mongo_url, trace, recorder):
    tracing.enable()
    client = _client(mongo_url)
    try:
        tracing.disable()
        _db(client, mongo_url).items.find_one({})
        assert recorder == []
        tracing.enable()
        _db(client, mongo_url).items.find_one({})
        assert len(recorder.spans("mongodb")) == 1
    finally:
        client.close()


def test_global_and_per_client_counted_once(mongo_url, trace, recorder):
    tracing.enable()
    client = _client(mongo_url, event_listeners=[tracing.listener()])
    try:
        _db(client, mongo_url).items.find_one({})
    finally:
        client.close()
    assert len([s for s in recorder.spans("mongodb")
                if s[0]["info"]["db"]["command"] == "find"]) == 1


def test_no_trace_nothing(mongo_url, recorder):
    client = _client(mongo_url, event_listeners=[tracing.listener()])
    try:
        _db(client, mongo_url).items.find_one({})
    finally:
        client.close()
    assert recorder == []


def test_server_down_closes_span(recorder):
    client = pymongo.MongoClient("mongodb://127.0.0.1:1/",
                                 serverSelectionTimeoutMS=200,
                                 event_listeners=[tracing.listener()])
    profiler.init("k")
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        client.db.items.find_one({})
    client.close()
    assert not recorder.unclosed()
