"""A small local cloud for the client tests: Keystone, Swift, Nova, Cinder.

Just enough of each API for the real client libraries to run their real
code paths against it:

- Identity v3 (``/identity``): version discovery and ``POST
  /v3/auth/tokens`` (any password), answering a token whose catalog points
  at this process (object-store, compute, block-storage) and at the Zaqar
  server given on the command line (messaging).
- Object Storage (``/swift``): ``GET /info`` (capabilities: SLO with a
  1-byte minimum segment), account HEAD/GET, container HEAD/PUT/GET,
  object PUT/HEAD/GET (chunked bodies too), and the SLO manifest
  (``PUT ?multipart-manifest=put``), whose segments must exist.  This is
  what openstacksdk's large-object upload needs for its parallel path.
- Compute (``/compute``): versions, ``GET /v2.1/servers/detail`` and
  ``GET /v2.1/servers/<id>``, where a server is BUILD for its first two
  reads and ACTIVE afterwards (``wait_for_server`` polls).
- Block Storage (``/volume``): versions and
  ``GET /v3/<project>/volumes/detail``.

Each API is wrapped in ``stacktrail.web.WsgiMiddleware`` under a service
name of its own (keystone, swift, nova, cinder) and the process is traced
from a ``[profiler]`` section (``init_from_conf``) into the test's store,
so the tests read the server side of each request from the same trace.
Every request is also logged as one JSON line (method, path, service and
the trace headers it carried) to ``--log``.

Run: ``python cloud_stub.py --port 0 --store S --key K --zaqar URL --log F
--workdir D``; prints ``ready <port>`` once it listens.  Threaded: the
segments of a large object arrive in parallel.
"""

import argparse
import hashlib
import json
import os
import signal
import socketserver
import sys
import threading
import uuid
from urllib import parse
from wsgiref import simple_server

PROJECT = "stacktrail-test"
TOKEN = "st-stub-token"
TRACE_HEADERS = ("X-Trace-Info", "X-Trace-HMAC", "traceparent")


