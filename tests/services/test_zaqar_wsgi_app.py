"""Zaqar's WSGI application (uwsgi, gunicorn, mod_wsgi) traced by a drop-in.

``zaqar.transport.wsgi.app:application`` takes no command line: it reads
the default locations (``~/.zaqar/zaqar.conf``, ``/etc/zaqar/zaqar.conf``
and the ``zaqar.conf.d/`` directories beside them).  Copying the shipped
``etc/zaqar/stacktrail.conf`` into ``zaqar.conf.d/`` is the whole change:
here HOME is a temporary directory holding ``.zaqar/zaqar.conf`` (stores,
trace store, HMAC key) and ``.zaqar/zaqar.conf.d/stacktrail.conf``, and
wsgiref hosts the application as a WSGI container would.
"""

import shutil
import time

import pytest

from tests.services import tracing
from tests.services import zaqar

FRAGMENT = zaqar.FRAGMENT


@pytest.fixture
def app_server(tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    """app_server(fragment=True) -> (server, store): the application in
    wsgiref, configured from ``<home>/.zaqar``, with the fragment dropped
    into ``zaqar.conf.d/`` or not."""
    started = []

    def start(fragment=True):
        home = tmp_path / ("home%d" % len(started))
        conf_dir = home / ".zaqar"
        store = "file://%s" % (home / "traces.jsonl")
        management = "sqlite:///%s" % (conf_dir / "zaqar.sqlite")
        zaqar.write_config(conf_dir, redis_url, management, profiler={
            "connection_string": store, "hmac_keys": tracing.KEY})
        zaqar.create_schema(management, env=zaqar_env)
        (conf_dir / "zaqar.conf.d").mkdir()
        if fragment:
            shutil.copy(FRAGMENT,
                        conf_dir / "zaqar.conf.d" / "stacktrail.conf")
        server = zaqar.WsgiAppServer(home, env=zaqar_env,
                                     overlay=stacktrail_overlay)
        started.append(server)
        return server.start(), store

    yield start
    for server in started:
        server.stop()


def signed_post(server):
    """Create a queue, then POST a message with signed trace headers."""
    client = server.client()
    assert client.create_queue("q1").status_code == 201
    base_id, headers = tracing.signed_headers()
    posted = client.post_messages("q1", [{"body": {"n": 1}, "ttl": 300}],
                                  headers=headers)
    assert posted.status_code == 201, posted.text
    return base_id, client


def test_conf_d_fragment_traces_the_wsgi_application(app_server):
    server, store = app_server()
    base_id, client = signed_post(server)
    # An unsigned request is served and not traced.
    assert client.get_messages("q1").status_code == 200

    found = tracing.wait_for_messages(store, base_id)
    assert tracing.unclosed(found) == []
    (post,) = tracing.show(base_id, store)
    assert post.name == "wsgi"
    assert post.start["request"]["method"] == "POST"
    assert post.start["request"]["path"] == "/v2/queues/q1/messages"
    assert post.stop["response"]["status"] == 201
    # wsgi -> controller -> redis, and wsgi -> controller -> driver -> db
    children = {c.name: c for c in post.children}
    message = children["redis_message_controller"]
    assert "redis" in {c.name for c in message.children}
    queue = children["sqlalchemy_queue_controller"]
    assert "db" in {s.name for s in queue.walk()}
    assert {s.service for s in post.walk()} == {"Zaqar-server"}
    assert "Traceback" not in server.log_text()


def test_without_the_fragment_nothing_is_traced(app_server, tmp_path):
    server, store = app_server(fragment=False)
    signed_post(server)
    time.sleep(1.0)
    assert not (tmp_path / "home0" / "traces.jsonl").exists()
