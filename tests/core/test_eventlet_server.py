"""The WSGI filter in an eventlet.wsgi server, as OpenStack APIs run it.

Concurrent requests are served by greenthreads of one OS thread; each must
get its own trace, complete and unmixed, written by the real-thread flusher.
Runs in a subprocess so this test process stays unpatched.
"""

import json
import subprocess
import sys
import textwrap

from tests.core.keys import K9

SERVER = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()
    import json, sys
    import eventlet.wsgi
    from stacktrail import notifier, profiler, web

    store = sys.argv[1]
    notifier.set(notifier.create("file://" + store, project="p",
                                 service="api"))

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/flush":   # untraced: the test is done
            start_response("200 OK", [])
            return [b"%d" % notifier.get().flush(5)]
        with profiler.Trace("db"):
            eventlet.sleep(0.02)   # yield to the other requests
        start_response("200 OK", [])
        return [b"ok"]

    sock = eventlet.listen(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    eventlet.wsgi.server(sock, web.WsgiMiddleware(app, hmac_keys=sys.argv[2],
                                                  enabled=True),
                         log_output=False)
''')


def _headers(base_id):
    from stacktrail.common import signing
    packed, mac = signing.pack({"base_id": base_id, "parent_id": base_id},
                               K9)
    return {"X-Trace-Info": packed, "X-Trace-HMAC": mac}


def test_concurrent_greenthread_requests_get_separate_traces(tmp_path):
    import concurrent.futures
    import urllib.request
    import uuid

    store = tmp_path / "traces.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(store), K9],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        bases = [str(uuid.uuid4()) for _ in range(8)]

        def call(base_id):
            request = urllib.request.Request(
                "http://127.0.0.1:%d/v2/queues" % port,
                headers=_headers(base_id))
            return urllib.request.urlopen(request, timeout=10).status
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(call, bases)) == [200] * 8
        flushed = urllib.request.urlopen(
            "http://127.0.0.1:%d/flush" % port, timeout=10).read()
        assert flushed == b"1"   # an untraced request; the store is written
    finally:
        proc.kill()
        proc.wait(10)
    messages = [json.loads(line) for line in store.read_text().splitlines()]
    by_trace = {}
    for message in messages:
        by_trace.setdefault(message["base_id"], []).append(message)
    assert sorted(by_trace) == sorted(bases)   # nothing for the untraced one
    for base_id, trace in by_trace.items():
        names = sorted(m["name"] for m in trace)
        assert names == ["db-start", "db-stop", "wsgi-start", "wsgi-stop"]
        wsgi = next(m for m in trace if m["name"] == "wsgi-start")
        db = next(m for m in trace if m["name"] == "db-start")
        assert wsgi["parent_id"] == base_id
        assert db["parent_id"] == wsgi["trace_id"]   # nested, not mixed
