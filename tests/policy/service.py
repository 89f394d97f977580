"""A traced service process for the policy tests: activates the runtime
from a [profiler] config file, then every 0.1 s offers 200 untraced
requests to the sampling decision and prints one JSON line: the live
sampling rate and how many of the 200 were traced.

    python -m tests.policy.service CONFIG_FILE SERVICE_NAME
"""

import json
import sys
import time

from oslo_config import cfg

from stacktrail import profiler
from stacktrail import runtime
from stacktrail.common import propagation
from stacktrail.common import settings


def traced(n=200):
    count = 0
    for _ in range(n):
        if propagation.start_from_headers(lambda name: None) is not None:
            count += 1
        profiler.clean()
    return count


def main(config_file, service):
    conf = cfg.ConfigOpts()
    conf(["--config-file", config_file], project="nova")
    runtime.activate(conf, project="nova", service=service)
    while True:
        print(json.dumps({"rate": settings.current.sampling_rate,
                          "traced": traced()}), flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main(*sys.argv[1:])
