"""``stacktrail agent status``: the running agent's counters as JSON.

Needs only the agent's config file: the status socket lives in its
``spool_dir``; when that cannot be reached and ``metrics_listen`` is set,
its ``/status`` page is tried.  Exit status 0 when the agent answered, 1
when it did not (the JSON then says ``"status": "down"`` and why).
"""

import json
import socket
import sys
import urllib.request

from stacktrail.agent import opts


def add_arguments(parser):
    parser.add_argument("--config-file", action="append", default=None,
                        help="the agent's config file (repeatable)")
    parser.add_argument("--spool-dir", default=None,
                        help="override [agent] spool_dir")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for the agent")


def _from_socket(path, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    return json.loads(b"".join(chunks))


def _from_http(listen, timeout):
    url = "http://%s/status" % listen.split("://")[-1]
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def fetch(conf_files, spool_dir=None, timeout=3.0):
    """The agent's status dict; raises OSError/ValueError when unreachable."""
    conf = opts.make_conf([], cli=False, config_files=conf_files or None)
    spool_dir = spool_dir or conf.agent.spool_dir
    try:
        return _from_socket(opts.status_socket_path(spool_dir), timeout)
    except (OSError, ValueError):
        if not conf.agent.metrics_listen:
            raise
    return _from_http(conf.agent.metrics_listen, timeout)


def run(args):
    try:
        result = fetch(args.config_file, args.spool_dir, args.timeout)
        code = 0
    except Exception as exc:
        result = {"status": "down", "error": "%s: %s"
                  % (type(exc).__name__, exc)}
        if isinstance(exc, PermissionError):
            result["error"] += (" (only the agent's user and the members "
                                "of its [agent] socket_group may ask)")
        code = 1
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return code


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="stacktrail agent status")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
