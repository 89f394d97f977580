"""The README demo: one traced request through two WSGI services.

``api-a`` answers GET /orders by calling ``api-b`` twice over HTTP with
``requests``; ``api-b`` does some "database" work.  Each service is a
separate process configured only through its ``[profiler]`` options
(``trace_requests`` makes every outgoing call a span that carries the
trace) and writes to the embedded default store (SQLite).  The client signs
the request with the demo's HMAC key, and the trace is then shown with
``stacktrail trace show``.
"""

import os
import secrets
import subprocess
import sys
import time
import wsgiref.simple_server

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.environ.get("STACKTRAIL_DEMO_DIR") or os.path.join(
    os.path.dirname(HERE), ".stacktrail-demo")
STORE = "sqlite:///" + os.path.join(STATE, "traces.db")


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def configure(service, key):
    from oslo_config import cfg
    from stacktrail import initializer
    conf = cfg.ConfigOpts()
    path = os.path.join(STATE, service + ".conf")
    with open(path, "w") as f:
        f.write("[profiler]\nenabled = true\nhmac_keys = %s\n"
                "connection_string = %s\n"
                "trace_requests = true\n"
                "trace_rpc = false\n" % (key, STORE))  # no RPC here
    conf(["--config-file", path], project="demo")
    initializer.init_from_conf(conf, None, "demo", service, "demo-host")


def api_b(environ, start_response):
    from stacktrail import profiler
    statement = {"db": {"statement": "SELECT * FROM items"}}
    with profiler.Trace("db", info=statement):
        time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"items": [1, 2, 3]}']


def api_a(environ, start_response):
    import requests
    from stacktrail import profiler
    port_b = os.environ["DEMO_PORT_B"]
    for path in ("/items", "/items?page=2"):
        url = "http://127.0.0.1:%s%s" % (port_b, path)
        requests.get(url).raise_for_status()
    with profiler.Trace("compute"):
        time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"orders": []}']


def serve(service, port, key):
    from stacktrail import web
    configure(service, key)
    app = web.WsgiMiddleware(api_a if service == "api-a" else api_b,
                             hmac_keys=key, enabled=True)
    server = wsgiref.simple_server.make_server("127.0.0.1", port, app,
                                               handler_class=QuietHandler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def step(text):
    print("demo: " + text, file=sys.stderr, flush=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(service, port, key, env):
    proc = subprocess.Popen([sys.executable, __file__, "serve", service,
                             str(port), key], stdout=subprocess.PIPE,
                            env=env, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("demo: %s did not start" % service)
    return proc


def traced_request(port_a, key):
    import requests
    from stacktrail import profiler
    prof = profiler.init(key)
    with profiler.Trace("client"):
        requests.get("http://127.0.0.1:%d/orders" % port_a).raise_for_status()
    return prof.get_base_id()


def main():
    import signal
    os.makedirs(STATE, exist_ok=True)
    key = secrets.token_hex(16)
    ports = {"api-a": free_port(), "api-b": free_port()}
    env = dict(os.environ, DEMO_PORT_B=str(ports["api-b"]))
    step("starting two traced WSGI services, api-a and api-b")
    procs = [start_service(name, port, key, env)
             for name, port in ports.items()]
    try:
        configure("client", key)
        step("sending one signed request to api-a")
        base_id = traced_request(ports["api-a"], key)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # clean exit flushes the buffer
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # never leave a server behind
                proc.kill()
                proc.wait()
    from stacktrail import notifier
    notifier.get().flush(5)
    step("reading the trace back with 'stacktrail trace show'")
    print("Trace %s through api-a and api-b, stored in %s\n"
          % (base_id, STORE))
    cli = os.path.join(os.path.dirname(sys.executable), "stacktrail")
    return subprocess.call([cli, "trace", "show", base_id,
                            "--connection-string", STORE])


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
