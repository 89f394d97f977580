"""``stacktrail-agent``: run the per-node trace agent in the foreground.

    stacktrail-agent --config-file /etc/stacktrail/agent.conf
    stacktrail-agent --agent-listen unix:///tmp/a.sock \
        --agent-connection_string redis://127.0.0.1:6379 \
        --agent-spool_dir /tmp/spool

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration
the agent refuses (the reason is printed on one line).
"""

import logging
import sys


def main(argv=None):
    from oslo_config import cfg

    from stacktrail.agent import opts
    from stacktrail.agent import service

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        conf = opts.make_conf(argv)
        # before any thread starts: they inherit it
        service.yield_cpu(conf.agent.nice)
        agent = service.Agent(conf)
    except (cfg.Error, service.ConfigError, ValueError) as exc:
        print("stacktrail-agent: %s" % exc, file=sys.stderr)
        return 2
    agent.install_signals()
    service.tune_gc()
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