class Stub:
    """The state and the WSGI apps of the fake cloud."""

    def __init__(self, base_url, zaqar_url, log_path):
        self.base = base_url.rstrip("/")
        self.zaqar = zaqar_url
        self.log_path = log_path
        self.lock = threading.Lock()
        self.containers = {}      # name -> {object name: (headers, body)}
        self.server_reads = {}    # server id -> GETs so far

    # -- logging --
    def record(self, service, environ):
        entry = {"service": service,
                 "method": environ["REQUEST_METHOD"],
                 "path": environ.get("PATH_INFO", ""),
                 "query": environ.get("QUERY_STRING", "")}
        for name in TRACE_HEADERS:
            entry[name] = environ.get(
                "HTTP_" + name.upper().replace("-", "_"))
        line = json.dumps(entry) + "\n"
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(line)

    # -- keystone --
    def catalog(self):
        def entry(kind, name, url):
            return {"type": kind, "name": name, "id": uuid.uuid4().hex,
                    "endpoints": [{"id": uuid.uuid4().hex,
                                   "interface": interface,
                                   "region": "RegionOne",
                                   "region_id": "RegionOne", "url": url}
                                  for interface in ("public", "internal",
                                                    "admin")]}
        return [
            entry("identity", "keystone", self.base + "/identity"),
            entry("object-store", "swift",
                  "%s/swift/v1/AUTH_%s" % (self.base, PROJECT)),
            entry("compute", "nova", self.base + "/compute/v2.1"),
            entry("block-storage", "cinder",
                  "%s/volume/v3/%s" % (self.base, PROJECT)),
            entry("volumev3", "cinderv3",
                  "%s/volume/v3/%s" % (self.base, PROJECT)),
            entry("messaging", "zaqar", self.zaqar),
        ]

    def keystone(self, environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/")
        method = environ["REQUEST_METHOD"]
        v3 = {"id": "v3.14", "status": "stable",
              "updated": "2020-04-07T00:00:00Z",
              "links": [{"rel": "self",
                         "href": self.base + "/identity/v3/"}],
              "media-types": [{"base": "application/json",
                               "type": "application/"
                                       "vnd.openstack.identity-v3+json"}]}
        if path == "/identity" and method == "GET":
            return _json(start_response, "300 Multiple Choices",
                         {"versions": {"values": [v3]}})
        if path == "/identity/v3" and method == "GET":
            return _json(start_response, "200 OK", {"version": v3})
        if path == "/identity/v3/auth/tokens" and method in ("POST", "GET"):
            _body(environ)
            token = {"token": {
                "methods": ["password"],
                "expires_at": "2099-01-01T00:00:00.000000Z",
                "issued_at": "2024-01-01T00:00:00.000000Z",
                "user": {"id": "u-1", "name": "admin",
                         "domain": {"id": "default", "name": "Default"}},
                "project": {"id": PROJECT, "name": PROJECT,
                            "domain": {"id": "default", "name": "Default"}},
                "roles": [{"id": "r-1", "name": "admin"}],
                "catalog": self.catalog()}}
            status = "201 Created" if method == "POST" else "200 OK"
            return _json(start_response, status, token,
                         [("X-Subject-Token", TOKEN)])
        return _json(start_response, "404 Not Found", {"error": path})

    # -- swift --
    def swift(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        if path.rstrip("/") == "/swift/info":
            return _json(start_response, "200 OK", {
                "swift": {"version": "2.30.0", "max_file_size": 5368709122},
                "slo": {"min_segment_size": 1,
                        "max_manifest_segments": 1000}})
        parts = path.split("/", 5)   # '', swift, v1, AUTH_x, c, obj
        if len(parts) < 4 or parts[2] != "v1":
            return _empty(start_response, "404 Not Found")
        container = parse.unquote(parts[4]) if len(parts) > 4 else ""
        obj = parse.unquote(parts[5]) if len(parts) > 5 else ""
        if not container:
            if method in ("HEAD", "GET"):
                return _json(start_response, "200 OK", [
                    {"name": c, "count": len(o), "bytes": 0}
                    for c, o in sorted(self.containers.items())])
            return _empty(start_response, "405 Method Not Allowed")
        with self.lock:
            objects = self.containers.get(container)
        if not obj:
            if method == "PUT":
                _body(environ)
                with self.lock:
                    self.containers.setdefault(container, {})
                return _empty(start_response, "201 Created")
            if objects is None:
                return _empty(start_response, "404 Not Found")
            if method == "HEAD":
                return _empty(start_response, "204 No Content",
                              [("X-Container-Object-Count",
                                str(len(objects)))])
            if method == "GET":
                return _json(start_response, "200 OK", [
                    {"name": n, "bytes": len(b)}
                    for n, (_, b) in sorted(objects.items())])
            return _empty(start_response, "405 Method Not Allowed")
        if objects is None:
            _body(environ)
            return _empty(start_response, "404 Not Found")
        if method == "PUT":
            return self.put_object(environ, start_response, objects, obj)
        with self.lock:
            stored = objects.get(obj)
        if stored is None:
            return _empty(start_response, "404 Not Found")
        headers, body = stored
        if method == "HEAD":
            return _empty(start_response, "200 OK", headers + [
                ("Content-Length", str(len(body)))])
        if method == "GET":
            start_response("200 OK", headers + [
                ("Content-Length", str(len(body)))])
            return [body]
        return _empty(start_response, "405 Method Not Allowed")

    def put_object(self, environ, start_response, objects, name):
        body = _body(environ)
        query = parse.parse_qs(environ.get("QUERY_STRING", ""))
        meta = [(key[5:].replace("_", "-").title(), value)
                for key, value in environ.items()
                if key.startswith("HTTP_X_OBJECT_META_")]
        if query.get("multipart-manifest") == ["put"]:
            try:
                manifest = json.loads(body)
                missing = [s["path"] for s in manifest
                           if self.lookup(s["path"]) is None]
            except (ValueError, KeyError, TypeError):
                return _empty(start_response, "400 Bad Request")
            if missing:
                return _json(start_response, "400 Bad Request",
                             {"missing": missing})
            body = b"".join(self.lookup(s["path"])[1] for s in manifest)
            meta.append(("X-Static-Large-Object", "True"))
        etag = hashlib.md5(body).hexdigest()
        with self.lock:
            objects[name] = (meta + [("Etag", etag)], body)
        return _empty(start_response, "201 Created", [("Etag", etag)])

    def lookup(self, path):
        container, _, obj = path.lstrip("/").partition("/")
        with self.lock:
            return self.containers.get(container, {}).get(obj)

    # -- nova --
    def nova(self, environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/")
        version = {"id": "v2.1", "status": "CURRENT", "version": "2.96",
                   "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                   "links": [{"rel": "self",
                              "href": self.base + "/compute/v2.1/"}]}
        if path == "/compute":
            return _json(start_response, "200 OK", {"versions": [version]})
        if path == "/compute/v2.1":
            return _json(start_response, "200 OK", {"version": version})
        if path == "/compute/v2.1/servers/detail":
            return _json(start_response, "200 OK", {"servers": []})
        if path.startswith("/compute/v2.1/servers/"):
            server = path.rsplit("/", 1)[1]
            with self.lock:
                reads = self.server_reads[server] = \
                    self.server_reads.get(server, 0) + 1
            return _json(start_response, "200 OK", {"server": {
                "id": server, "name": server,
                "status": "BUILD" if reads <= 2 else "ACTIVE"}})
        return _json(start_response, "404 Not Found", {"error": path})

    # -- cinder --
    def cinder(self, environ, start_response):
        path = environ.get("PATH_INFO", "").rstrip("/")
        version = {"id": "v3.0", "status": "CURRENT", "version": "3.70",
                   "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
                   "links": [{"rel": "self",
                              "href": self.base + "/volume/v3/"}]}
        if path == "/volume":
            return _json(start_response, "300 Multiple Choices",
                         {"versions": [version]})
        if path.endswith("/volumes/detail"):
            return _json(start_response, "200 OK", {"volumes": []})
        if path.startswith("/volume/v3"):
            return _json(start_response, "200 OK", {"version": version})
        return _json(start_response, "404 Not Found", {"error": path})


def _json(start_response, status, data, headers=()):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))]
                   + list(headers))
    return [body]


def _empty(start_response, status, headers=()):
    headers = list(headers)
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers.append(("Content-Length", "0"))
    start_response(status, headers)
    return [b""]


def _body(environ):
    """The request body, also when it came chunked (wsgiref passes the
    raw stream)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked":
        return b""
    chunks = []
    while True:
        size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
        if not size:
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunks.append(stream.read(size))
        stream.readline()


def application(stub, traced):
    """Dispatch by path prefix to each API, each traced as its service."""
    routes = [("/identity", traced(stub.keystone, "keystone")),
              ("/swift", traced(stub.swift, "swift")),
              ("/compute", traced(stub.nova, "nova")),
              ("/volume", traced(stub.cinder, "cinder"))]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, api in routes:
            if path == prefix or path.startswith(prefix + "/"):
                stub.record(api.service, environ)
                return api(environ, start_response)
        return _json(start_response, "404 Not Found", {"error": path})
    return app


class _Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _configure(workdir, store, key):
    from oslo_config import cfg
    from stacktrail import initializer
    path = os.path.join(workdir, "cloud-stub.conf")
    with open(path, "w") as f:
        f.write("[profiler]\nenabled = true\nhmac_keys = %s\n"
                "connection_string = %s\ntrace_requests = false\n"
                "trace_rpc = false\n" % (key, store))
    conf = cfg.ConfigOpts()
    conf(["--config-file", path], project="cloudstub")
    initializer.init_from_conf(conf, None, "cloudstub", "cloud-stub",
                               "stub-host")


def main(argv=None):
    parser = argparse.ArgumentParser()
    for name in ("--store", "--key", "--zaqar", "--log", "--workdir"):
        parser.add_argument(name, required=name != "--zaqar",
                            default="http://127.0.0.1:9/")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from stacktrail import web
    _configure(args.workdir, args.store, args.key)

    def traced(api, service):
        return web.WsgiMiddleware(api, hmac_keys=args.key, enabled=True,
                                  service=service)

    server = _Server(("127.0.0.1", args.port), _Quiet)
    port = server.server_address[1]
    stub = Stub("http://127.0.0.1:%d" % port, args.zaqar, args.log)
    server.set_app(application(stub, traced))
    # SIGTERM ends it like Ctrl-C: the finally below flushes the points.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("ready %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        from stacktrail import notifier
        notifier.get().close(5)


if __name__ == "__main__":
    sys.exit(main())
